"""Files out of the cell: a run's files become artifacts of the conversation, served by the gateway only to
those who may read it, with a content type from the allow-list, a Content-Disposition and an inert CSP."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.mads.hopper.conftest import HOPPER_MADS
from tests.support.ecosystem import Running
from tests.support.llm_server import Reply, ScriptedLLM, ToolCall
from tests.support.sandbox_ecosystem import sandbox_ecosystem, sandbox_settings
from tests.support.wasm_cache import CompiledCache

WRITE_FILES = (
    "import struct, zlib\n"
    "open('table.csv', 'w').write('year,yield\\n2024,3.1\\n2025,3.4\\n')\n"
    "raw = b'\\x00\\xff\\x00\\x00' * 1\n"
    "def chunk(kind, data):\n"
    "    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))\n"
    "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0))\n"
    "png += chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')\n"
    "open('dot.png', 'wb').write(png)\n"
    "open('page.html', 'w').write('<script>alert(1)</script>')\n"
    "print('wrote')\n"
)


@pytest.fixture
async def audited(tmp_path: Path, compiled_cache: CompiledCache) -> AsyncIterator[Running]:
    """Hopper with McNamara: an operator's read of another person's conversation must be audited."""
    settings = sandbox_settings(tmp_path / "data", mads=[*HOPPER_MADS, "mcnamara"])
    async with sandbox_ecosystem(tmp_path / "data", compiled_cache, settings) as eco:
        yield eco


def run_python(arguments: dict[str, Any]) -> str:
    return f"/hopper run_python {json.dumps(arguments)}"


async def fetch(eco: Running, path: str) -> tuple[int, dict[str, str], bytes]:
    async with eco.http.get(eco.at(path)) as response:
        return response.status, dict(response.headers), await response.read()


async def test_files_a_run_writes_become_artifacts_of_the_conversation(hopper: Running) -> None:
    cid = await hopper.new_conversation("artifacts")
    body = await hopper.say(cid, run_python({"code": WRITE_FILES, "artifacts": ["table.csv", "dot.png", "page.html"]}))
    assert body["reply"]["error"] is None, body
    [result] = body["reply"]["data"]
    assert result["stdout"] == "wrote\n" and result["files"] == []  # the bytes travel as artifacts, not inline
    by_name = {a["name"]: a for a in body["reply"]["artifacts"]}
    assert set(by_name) == {"table.csv", "dot.png", "page.html"}
    assert [a["id"] for a in result["artifacts"]] == [a["id"] for a in body["reply"]["artifacts"]]

    status, headers, content = await fetch(hopper, f"/api/conversations/{cid}/artifacts/{by_name['table.csv']['id']}")
    assert status == 200 and content == b"year,yield\n2024,3.1\n2025,3.4\n"
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''table.csv"
    assert hashlib.sha256(content).hexdigest() == by_name["table.csv"]["id"]

    status, headers, content = await fetch(hopper, f"/api/conversations/{cid}/artifacts/{by_name['dot.png']['id']}")
    assert status == 200 and content.startswith(b"\x89PNG\r\n\x1a\n")
    assert headers["Content-Type"] == "image/png" and headers["Content-Disposition"].startswith("inline;")
    assert "sandbox" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"

    # Whatever the producer wrote, HTML is never served as HTML.
    status, headers, _ = await fetch(hopper, f"/api/conversations/{cid}/artifacts/{by_name['page.html']['id']}")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")

    # The attach request Rogers logged carries a placeholder, not a second copy of the bytes.
    stored = json.dumps(await hopper.history(cid, limit=200))
    assert base64.b64encode(b"year,yield\n2024,3.1\n2025,3.4\n").decode() not in stored
    assert "[stored as an artifact]" in stored


async def test_another_person_gets_404_and_an_operator_may_read(audited: Running) -> None:
    hopper = audited
    cid = await hopper.new_conversation("private")
    body = await hopper.say(cid, run_python({"code": "open('n.txt','w').write('mine')", "artifacts": ["n.txt"]}))
    [artifact] = body["reply"]["artifacts"]
    path = f"/api/conversations/{cid}/artifacts/{artifact['id']}"
    async with hopper.signed_in_as("mallory") as mallory:
        status, _, content = await fetch(mallory, path)
        assert status == 404 and b"mine" not in content
        other = await mallory.new_conversation("hers")
        status, _, _ = await fetch(mallory, f"/api/conversations/{other}/artifacts/{artifact['id']}")
        assert status == 404
    async with hopper.signed_in_as("olga", "operator") as olga:
        status, _, content = await fetch(olga, path)
        assert status == 200 and content == b"mine"
    status, body = await hopper.get(f"/api/conversations/{cid}/artifacts/not-a-sha")
    assert status == 422 and body["error"]["fields"][0]["field"] == "path.artifact_id"
    status, body = await hopper.get(f"/api/conversations/{cid}/artifacts/{'0' * 64}")
    assert status == 404


async def test_a_file_the_program_did_not_write_is_named_in_the_error(hopper: Running) -> None:
    cid = await hopper.new_conversation("missing")
    body = await hopper.say(cid, run_python({"code": "print(1)", "artifacts": ["chart.png"]}))
    error = body["reply"]["error"]
    assert error["code"] == "artifact_missing" and "chart.png" in error["message"]
    assert error["fields"][0]["field"] == "artifacts"
    bad = await hopper.say(cid, run_python({"code": "print(1)", "artifacts": ["../etc/passwd"]}))
    assert bad["reply"]["error"]["code"] == "invalid_arguments"
    assert any("artifacts" in f["field"] for f in bad["reply"]["error"]["fields"])


@pytest.fixture
async def thinking(tmp_path: Path, compiled_cache: CompiledCache, llm_server: ScriptedLLM) -> AsyncIterator[Running]:
    """Hopper and Grace with a scripted LLM behind Fiedler."""
    settings = sandbox_settings(tmp_path / "data", llm_server.base_url, mads=HOPPER_MADS)
    async with sandbox_ecosystem(tmp_path / "data", compiled_cache, settings) as eco:
        yield eco


async def test_a_file_made_during_a_handoff_reaches_the_person(thinking: Running, llm_server: ScriptedLLM) -> None:
    code = "open('totals.csv', 'w').write('total\\n42\\n')"
    llm_server.script(
        ToolCall(name="handoff", arguments={"mad": "hopper", "request": "tabulate the totals as CSV"}),
        ToolCall(name="run_python", arguments={"code": code, "artifacts": ["totals.csv"]}),
        Reply(text="I wrote totals.csv."),
        Reply(text="Hopper made the table: totals.csv."),
    )
    cid = await thinking.new_conversation("handoff")
    body = await thinking.say(cid, "make me a table of the totals")
    assert body["reply"]["error"] is None, body
    assert body["participants"] == ["grace", "fiedler", "hopper"]
    [artifact] = body["reply"]["artifacts"]
    assert artifact["name"] == "totals.csv" and artifact["conversation_id"] == cid
    status, _, content = await fetch(thinking, f"/api/conversations/{cid}/artifacts/{artifact['id']}")
    assert status == 200 and content == b"total\n42\n"
    # The reloaded history shows it too: the stored reply carries the artifact part.
    messages = await thinking.history(cid, limit=200)
    kinds = [p.get("media_type") for m in messages for p in m["envelope"]["content"] if p["type"] == "data"]
    assert "application/vnd.mad.artifact+json" in kinds
