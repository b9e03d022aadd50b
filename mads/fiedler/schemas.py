"""Fiedler's boundary models: its ``[fiedler]`` config section, its tool arguments and results.

Everything here is ``extra="forbid"``: a misspelt config key or a hallucinated field
in a chat request is an error naming the field, never silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from mads.fiedler.budgets import BudgetConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
ROLE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
ENV_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"
MAX_TOOL_NAME = 256
MAX_ARGUMENTS = 200_000


class Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(Forbid):
    """One model in the registry: where it lives, how to authenticate, what it costs, what it is for."""

    name: str = Field(pattern=NAME_PATTERN, description="Registry name used by roles, fallbacks and callers.")
    model: str = Field(min_length=3, max_length=200, description="litellm model string, e.g. 'openai/gpt-4o-mini'.")
    api_base: str | None = Field(
        default=None, max_length=500, description="Base URL of an OpenAI-compatible server (Ollama, llama.cpp, vLLM)."
    )
    api_key_env: str | None = Field(default=None, pattern=ENV_PATTERN, description="Env var holding the API key.")
    api_key_secret: str | None = Field(
        default=None, max_length=200, description="Turing secret path holding the API key (read at call time)."
    )
    roles: list[str] = Field(default_factory=list, description="Roles this model serves (imperator, consultant...).")
    input_cost_per_token: float | None = Field(default=None, ge=0, description="USD; else litellm's cost map.")
    output_cost_per_token: float | None = Field(default=None, ge=0, description="USD; else litellm's cost map.")
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    timeout: float | None = Field(
        default=None, gt=0, le=3600, description="Seconds per attempt; else [fiedler].timeout."
    )

    @field_validator("model")
    @classmethod
    def _provider_prefixed(cls, value: str) -> str:
        if "/" not in value:
            raise ValueError("must be '<provider>/<model>' as litellm expects, e.g. 'openai/gpt-4o-mini'")
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as 'http://127.0.0.1:11434/v1'")
        return value

    @field_validator("roles")
    @classmethod
    def _role_names(cls, value: list[str]) -> list[str]:
        for role in value:
            if not re.match(ROLE_PATTERN, role):
                raise ValueError(f"role {role!r} must match {ROLE_PATTERN}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> ModelSpec:
        if self.api_key_env and self.api_key_secret:
            raise ValueError("give api_key_env or api_key_secret, not both")
        return self

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]


class FiedlerConfig(Forbid):
    """The ``[fiedler]`` section. With no ``models``, models are discovered from the environment."""

    models: list[ModelSpec] = Field(default_factory=list)
    roles: dict[str, str] = Field(default_factory=dict, description="Default model name per role.")
    fallbacks: dict[str, list[str]] = Field(default_factory=dict, description="Model name -> models tried next.")
    retries: int = Field(default=2, ge=0, le=10, description="Retries of a failing model before its fallbacks.")
    retry_after: float = Field(default=0.0, ge=0, le=60, description="Minimum seconds between retries.")
    timeout: float = Field(default=60.0, gt=0, le=3600, description="Seconds per attempt unless the model says.")
    conversation_cache: int = Field(default=10_000, ge=1, description="Conversations kept in memory for usage.")
    budgets: BudgetConfig = Field(default_factory=BudgetConfig, description="Limits checked before every call.")

    @model_validator(mode="after")
    def _references_exist(self) -> FiedlerConfig:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models: duplicate name(s) {duplicates}")
        known = set(names)
        for role, name in self.roles.items():
            if name not in known:
                raise ValueError(f"roles.{role}: unknown model {name!r} (models: {sorted(known) or 'none'})")
        for source, targets in self.fallbacks.items():
            if source not in known:
                raise ValueError(f"fallbacks.{source}: unknown model {source!r}")
            for target in targets:
                if target not in known:
                    raise ValueError(f"fallbacks.{source}: unknown model {target!r}")
        return self


# ---- the chat tool -------------------------------------------------------------------------------


class FunctionCall(Forbid):
    name: str = Field(max_length=MAX_TOOL_NAME, description="As the LLM produced it (may be empty or unknown).")
    arguments: str = Field(default="", max_length=MAX_ARGUMENTS, description="The raw JSON string the LLM produced.")


class ToolCallMessage(Forbid):
    """An assistant's tool call as it goes back to the LLM in the history (OpenAI format)."""

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Forbid):
    """One OpenAI-format chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, JsonValue]] | None = None
    tool_calls: list[ToolCallMessage] | None = None
    tool_call_id: str | None = Field(default=None, max_length=128)
    name: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role != "assistant" and self.tool_calls:
            raise ValueError("only assistant messages carry tool_calls")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required unless the message carries tool_calls")
        return self


class ChatArgs(Forbid):
    """Arguments of ``chat``: OpenAI-format messages and tools.

    Who is billed is not an argument: the caller is the MAD that sent the request, the
    principal and the conversation are the request's own (stamped by the runtime).
    """

    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    tools: list[dict[str, JsonValue]] | None = Field(default=None, description="OpenAI function tools.")
    role: str = Field(default="imperator", pattern=ROLE_PATTERN, description="Picks the role's default model.")
    model: str | None = Field(default=None, pattern=NAME_PATTERN, description="Explicit registry model name.")
    stream: bool = Field(
        default=False, description="Publish text deltas on the request's conversation stream while generating."
    )
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)


class ToolCallOut(Forbid):
    """A tool call the LLM asked for; ``arguments`` is left raw for the caller to validate."""

    id: str
    name: str
    arguments: str


class TokenUsage(Forbid):
    input_tokens: int = 0
    output_tokens: int = 0


class ChatResult(Forbid):
    """What one chat call produced. ``model`` is the registry name of the model that answered."""

    model: str
    content: str | None = None
    tool_calls: list[ToolCallOut] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = 0.0


# ---- models and usage tools ------------------------------------------------------------------------


class ModelsArgs(Forbid):
    """No arguments."""


class ModelView(Forbid):
    """A registry entry as shown to callers: never a key, only where the key comes from."""

    name: str
    model: str
    provider: str
    api_base: str | None
    key_source: str
    key_available: bool
    roles: list[str]
    max_tokens: int | None
    timeout: float
    input_cost_per_token: float | None
    output_cost_per_token: float | None
    fallbacks: list[str]


class ModelsReport(Forbid):
    configured: bool
    source: Literal["config", "environment", "none"]
    models: list[ModelView]
    roles: dict[str, str]
    how_to_configure: str | None = None


class UsageArgs(Forbid):
    """Filter the usage report to one MAD, one conversation and/or one principal (all optional).

    A person sees only their own usage (the principal filter is forced to them); an operator sees all.
    """

    caller: str | None = Field(default=None, max_length=64)
    conversation_id: str | None = Field(default=None, max_length=64)
    principal: str | None = Field(default=None, max_length=80, description="e.g. user:alice")


TRANSCRIPTION_ROLE = "transcription"
"""The role of a speech-to-text model (e.g. ``openai/whisper-1``); no model in it, no transcription."""
MAX_AUDIO_BYTES = 16 * 1_048_576
AUDIO_MEDIA_TYPES = (
    "audio/webm",
    "audio/ogg",
    "audio/wav",
    "audio/x-wav",
    "audio/mpeg",
    "audio/mp4",
    "audio/x-m4a",
    "audio/flac",
)
"""Recording formats the transcription providers take (what browsers' MediaRecorder produces among them)."""


class TranscribeArgs(Forbid):
    """A recording to turn into text."""

    audio_base64: str = Field(
        min_length=4, max_length=(MAX_AUDIO_BYTES * 4) // 3 + 4, description="The recording, base64-encoded."
    )
    media_type: Literal[AUDIO_MEDIA_TYPES] = Field(  # type: ignore[valid-type]
        description="The recording's format, without parameters (audio/webm, not audio/webm;codecs=opus)."
    )
    language: str | None = Field(
        default=None, pattern=r"^[a-z]{2,3}$", description="ISO-639-1 language of the speech, if known."
    )

    @field_validator("audio_base64")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64 (RFC 4648, standard alphabet, padded)") from None
        return value

    def audio(self) -> bytes:
        return base64.b64decode(self.audio_base64)


class Transcription(Forbid):
    text: str
    model: str = Field(description="Registry name of the model that transcribed.")


class TurnUsageArgs(Forbid):
    """One turn's usage: the turn id is the id of the person's message that started it."""

    turn: str = Field(min_length=1, max_length=64)


class UsageTotals(Forbid):
    calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            calls=self.calls + other.calls,
            failed_calls=self.failed_calls + other.failed_calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class UsageReport(Forbid):
    total: UsageTotals
    per_principal: dict[str, UsageTotals] = Field(default_factory=dict)
    per_mad: dict[str, UsageTotals]
    per_conversation: dict[str, UsageTotals]
    per_model: dict[str, UsageTotals]


class LLMCallEvent(Forbid):
    """Payload of ``events.llm_call``: one per chat call, successful or not."""

    principal: str = "system"
    caller: str
    conversation_id: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    duration_ms: float
    ok: bool
    error_code: str | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
