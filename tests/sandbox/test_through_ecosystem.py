"""The sandbox wired end to end: run_python (Hopper) and browse (Marco) as users' slash commands through the
gateway, hostile programs while /healthz keeps answering, and a second boot that loads the cached module."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mads.host import Host
from tests.support.ecosystem import Running
from tests.support.sandbox_ecosystem import EventWatch, sandbox_ecosystem, sandbox_settings, while_serving
from tests.support.wasm_cache import CompiledCache
from tests.support.web_pages import Pages, serve_pages

HOSTILE: dict[str, tuple[dict[str, Any], str | None]] = {
    "infinite loop": ({"code": "while True:\n    pass", "limits": {"timeout_s": 1}}, "timeout"),
    "memory bomb": (
        {"code": "hoard = []\nwhile True:\n    hoard.append(bytearray(1 << 20))", "limits": {"memory_bytes": 64 << 20}},
        "memory",
    ),
    "output flood": ({"code": "while True:\n    print('x' * 10_000)"}, "output"),
    "reading /etc/passwd": ({"code": "print(open('/etc/passwd').read())"}, None),
}


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    async with serve_pages() as served:
        yield served


@pytest.fixture
async def eco(tmp_path: Path, compiled_cache: CompiledCache) -> AsyncIterator[Running]:
    settings = sandbox_settings(tmp_path / "data")  # core MADs + marco + hopper, 127.0.0.1 allowlisted
    async with sandbox_ecosystem(tmp_path / "data", compiled_cache, settings) as running:
        yield running


def command(mad: str, tool: str, arguments: dict[str, Any]) -> str:
    return f"/{mad} {tool} {json.dumps(arguments)}"


async def test_run_python_and_browse_as_user_commands_through_the_gateway(eco: Running, pages: Pages) -> None:
    cid = await eco.new_conversation("sandbox")
    ran = await eco.say(cid, '/hopper run_python {"code": "print(6*7)"}')
    assert ran["reply"]["error"] is None, ran
    assert ran["participants"] == ["grace", "hopper"]
    [result] = ran["reply"]["data"]
    assert result["stdout"] == "42\n" and result["exit_code"] == 0 and result["limit_hit"] is None
    assert "42" in ran["reply"]["text"]

    read = await eco.say(cid, command("marco", "browse", {"url": pages.url("/page"), "selector": ".note"}))
    assert read["reply"]["error"] is None, read
    [page] = read["reply"]["data"]
    assert page["title"] == "Local page" and page["selected"][0]["text"] == "first note"
    assert pages.hits["/page"] == 1

    refused = await eco.say(cid, command("marco", "browse", {"url": "http://169.254.169.254/latest/meta-data/"}))
    assert refused["reply"]["error"]["code"] == "url_refused"


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_programs_while_the_gateway_keeps_serving(eco: Running, name: str) -> None:
    arguments, limit = HOSTILE[name]
    cid = await eco.new_conversation(name)
    limits = await EventWatch.on(eco.host.bus, "events.sandbox_limit")
    sandbox = eco.host.sandbox.sandbox
    try:
        body = await while_serving(
            eco, eco.say(cid, command("hopper", "run_python", arguments)), busy=lambda: sandbox.active_runs > 0
        )
        [result] = body["reply"]["data"]
        assert result["limit_hit"] == limit, result
        if limit is not None:
            event = await limits.wait_for(lambda e: e["limit"] == limit and e["conversation_id"] == cid)
            assert event["mad"] == "hopper" and event["violation"] is False
    finally:
        await limits.close()
    if name == "reading /etc/passwd":
        assert result["exit_code"] == 1 and "FileNotFoundError" in result["stderr"] and "root:" not in result["stdout"]
    if name == "output flood":
        assert result["stdout_truncated"] is True
    status, health = await eco.get("/healthz")
    assert status == 200 and {"hopper", "marco", "grace"} <= set(health["mads_alive"])


async def test_a_second_start_loads_the_cached_module(tmp_path: Path, compiled_cache: CompiledCache) -> None:
    artifact = compiled_cache.artifact
    before = artifact.stat()
    for n in range(2):
        data_dir = tmp_path / f"data-{n}"  # a second data directory on the same machine
        settings = sandbox_settings(data_dir, mads=["hopper"], sandbox={"cache_dir": str(compiled_cache.path)})
        host = Host(settings)
        await host.start()
        try:
            await host.sandbox.ready()
            assert host.sandbox.status()["compiled_from_cache"] is True
            assert host.sandbox.progress == []  # no "compiling ..." line
        finally:
            await host.stop()
        assert not (data_dir / "cache").exists()
    after = artifact.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # never rewritten


async def test_numpy_and_pandas_through_the_gateway(eco: Running) -> None:
    cid = await eco.new_conversation("science")
    code = (
        "import numpy as np, pandas as pd\n"
        "df = pd.DataFrame({'g': ['a', 'b', 'a'], 'v': np.arange(3) * 2.5})\n"
        "print(df.groupby('g').v.sum().to_dict())"
    )
    ran = await eco.say(cid, command("hopper", "run_python", {"code": code, "limits": {"timeout_s": 10}}))
    assert ran["reply"]["error"] is None, ran
    [result] = ran["reply"]["data"]
    assert result["exit_code"] == 0, result
    assert result["stdout"] == "{'a': 5.0, 'b': 2.5}\n"
