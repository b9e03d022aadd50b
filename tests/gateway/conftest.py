"""Helpers for gateway tests."""

from __future__ import annotations

from typing import Any


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
