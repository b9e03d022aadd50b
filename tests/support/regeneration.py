"""Regeneration against a running ecosystem: a clone of the source, the ecosystem started *from that clone* as
a real ``python ecosystem.py`` process, and the scripted change that gives McNamara a ``ping`` tool.

The ecosystem must run from the tree an approval merges into (the clone), so that reloading McNamara
imports the merged code: the child is started as ``python <clone>/ecosystem.py`` with the clone as its
working directory, which puts the clone first on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cli import child_env
from tests.support.llm_server import Reply

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
URL_LINE = re.compile(r"running at (?P<url>http://127\.0\.0\.1:\d+/)")
LOGIN_LINE = re.compile(r"^First run: sign in as admin \(operator\) at (?P<link>http://\S+/login#code=\S+) \(one-time")
API_TOKEN = re.compile(r"^API token for admin .*: (?P<token>mad_\S+)$")
PROCESS_MADS = ["rogers", "fiedler", "grace", "mcnamara"]

PING_TOOL = """    @tool("Answer pong: McNamara is up and listening.")
    async def ping(self, args: NoArgs) -> dict[str, str]:
        return {"answer": "pong"}

"""
PING_TEST = '''"""McNamara answers ping (added by a regeneration)."""

from mads.core.tools import declared_tools
from mads.mcnamara import McNamara


def test_ping_is_a_tool() -> None:
    assert "ping" in declared_tools(McNamara)
'''
PING_TESTS = ["tests/mads/mcnamara/test_ping.py"]
PING_REQUIREMENT = '\n- `ping` (no arguments) → `{"answer": "pong"}`: a liveness check any person may run.\n'


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def source_origin(target: Path) -> Path:
    """A git repository holding this checkout's files (tracked and untracked, not ignored), one commit."""
    files = _git(ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    _git(target, "init", "-q", "-b", "main")
    _git(target, "add", "-A")
    _git(target, "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", "the running tree")
    return target


def clone_source(origin: Path, target: Path) -> Path:
    """A clone of ``origin`` on ``main``, owned by one test."""
    subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True)
    _git(target, "config", "user.name", "test")
    _git(target, "config", "user.email", "test@localhost")
    return target


def head(repo: Path) -> str:
    return _git(repo, "rev-parse", "HEAD").strip()


def edit_requirement(source: Path) -> None:
    """A person edits McNamara's requirements (a new tool) and commits it: what the regeneration works from."""
    path = source / "requirements" / "mcnamara.md"
    path.write_text(path.read_text(encoding="utf-8") + PING_REQUIREMENT, encoding="utf-8")
    _git(source, "commit", "-q", "-am", "McNamara: a ping tool")


def ping_change(source: Path) -> Reply:
    """The scripted LLM's answer: McNamara's module with a ``ping`` tool, and a test for it."""
    module = (source / "mads" / "mcnamara" / "mad.py").read_text(encoding="utf-8")
    anchor = '    @tool("IP addresses currently blocked'
    assert anchor in module, "McNamara's module changed: update the scripted change"
    files = {
        "mads/mcnamara/mad.py": module.replace(anchor, PING_TOOL + anchor, 1),
        "tests/mads/mcnamara/test_ping.py": PING_TEST,
    }
    return Reply(text=json.dumps({"outcome": "proposed", "message": "McNamara answers ping", "files": files}))


REFUSAL = "McNamara refuses to start"


def change_that_cannot_start(source: Path) -> Reply:
    """The ping change, but McNamara's ``on_start`` raises: its tests pass confined (they never start it),
    yet the running ecosystem cannot start it."""
    files = json.loads(ping_change(source).text)["files"]
    start = "    async def on_start(self) -> None:\n"
    assert start in files["mads/mcnamara/mad.py"], "McNamara's module changed: update the scripted change"
    files["mads/mcnamara/mad.py"] = files["mads/mcnamara/mad.py"].replace(
        start, f"{start}        raise RuntimeError({REFUSAL!r})\n", 1
    )
    return Reply(text=json.dumps({"outcome": "proposed", "message": "McNamara answers ping", "files": files}))


