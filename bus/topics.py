"""Well-known topic names and event payload models, shared by publishers and consumers.

Topics are addresses like any other; listeners subscribe with a glob
(``events.*``). Payload models live here so a publisher and every consumer
(Rogers, the audit trail, McNamara) agree on the shape without importing each other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from bus.envelope import Strict

VALIDATION_FAILURE = "events.validation_failure"
"""An LLM (or a peer) produced something that failed validation — the seeds' "hallucination"."""

LLM_CALL = "events.llm_call"
TOOL_CALL = "events.tool_call"
SANDBOX_LIMIT = "events.sandbox_limit"
URL_REFUSED = "events.url_refused"
MAD_LIFECYCLE = "events.mad_lifecycle"


def stream_topic(conversation_id: str) -> str:
    """Where incremental output for one conversation is published (Grace streams it)."""
    return f"stream.{conversation_id}"


class ValidationFailure(Strict):
    mad: str
    source: Literal["llm", "bus", "gateway", "sandbox"] = "llm"
    problem: Literal["bad_json", "unknown_tool", "invalid_arguments", "invalid_message", "no_answer"]
    tool: str | None = None
    detail: str
    fields: list[str] = Field(default_factory=list)
    conversation_id: str | None = None
    attempt: int = 0


class StreamDelta(Strict):
    """A piece of a reply as it is produced."""

    mad: str
    text: str = ""
    done: bool = False
    event: Literal["delta", "tool", "handoff", "done", "error"] = "delta"
    detail: JsonValue = None


class ToolCallEvent(Strict):
    mad: str
    tool: str
    via_llm: bool
    ok: bool
    conversation_id: str | None = None
    caller: str
    duration_ms: float
