"""End to end: ``python ecosystem.py`` as a real process, chatted with through its gateway.

The scripted LLM runs in the test process on loopback; the ecosystem reaches it over
HTTP through Fiedler and litellm. Grace hands the question to Rogers mid-turn, the
reply streams over the WebSocket, the exchange is in the stored history, SIGTERM stops
the process cleanly, and a restart on the same data directory still has the history.
The gateway requires authentication: the first start prints a one-time login link and, on
the next line, the admin's API token; the test uses that token as a bearer token.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.llm_server import Reply, ScriptedLLM, ToolCall

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
FRAME_TIMEOUT = 60.0
"""The first frame waits for the first LLM call of a fresh process, which loads litellm (tens of seconds on a
busy 2-core machine); later frames come in milliseconds."""
URL_LINE = re.compile(r"running at (?P<url>http://127\.0\.0\.1:\d+/)")
FIRST_RUN = re.compile(r"^First run: sign in as admin \(operator\) at (?P<url>http://\S+)/login#code=\S+ \(one-time")
API_TOKEN = re.compile(r"^API token for admin .*: (?P<token>mad_\S+)$")

pytestmark = pytest.mark.slow


def write_config(path: Path, llm_base_url: str) -> Path:
    model = {"name": "scripted", "model": "openai/scripted", "api_base": llm_base_url, "roles": ["imperator"]}
    config = {
        "ecosystem": {"mads": ["rogers", "fiedler", "grace"], "log_level": "WARNING", "drain_timeout": 10},
        "fiedler": {"models": [model], "retries": 0},
    }
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if key == "models":
                continue
            lines.append(f"{key} = {json.dumps(value)}")
        for model_table in values.get("models", []):
            lines.append(f"[[{section}.models]]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in model_table.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tail(log: Path) -> str:
    """The end of the ecosystem's stderr, for failure messages (read only when a test is failing)."""
    return log.read_text(encoding="utf-8", errors="replace")[-3000:]


@asynccontextmanager
async def ecosystem_process(
    config: Path, data_dir: Path, log: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, str | None]]:
    """Start ``ecosystem.py --port 0``; yield the process, the URL it printed and the first-run token (if any)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAD_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    with log.open("ab") as stderr:
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
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        token: str | None = None
        line = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)).decode()
        first_run = FIRST_RUN.match(line.strip())
        if first_run:
            line = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)).decode()
            api_token = API_TOKEN.match(line.strip())
            assert api_token, f"no API token line after the login link: {line!r}"
            token = api_token["token"]
            line = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)).decode()
        match = URL_LINE.search(line)
        assert match, f"no URL on stdout: {line!r}; stderr: {tail(log)}"
        assert first_run is None or f"{first_run['url']}/" == match["url"]
        yield process, match["url"], token
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    assert code == 0, tail(log)


async def chat_over_socket(http: aiohttp.ClientSession, url: str, cid: str, text: str) -> list[dict[str, Any]]:
    """Send ``text`` on the conversation socket; frames until the reply and Grace's final ``done``."""
    frames: list[dict[str, Any]] = []
    async with http.ws_connect(f"{url}api/conversations/{cid}/stream", origin=url.rstrip("/")) as ws:
        assert (await ws.receive_json(timeout=FRAME_TIMEOUT))["type"] == "ready"
        await ws.send_json({"type": "message", "text": text, "client_id": "e2e"})
        while not (
            any(f["type"] == "reply" for f in frames)
            and any(f.get("event") == "done" and f["mad"] == "grace" for f in frames)
        ):
            frame = await ws.receive_json(timeout=FRAME_TIMEOUT)
            assert frame["type"] != "error", frame
            frames.append(frame)
    return frames


async def test_chat_through_the_gateway_of_a_real_process(tmp_path: Path) -> None:
    answer = "Rogers has exactly one conversation on record: this one."
    async with ScriptedLLM() as llm:
        llm.script(
            ToolCall(name="handoff", arguments={"mad": "rogers", "request": "How many conversations are stored?"}),
            Reply(text="One conversation is stored."),
            Reply(text=answer),
        )
        config = write_config(tmp_path / "ecosystem.toml", llm.base_url)
        data_dir, log = tmp_path / "data", tmp_path / "ecosystem.log"

        async with ecosystem_process(config, data_dir, log) as (process, url, token):
            assert token is not None, "the first start prints the admin's login link"
            auth = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{url}api/conversations") as response:
                assert response.status == 401
            async with aiohttp.ClientSession(headers=auth) as http:
                async with http.post(f"{url}api/conversations", json={"title": "e2e"}) as response:
                    assert response.status == 201
                    cid = (await response.json())["id"]
                frames = await chat_over_socket(http, url, cid, "How many conversations do we have?")

                [reply] = [f for f in frames if f["type"] == "reply"]
                assert reply["reply"]["text"] == answer
                assert reply["participants"] == ["grace", "fiedler", "rogers"]
                grace_text = [
                    f["text"] for f in frames if f["type"] == "delta" and f["event"] == "delta" and f["mad"] == "grace"
                ]
                assert len(grace_text) > 3 and "".join(grace_text) == answer
                events = [(f["event"], f["mad"]) for f in frames if f["type"] == "delta" and f["event"] != "delta"]
                assert (
                    events.index(("handoff", "rogers"))
                    < events.index(("tool", "grace"))
                    < events.index(("done", "grace"))
                )

                async with http.get(f"{url}api/conversations/{cid}/messages", params={"limit": "200"}) as response:
                    assert response.status == 200
                    before = (await response.json())["messages"]
                assert before[0]["sender"] == "user.admin" and before[0]["text"] == "How many conversations do we have?"
                to_user = [m for m in before if m["recipient"] == "user.admin"]
                assert to_user[-1]["text"] == answer
            await stop(process, log)
        assert len(llm.requests) == 3

        async with (
            ecosystem_process(config, data_dir, log) as (process, url, again),
            aiohttp.ClientSession(headers=auth) as http,
        ):
            assert again is None, "the login link is printed on the first start only"
            async with http.get(f"{url}api/conversations/{cid}/messages", params={"limit": "200"}) as response:
                assert response.status == 200
                after = (await response.json())["messages"]
            assert [m["id"] for m in after] == [m["id"] for m in before]
            async with http.get(f"{url}api/conversations") as response:
                assert [c["id"] for c in (await response.json())["conversations"]] == [cid]
            await stop(process, log)
