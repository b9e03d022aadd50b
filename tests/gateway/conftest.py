"""Helpers and fixtures for gateway tests.

Gateway tests run McNamara too (unlike the rest of the suite): logins are recorded
through its ``record`` tool and its brute-force rule blocks IPs the gateway refuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ecosystem import CORE_MADS, Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

GATEWAY_MADS = [*CORE_MADS, "mcnamara"]


@pytest.fixture
async def ecosystem(tmp_path: Path, llm_server: ScriptedLLM) -> AsyncIterator[Running]:
    """The real ecosystem with McNamara, on an ephemeral port, signed in as the ``tester`` operator."""
    async with running(ecosystem_settings(tmp_path / "data", llm_server.base_url, mads=GATEWAY_MADS)) as eco:
        yield eco


def assert_error(body: Any, code: str, *fields: str) -> dict[str, Any]:
    """The body is the gateway's JSON error with ``code`` and (at least) these fields named."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    named = [f["field"] for f in error["fields"]]
    for field in fields:
        assert field in named, (field, error)
    for f in error["fields"]:
        assert f["reason"], f
    assert "Traceback" not in error["message"] and "/work/" not in error["message"], error
    return error
