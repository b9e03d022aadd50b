"""Shared fixtures for the whole test suite."""

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

# litellm otherwise fetches its cost map over the network at import time; tests stay on loopback.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HOSTED_KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
"""Environment variables from which Fiedler would discover a hosted model."""

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.ecosystem import Running
    from tests.support.llm_server import ScriptedLLM


@pytest.fixture
async def llm_server() -> AsyncIterator["ScriptedLLM"]:
    """A started scripted OpenAI-compatible server; script it with ``llm_server.script(...)``."""
    from tests.support.llm_server import ScriptedLLM

    async with ScriptedLLM() as llm:
        yield llm


@pytest.fixture
async def ecosystem(tmp_path: "Path", llm_server: "ScriptedLLM") -> AsyncIterator["Running"]:
    """The real ecosystem (Rogers, Fiedler, Grace + gateway) in-process on an ephemeral port,
    Fiedler pointed at ``llm_server``; yields a :class:`~tests.support.ecosystem.Running`."""
    from tests.support.ecosystem import ecosystem_settings, running

    async with running(ecosystem_settings(tmp_path / "data", llm_server.base_url)) as eco:
        yield eco


@pytest.fixture
async def ecosystem_without_llm(tmp_path: "Path", monkeypatch: pytest.MonkeyPatch) -> AsyncIterator["Running"]:
    """The same ecosystem with no LLM configured anywhere (Fiedler explains how to configure one)."""
    from tests.support.ecosystem import ecosystem_settings, running

    for var in [v for v in os.environ if v.startswith("MAD_LLM_") or v in HOSTED_KEY_VARS]:
        monkeypatch.delenv(var)
    async with running(ecosystem_settings(tmp_path / "data", None)) as eco:
        yield eco
