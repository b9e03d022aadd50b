"""The sandbox wired end to end: run_python (Hopper) and browse (Marco) as users' slash commands through the
gateway, hostile programs while /healthz keeps answering, and a second boot that loads the cached module."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mads.host import Host
from sandbox import PYTHON_WASM_SHA256
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


FIRST_START = """
import asyncio, json, logging, sys
from pathlib import Path
from tests.support.ecosystem import CORE_MADS, running
from tests.support.sandbox_ecosystem import sandbox_settings

records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelno, record.name, record.getMessage()])

async def main():
    for name in ("sandbox", "mads.core.sandbox_capability"):
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).addHandler(Keep())
    settings = sandbox_settings(Path(sys.argv[1]), mads=[*CORE_MADS, "hopper"], sandbox={"cache_dir": sys.argv[2]})
    command = '/hopper run_python {"code": "print(1)"}'
    async with running(settings) as eco:
        cid = await eco.new_conversation("first start")
        early = await eco.say(cid, command)
        await eco.host.sandbox.ready()
        late = await eco.say(cid, command)
        status = eco.host.sandbox.status()
    print(json.dumps({"early": early["reply"], "late": late["reply"], "status": status, "logs": records}))

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.timeout(900)  # a whole compile: ~95 s of CPU, more on a busy machine
def test_first_start_on_a_machine_through_the_gateway(tmp_path: Path) -> None:
    """The one test that pays for a second compile, in a fresh process (a process keeps modules it compiled) with
    an empty machine cache: while it compiles, /hopper run_python answers 'sandbox still starting' (typed,
    retryable); the log says once, at WARNING, what happens and how long it takes, and once when it is done."""
    cache = tmp_path / "machine-cache" / "mad-ecosystem" / "wasm"
    done = subprocess.run(
        [sys.executable, "-c", FIRST_START, str(tmp_path / "data"), str(cache)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=880,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    error = report["early"]["error"]
    assert error is not None and error["code"] == "sandbox_starting" and error["retryable"] is True, report["early"]
    assert "sandbox still starting" in error["message"]
    assert report["late"]["error"] is None and report["late"]["data"][0]["stdout"] == "1\n", report["late"]
    assert report["status"]["compiled_from_cache"] is False
    lines = [(level, message) for level, name, message in report["logs"] if "compil" in message]
    assert [level for level, _ in lines] == [logging.WARNING, logging.WARNING], lines
    (_, before), (_, after) = lines
    assert before.startswith("sandbox: first start on this machine: compiling the Python runtime")
    assert "s of CPU" in before
    assert after.startswith("sandbox: compiled the Python runtime in ")
    assert [p.name for p in cache.iterdir()] == [f"{PYTHON_WASM_SHA256[:32]}-wasmtime49.0.0-fuel.cwasm"]
