"""Run ``python ecosystem.py`` as real child processes against a real Redis, and talk to them.

Each deployment test starts its own processes with a private key prefix and DB
number, waits on what the processes print and on HTTP / Redis state (never on
sleeps), and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from tests.support.cli import child_env

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
URL_LINE = re.compile(r"mad-ecosystem is running at (\S+)")
FAST_BUS = {"reclaim_idle": "1", "presence_ttl": "2", "janitor_interval": "0.5", "block": "0.5", "backoff_max": "0.5"}
"""Bus timings shrunk so crashes are detected and work reclaimed within seconds."""


def bus_url(base: str, *, db: int, prefix: str, **settings: str) -> str:
    """``base`` with its DB number replaced and the bus settings in the query."""
    parts = urlsplit(base)
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **settings}.items())
    return urlunsplit(parts._replace(path=f"/{db}", query=query))


@dataclass
class EcosystemProcess:
    """One ``python ecosystem.py`` child: its output lines, its gateway URL (if any), its exit."""

    name: str
    args: list[str]
    cwd: Path
    process: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    url: str | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> EcosystemProcess:
        """Spawn the process and wait until it says which MADs run in it."""
        self.lines.clear()
        self.url = None
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "ecosystem.py"),
            *self.args,
            cwd=self.cwd,
            env=child_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self.process.stdout)),
            asyncio.create_task(self._read(self.process.stderr)),
        ]
        await self.wait_for_line("runs MADs:", START_TIMEOUT)
        return self

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self.lines.append(text)
            found = URL_LINE.search(text)
            if found:
                self.url = found.group(1).rstrip("/")
            self._changed.set()
        self._changed.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait_for_line(self, needle: str, timeout: float) -> str:
        """The first output line containing ``needle``; fails with the output if the process exits first."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                if (
                    self.process is not None
                    and self.process.returncode is not None
                    and all(t.done() for t in self._readers)
                ):
                    raise AssertionError(
                        f"{self.name} exited ({self.process.returncode}) before {needle!r}:\n{self.output()}"
                    )
                self._changed.clear()
                waiter = asyncio.create_task(self._changed.wait())
                exited = asyncio.create_task(self._exited())
                await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                exited.cancel()

    async def _exited(self) -> None:
        assert self.process is not None
        await self.process.wait()

    async def terminate(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT):
            code = await self.process.wait()
            await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        """SIGKILL: the process dies at once, leaving whatever it was doing unfinished."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        for task in self._readers:
            task.cancel()


@contextlib.asynccontextmanager
async def processes(*procs: EcosystemProcess) -> AsyncIterator[tuple[EcosystemProcess, ...]]:
    """Start the processes in order; on exit kill any still running (a test's own stop is cleaner)."""
    try:
        for proc in procs:
            await proc.start()
        yield procs
    finally:
        for proc in procs:
            if proc.running:
                await proc.kill()


def write_config(path: Path, *, bus: str, mads: list[str], data_dir: Path, port: int = 0) -> Path:
    """An ``ecosystem.toml``: the split configured by file rather than flags."""
    listed = ", ".join(f'"{m}"' for m in mads)
    path.write_text(
        "[ecosystem]\n"
        f'bus = "{bus}"\n'
        f"mads = [{listed}]\n"
        f'data_dir = "{data_dir}"\n'
        "drain_timeout = 2.0\n\n"
        "[gateway]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n",
        encoding="utf-8",
    )
    return path


async def poll(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy; fails naming ``what`` after ``timeout``.

    The short pause between checks is the polling period, not synchronisation: the
    condition itself is what the test waits for.
    """
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})") from None


PRINCIPAL = "tester"


async def create_token(config: Path, cwd: Path) -> str:
    """A real operator token for ``PRINCIPAL``, made the way an operator does (``ecosystem.py tokens create``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "ecosystem.py"),
        "tokens",
        "create",
        PRINCIPAL,
        "--role",
        "operator",
        "--config",
        str(config),
        cwd=cwd,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(START_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    return out.decode().strip()


@dataclass
class Api:
    """JSON over HTTP to one gateway, with a bearer token."""

    http: aiohttp.ClientSession
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.http.get(self.url + path, params=params or None, headers=self.headers) as response:
            return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(self.url + path, json=body, headers=self.headers) as response:
            return response.status, await response.json(content_type=None)

    async def mads(self) -> dict[str, dict[str, Any]]:
        status, body = await self.get("/api/mads")
        assert status == 200, body
        return {m["name"]: m for m in body["mads"]}

    async def alive(self, name: str) -> bool:
        entry = (await self.mads()).get(name)
        return bool(entry and entry["alive"])
