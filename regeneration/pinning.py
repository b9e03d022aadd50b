"""A pinned model: the exact model id and parameters a regeneration uses, refusing aliases that drift.

The model is named by its Fiedler registry name; before the run, Fiedler's ``models`` report must
show that name bound to exactly ``model_id``, with no fallback (a fallback is another model
answering). A model id that can change under the same name — one naming ``latest``, or a hosted
provider's model without a dated snapshot (``openai/gpt-4o`` rather than
``openai/gpt-4o-2024-08-06``) — is refused. Every answer must come from the pinned name.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

HOSTED = ("openai/", "anthropic/", "gemini/", "vertex_ai/", "mistral/", "groq/", "deepseek/", "xai/", "cohere/")
"""Providers whose bare model names are moving aliases; a local server (``api_base``) serves what it was given."""
_SNAPSHOT = re.compile(r"(\d{4}-\d{2}-\d{2}|\d{8}|@\d{8}|-\d{3}$|-v\d+(:\d+)?$)")


class ModelNotPinned(ValueError):
    """The model is an alias that can drift, or Fiedler does not serve exactly the pinned id."""


class PinnedModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Fiedler registry name")
    model_id: str = Field(min_length=3, max_length=200, description="the exact litellm model id it must be bound to")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(16000, ge=1, le=1_000_000)

    def parameters(self) -> dict[str, JsonValue]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}


def drift_reason(model_id: str, api_base: str | None) -> str | None:
    """Why ``model_id`` may answer with a different model tomorrow, or ``None`` if it is a fixed snapshot."""
    low = model_id.lower()
    if "latest" in low:
        return f"model id {model_id!r} names 'latest', an alias that moves"
    if api_base is None and low.startswith(HOSTED) and not _SNAPSHOT.search(low.rsplit("/", 1)[-1]):
        return f"model id {model_id!r} is a hosted alias without a dated snapshot (e.g. '-2024-08-06')"
    return None


def verify_pinned(pinned: PinnedModel, models_report: dict[str, Any]) -> dict[str, JsonValue]:
    """Check Fiedler's ``models`` report against the pin; the registry entry as recorded in the audit."""
    entry = next((m for m in models_report.get("models", []) if m.get("name") == pinned.name), None)
    if entry is None:
        raise ModelNotPinned(f"model: Fiedler has no model named {pinned.name!r}")
    if entry.get("model") != pinned.model_id:
        raise ModelNotPinned(
            f"model: {pinned.name!r} is bound to {entry.get('model')!r}, not the pinned {pinned.model_id!r}"
        )
    reason = drift_reason(pinned.model_id, entry.get("api_base"))
    if reason is not None:
        raise ModelNotPinned(f"model: {reason}")
    if entry.get("fallbacks"):
        raise ModelNotPinned(f"model: {pinned.name!r} has fallbacks {entry['fallbacks']}; another model could answer")
    return {"name": pinned.name, "model_id": pinned.model_id, "api_base": entry.get("api_base"), **pinned.parameters()}