def write_config(path: Path, llm_base_url: str) -> Path:
    model = {"name": "scripted", "model": "openai/scripted", "api_base": llm_base_url, "roles": ["imperator"]}
    lines = [
        "[ecosystem]",
        f"mads = {json.dumps(PROCESS_MADS)}",
        'log_level = "INFO"',
        "drain_timeout = 10",
        "[fiedler]",
        "retries = 0",
        "timeout = 60.0",
        'roles = { imperator = "scripted" }',
        "[[fiedler.models]]",
        *(f"{k} = {json.dumps(v)}" for k, v in model.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class EcosystemChild:
    """``python <source>/ecosystem.py`` running, its URL, the admin's token and login link, an HTTP client."""

    source: Path
    config: Path
    data_dir: Path
    log: Path
    url: str = ""
    token: str = ""
    login_link: str = ""
    http: aiohttp.ClientSession | None = None
    process: asyncio.subprocess.Process | None = None
    _stderr: list[Any] = field(default_factory=list)

    def at(self, path: str) -> str:
        return self.url.rstrip("/") + path

    async def get(self, path: str) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.get(self.at(path)) as response:
            return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.post(self.at(path), json=body if body is not None else {}) as response:
            return response.status, await response.json(content_type=None)

    async def cli(self, *args: str, timeout: float = 300.0) -> tuple[int, str, str]:
        """``python <source>/ecosystem.py *args`` in another process, on this ecosystem's config and data."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(self.source / "ecosystem.py"),
            *args,
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            cwd=self.source,
            env=child_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def instances(self) -> dict[str, str]:
        """Each running MAD's instance id (new whenever it starts or is reloaded)."""
        status, body = await self.get("/api/mads")
        assert status == 200, body
        return {m["name"]: m["instance"] for m in body["mads"] if m["alive"]}

    async def tools(self, mad: str) -> set[str]:
        status, body = await self.get("/api/mads")
        assert status == 200, body
        return {t["name"] for m in body["mads"] if m["name"] == mad and m["alive"] for t in m["tools"]}

    async def command(self, text: str) -> dict[str, Any]:
        """Send ``text`` (a ``/mad tool {…}`` command) in a new conversation; Grace's reply."""
        status, conversation = await self.post("/api/conversations", {})
        assert status == 201, conversation
        status, body = await self.post(f"/api/conversations/{conversation['id']}/messages", {"text": text})
        assert status == 200, body
        return body["reply"]

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@contextlib.asynccontextmanager
async def ecosystem_child(source: Path, config: Path, data_dir: Path, log: Path) -> AsyncIterator[EcosystemChild]:
    """Start the ecosystem from ``source``; stop it with SIGTERM (it must exit 0) when the block ends."""
    child = EcosystemChild(source=source, config=config, data_dir=data_dir, log=log)
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(source / "ecosystem.py"),
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--config",
            str(config),
            cwd=source,
            env=child_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    child.process = process
    try:
        assert process.stdout is not None
        while not child.url:
            line = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)).decode().strip()
            assert line or process.returncode is None, f"the ecosystem exited: {child.tail()}"
            if found := LOGIN_LINE.match(line):
                child.login_link = found["link"]
            elif found := API_TOKEN.match(line):
                child.token = found["token"]
            elif found := URL_LINE.search(line):
                child.url = found["url"]
            elif not line and process.stdout.at_eof():
                raise AssertionError(f"the ecosystem printed no URL: {child.tail()}")
        assert child.token, "the first run printed no API token"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {child.token}"}) as http:
            child.http = http
            yield child
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        assert code == 0, child.tail()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


RUN_TIMEOUT = 1200.0
"""A run applies the change and runs the architecture tests and the MAD's tests confined: minutes under load."""


async def run_ended(child: EcosystemChild, run_id: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """Poll the run (a deadline, not a pace) until it is no longer running; its summary."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        status, run = await child.get(f"/api/regeneration/runs/{run_id}")
        assert status == 200, run
        if run["status"] != "running":
            return run
        if loop.time() > end:
            raise AssertionError(f"run {run_id} still {run['state']} after {timeout:g}s: {child.tail()}")
        await asyncio.sleep(0.25)


async def reloaded(child: EcosystemChild, run_id: str, timeout: float = 60.0, nth: int = 0) -> dict[str, Any]:
    """Poll the run until the running ecosystem recorded reloading its MAD (the ``nth`` time); that record."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        status, run = await child.get(f"/api/regeneration/runs/{run_id}")
        assert status == 200, run
        if len(run["reloads"]) > nth:
            return run["reloads"][nth]
        if loop.time() > end:
            raise AssertionError(f"run {run_id} approved but not reloaded within {timeout:g}s: {child.tail()}")
        await asyncio.sleep(0.1)
