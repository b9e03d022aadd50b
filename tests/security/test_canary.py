"""A canary secret in real use never shows up anywhere it could leak.

``python ecosystem.py`` runs as a real process. The canary is stored with the secrets
CLI as the API key of Fiedler's only model (``api_key_secret``), so every LLM call reads
it from Turing. A user chats through the gateway: a turn with a tool call mid-turn, a
message pasting the canary, a reply in which the (scripted) LLM says it, a tool error
that would quote it, a ``/turing get`` that must be denied and audited, then history,
search and the conversation list. After a clean stop we scan every byte the ecosystem
left behind — every file under the data directory (SQLite -wal/-shm included) except
Turing's encrypted vault and its key file, its stdout and stderr, every HTTP response
body and header — for the canary and its JSON-escaped, URL-encoded and base64 forms.

To prove the canary was really in use, the scripted LLM must have received it as the
bearer key. The gateway requires a token: one is created with ``ecosystem.py tokens``
before the start (the in-process harness has no process-level auth helper).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest

from mads.core.audit_trail import AuditTrail
from tests.support.llm_server import Reply, ScriptedLLM, ToolCall

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 120.0
SECRET_PATH = "providers/scripted"
LATE_PATH = "people/late"
USER = "canary-tester"
URL_LINE = re.compile(r"running at (?P<url>http://127\.0\.0\.1:\d+/)")
NOT_SCANNED = ("turing/vault.db", "turing/root.key")
"""Turing's encrypted store (the canary is in it, sealed) and the key file (not the canary)."""

pytestmark = pytest.mark.slow


def forms(canary: str) -> set[bytes]:
    """The canary and the encodings a leak could take."""
    raw = canary.encode()
    texts = {canary, json.dumps(canary)[1:-1], quote(canary, safe=""), quote_plus(canary, safe="")}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        texts |= {encoded.decode(), encoded.decode().rstrip("=")}
    return {t.encode() for t in texts}


def leaks(blob: bytes, canary: str) -> list[str]:
    found = []
    for form in sorted(forms(canary)):
        at = blob.find(form)
        if at >= 0:
            found.append(f"{form.decode()!r} at {at}: …{blob[max(0, at - 80) : at + 80]!r}…")
    return found


def scan_data_dir(data_dir: Path, canary: str) -> dict[str, list[str]]:
    """Leaks in every file under the data directory (bytes), by relative path; Turing's vault excepted."""
    out = {}
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(data_dir).as_posix()
        if not rel.startswith(NOT_SCANNED):
            out[rel] = leaks(path.read_bytes(), canary)
    return out


