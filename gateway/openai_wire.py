"""The OpenAI chat wire format as the gateway speaks it: the request it accepts and the bodies it sends.

Only what a MAD can honour is accepted: text messages, one choice, streaming with or
without the usage chunk. Sampling parameters that OpenAI clients commonly send
(``temperature``, ``max_tokens``, ``stop``…) are accepted and ignored: which model
thinks for a MAD, and how, is Fiedler's configuration, not the caller's. Anything
else (client-side ``tools``, ``n`` > 1, image parts, unknown fields) is an error
naming the field, never silently dropped.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from gateway.schemas import MAX_MESSAGE_TEXT

MAX_MESSAGES = 1_000
TRANSCRIPT_ROLES = {"system": "Instructions", "developer": "Instructions", "user": "User", "assistant": "Assistant"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text"] = Field(description="Only text parts: a MAD reads text.")
    text: str = Field(max_length=MAX_MESSAGE_TEXT)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=64)
    tool_calls: JsonValue = None
    tool_call_id: str | None = Field(default=None, max_length=200)
    refusal: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: ``model`` is a MAD's name (see ``GET /v1/models``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=64)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256, description="Recorded as the conversation's title.")
    n: int | None = Field(default=None, ge=1, le=1, description="A MAD gives one answer.")
    tools: list[JsonValue] | None = None
    tool_choice: JsonValue = None
    parallel_tool_calls: bool | None = None
    # Accepted and ignored: the MAD's model and its settings are Fiedler's configuration.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    response_format: JsonValue = None
    modalities: list[str] | None = None

    @field_validator("tools")
    @classmethod
    def _no_client_tools(cls, value: list[JsonValue] | None) -> list[JsonValue] | None:
        if value:
            raise ValueError("client-side tools are not supported: a MAD calls its own tools (see /mcp to call them)")
        return value

    @field_validator("messages")
    @classmethod
    def _ends_with_user_text(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        last = value[-1]
        if last.role != "user":
            raise ValueError(f"the last message must be the user's (got role {last.role!r})")
        if not last.text().strip():
            raise ValueError("the last message must contain text")
        if len(last.text()) > MAX_MESSAGE_TEXT:
            raise ValueError(f"the last message is longer than {MAX_MESSAGE_TEXT} characters")
        return value

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def turn_text(self, *, continuing: bool) -> str:
        """What the MAD receives: the last user message; for a new conversation, the earlier messages too.

        A continued conversation already has its history in Rogers (the MAD recalls it), so
        only the new message is sent. A slash command is always sent alone.
        """
        last = self.messages[-1].text()
        earlier = [m for m in self.messages[:-1] if m.role in TRANSCRIPT_ROLES and m.text().strip()]
        if continuing or not earlier or last.lstrip().startswith("/"):
            return last
        transcript = "\n".join(f"{TRANSCRIPT_ROLES[m.role]}: {m.text()}" for m in earlier)
        return f"Earlier in this conversation:\n{transcript}\n\nNow: {last}"[: MAX_MESSAGE_TEXT * 2]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_totals(cls, totals: Any) -> Usage:
        """From Fiedler's ``turn_usage`` result (input/output tokens)."""
        if not isinstance(totals, dict):
            return cls()
        prompt = int(totals.get("input_tokens") or 0)
        completion = int(totals.get("output_tokens") or 0)
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def completion(
    completion_id: str, model: str, text: str, usage: Usage, *, conversation_id: str, participants: list[str]
) -> dict[str, Any]:
    """A ``chat.completion`` body (plus the conversation id and the MADs that took part)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage.model_dump(),
        "conversation_id": conversation_id,
        "participants": participants,
    }


def chunk(
    completion_id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    *,
    finish_reason: str | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the usage chunk (no choices)."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage.model_dump()
    return body


def model_entry(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "mad-ecosystem"}
