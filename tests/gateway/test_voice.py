"""Voice input: Fiedler transcribes a recording through litellm with the configured speech-to-text model."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import assert_error
from tests.support.ecosystem import Running, ecosystem_settings, fiedler_section, running
from tests.support.llm_server import ScriptedLLM, ServerError, Transcript
from tests.support.waiting import eventually

RECORDING = b"\x1aE\xdf\xa3" + bytes(range(256)) * 8
"""Bytes standing for a WebM recording: the scripted server does not decode audio, it records what it got."""


def with_speech_model(llm_base_url: str) -> dict[str, Any]:
    section = fiedler_section(llm_base_url)
    section["models"].append(
        {"name": "whisper", "model": "openai/whisper-1", "api_base": llm_base_url, "roles": ["transcription"]}
    )
    return section


@pytest.fixture
async def voice_ecosystem(tmp_path: Path, llm_server: ScriptedLLM) -> AsyncIterator[Running]:
    settings = ecosystem_settings(
        tmp_path / "data", llm_server.base_url, sections={"fiedler": with_speech_model(llm_server.base_url)}
    )
    async with running(settings) as eco:
        yield eco


async def transcribe(eco: Running, audio: bytes, content_type: str = "audio/webm", **params: str) -> tuple[int, Any]:
    return await eco.post("/api/transcriptions", data=audio, headers={"Content-Type": content_type}, params=params)


async def test_a_recording_becomes_text_through_the_configured_model(
    voice_ecosystem: Running, llm_server: ScriptedLLM, tmp_path: Path
) -> None:
    status, offered = await voice_ecosystem.get("/api/voice")
    assert status == 200 and offered["transcription"] is True and offered["max_bytes"] > 0
    llm_server.script_transcripts(Transcript(text="what is the weather in Lisbon"))
    async with voice_ecosystem.signed_in_as("alice") as alice:
        status, body = await transcribe(alice, RECORDING, "audio/webm;codecs=opus", language="en")
        assert status == 200, body
        assert body == {"text": "what is the weather in Lisbon", "model": "whisper"}
    [sent] = llm_server.transcriptions
    assert sent.model == "whisper-1" and sent.audio == RECORDING
    assert sent.content_type == "audio/webm" and (sent.filename or "").endswith(".webm")
    assert sent.fields.get("language") == "en"
    assert llm_server.requests == [], "no chat call: the text goes back to the person to send"
    fiedler = voice_ecosystem.host.mads["fiedler"]
    assert fiedler.ledger.per_principal["user:alice"].calls == 1  # type: ignore[attr-defined]
    await eventually(lambda: any("transcribe" in row for row in _rogers_rows(tmp_path / "data")), what="stored")
    stored = [row for row in _rogers_rows(tmp_path / "data") if "transcribe" in row]
    assert any("[REDACTED]" in row for row in stored)
    assert not any(base64.b64encode(RECORDING).decode()[:40] in row for row in stored), "the recording is not kept"


async def test_without_a_speech_model_there_is_no_microphone(ecosystem: Running) -> None:
    status, offered = await ecosystem.get("/api/voice")
    assert status == 200 and offered["transcription"] is False
    status, body = await transcribe(ecosystem, RECORDING)
    assert status == 502
    assert_error(body, "no_transcription_model")


async def test_bad_recordings_are_refused_naming_the_field(voice_ecosystem: Running, llm_server: ScriptedLLM) -> None:
    status, body = await transcribe(voice_ecosystem, RECORDING, "text/plain")
    assert status == 415
    assert_error(body, "unsupported_media_type", "Content-Type")
    status, body = await transcribe(voice_ecosystem, b"", "audio/webm")
    assert status == 422
    status, body = await transcribe(voice_ecosystem, RECORDING, "audio/webm", language="English")
    assert status == 422
    assert_error(body, "invalid_request", "query.language")
    status, body = await transcribe(voice_ecosystem, RECORDING, "audio/x-unknown")
    assert status == 422
    assert_error(body, "invalid_arguments", "content.0.arguments.media_type")
    assert llm_server.transcriptions == []


async def test_a_failing_provider_is_a_typed_error(voice_ecosystem: Running, llm_server: ScriptedLLM) -> None:
    llm_server.script_transcripts(ServerError(status=500))
    status, body = await transcribe(voice_ecosystem, RECORDING)
    assert status == 502
    error = assert_error(body, "llm_provider_error")
    assert error["retryable"] is True


async def test_the_page_may_use_the_microphone_of_its_own_origin_only(ecosystem: Running) -> None:
    async with ecosystem.http.get(ecosystem.at("/")) as response:
        policy = response.headers["Permissions-Policy"]
        page = await response.text()
    assert "microphone=(self)" in policy and "camera=()" in policy
    assert '<script src="/static/voice.js" type="module"></script>' in page
    status, script = await ecosystem.get("/static/voice.js")
    assert status == 200 and "/api/transcriptions" in script


def _rogers_rows(data_dir: Path) -> list[str]:
    rows: list[str] = []
    for path in data_dir.rglob("*.db"):
        if "rogers" not in str(path):
            continue
        with sqlite3.connect(path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                rows.extend(str(row) for row in db.execute(f"SELECT * FROM {table}"))
    return rows