def write_config(path: Path, llm_base_url: str) -> Path:
    model = {
        "name": "scripted",
        "model": "openai/scripted",
        "api_base": llm_base_url,
        "api_key_secret": SECRET_PATH,
        "roles": ["imperator"],
    }
    lines = [
        "[ecosystem]",
        'mads = ["rogers", "mcnamara", "turing", "fiedler", "grace"]',
        'log_level = "INFO"',
        "drain_timeout = 10",
        "[fiedler]",
        "retries = 0",
        "[[fiedler.models]]",
        *(f"{k} = {json.dumps(v)}" for k, v in model.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAD_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


async def cli(*args: str, stdin: str = "") -> tuple[bytes, bytes]:
    """Run ``ecosystem.py <args>`` to completion; fail the test on a non-zero exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "ecosystem.py"),
        *args,
        cwd=ROOT,
        env=clean_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), CLI_TIMEOUT)
    assert process.returncode == 0, (args, out, err)
    return out, err


@dataclass
class Session:
    """An authenticated HTTP client that keeps every response's status line, headers and body."""

    http: aiohttp.ClientSession
    url: str
    token: str
    responses: list[bytes] = field(default_factory=list)

    async def send(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(
            method, self.url + path, json=body, params=params or None, headers=headers
        ) as response:
            raw = await response.read()
            head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            self.responses.append(f"{response.status} {response.reason}\n{head}\n\n".encode() + raw)
            assert response.status < 300, (method, path, response.status, raw[:2000])
            return json.loads(raw) if raw else None

    async def say(self, cid: str, text: str) -> dict[str, Any]:
        return await self.send("POST", f"api/conversations/{cid}/messages", {"text": text})


@asynccontextmanager
async def ecosystem_process(
    config: Path, data_dir: Path, stderr_log: Path
) -> AsyncIterator[tuple[Any, str, bytearray]]:
    """Start ``ecosystem.py --port 0``; yield the process, its URL and its stdout so far (kept growing)."""
    with stderr_log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "ecosystem.py"),
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--config",
            str(config),
            cwd=ROOT,
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    stdout = bytearray()
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def pump() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            stdout.extend(line)
            match = URL_LINE.search(line.decode(errors="replace"))
            if match and not found.done():
                found.set_result(match["url"])
        if not found.done():
            found.set_exception(AssertionError(f"no URL on stdout: {bytes(stdout)!r}"))

    reader = asyncio.create_task(pump())
    try:
        url = await asyncio.wait_for(found, START_TIMEOUT)
        yield process, url, stdout
        await asyncio.wait_for(reader, STOP_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()


async def test_a_canary_secret_in_use_never_leaks(tmp_path: Path) -> None:
    canary = f"sk-canary-{uuid.uuid4().hex}"
    late = f"sk-late-{uuid.uuid4().hex}"
    """Stored with the CLI while the ecosystem runs: redacted from that moment on (issue 8 §8)."""
    data_dir, stderr_log = tmp_path / "data", tmp_path / "ecosystem.stderr"
    cli_output = bytearray()
    for out, err in (
        await cli("secrets", "set", SECRET_PATH, "--value-stdin", "--data-dir", str(data_dir), stdin=canary + "\n"),
        await cli("tokens", "create", USER, "--data-dir", str(data_dir)),
    ):
        cli_output += out + err
    token = out.decode().strip()

    async with ScriptedLLM() as llm:
        llm.script(
            ToolCall(name="handoff", arguments={"mad": "rogers", "request": "How many conversations are stored?"}),
            Reply(text="One conversation is stored."),
            Reply(text="There is one conversation."),
            Reply(text="I will not keep keys; please rotate it."),
            Reply(text=f"Sure, the key is {canary} as you said."),
            Reply(text=f"Noted: the new one is {late}."),
        )
        config = write_config(tmp_path / "ecosystem.toml", llm.base_url)
        async with (
            ecosystem_process(config, data_dir, stderr_log) as (process, url, stdout),
            aiohttp.ClientSession() as http,
        ):
            user = Session(http, url, token)
            cid = (await user.send("POST", "api/conversations", {"title": "canary"}))["id"]
            await user.say(cid, "How many conversations do we have?")
            await user.say(cid, f"Please remember my API key {canary} for later.")
            await user.say(cid, "What was my key again?")
            await user.say(cid, f'/rogers get_conversation {{"conversation_id": "{canary}"}}')
            denied = await user.say(cid, f'/turing get {{"path": "{SECRET_PATH}"}}')
            await user.say(cid, '/rogers search {"query": "key"}')
            # A secret written by the CLI while the ecosystem runs: `secrets set` returns once the
            # running process has confirmed it redacts the value, and from then on it never leaks.
            out, err = await cli(
                "secrets", "set", LATE_PATH, "--value-stdin", "--data-dir", str(data_dir), stdin=late + "\n"
            )
            cli_output += out + err
            assert b"redacts it from now on" in out, out + err
            await user.say(cid, f"Here is a new key: {late}")
            await user.say(cid, f'/rogers get_conversation {{"conversation_id": "{late}"}}')
            await user.say(cid, f'/rogers search {{"query": "{late}"}}')
            history = await user.send("GET", f"api/conversations/{cid}/messages", limit="200")
            await user.send("GET", "api/conversations")
            await user.send("GET", f"api/conversations/{cid}")
            live = {
                **scan_data_dir(data_dir, canary),
                **{f"{k} [late]": v for k, v in scan_data_dir(data_dir, late).items()},
            }
            assert any(name.endswith("-wal") for name in live), "the live scan saw the WAL files"
            live_scan = {f"{k} (while running)": v for k, v in live.items() if v}
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), STOP_TIMEOUT) == 0, stderr_log.read_text()[-3000:]
        llm.assert_script_consumed()

    # The canary was in use: every LLM call authenticated with it, and it never reached a prompt.
    assert len(llm.requests) == 6
    assert {r.headers["authorization"] for r in llm.requests} == {f"Bearer {canary}"}
    assert all(canary not in json.dumps(r.messages) and late not in json.dumps(r.messages) for r in llm.requests)
    assert "[REDACTED]" in json.dumps(llm.requests[5].messages), (
        "the key stored after start reached the prompt redacted"
    )
    assert "[REDACTED]" in json.dumps(llm.requests[3].messages), "the pasted key reached the prompt redacted"
    assert "access_denied" in json.dumps(denied) or "denied" in json.dumps(denied).lower(), denied
    assert len(history["messages"]) >= 10

    found = live_scan
    after_stop = scan_data_dir(data_dir, canary)
    assert len(after_stop) >= 6, "the scan saw every database"
    found.update({f"{k} (after stop)": v for k, v in after_stop.items() if v})
    found.update({f"{k} (late, after stop)": v for k, v in scan_data_dir(data_dir, late).items() if v})
    for name, blob in (
        ("stdout", bytes(stdout)),
        ("stderr", stderr_log.read_bytes()),
        ("cli output", bytes(cli_output)),
        *((f"HTTP response {i}", r) for i, r in enumerate(user.responses)),
    ):
        for secret in (canary, late):
            if hits := leaks(blob, secret):
                found[f"{name} ({'late' if secret == late else 'canary'})"] = hits
    assert found == {}, "the canary leaked:\n" + "\n".join(f"{k}: {v}" for k, v in found.items())

    async with AuditTrail(data_dir / "mcnamara" / "audit.db") as trail:
        assert (await trail.verify()).ok
        records = await trail.query(event_types=["secret.denied", "secret.read"])
    # Grace runs the command as herself (the principal Turing sees is "grace", not the user).
    assert any(r.event_type == "secret.denied" and r.details.get("path") == SECRET_PATH for r in records), records
    assert any(r.event_type == "secret.read" and r.actor == "fiedler" for r in records), records
