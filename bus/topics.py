"""Well-known topic names and event payload models, shared by publishers and consumers.

Topics are addresses like any other; listeners subscribe with a glob
(``events.*``). Payload models live here so a publisher and every consumer
(Rogers, the audit trail, McNamara) agree on the shape without importing each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import Field, IPvAnyAddress, JsonValue, model_validator

from bus.envelope import Strict

VALIDATION_FAILURE = "events.validation_failure"
"""An LLM (or a peer) produced something that failed validation — the seeds' "hallucination"."""

LLM_CALL = "events.llm_call"
TOOL_CALL = "events.tool_call"
SANDBOX_LIMIT = "events.sandbox_limit"
URL_REFUSED = "events.url_refused"
MAD_LIFECYCLE = "events.mad_lifecycle"
MAD_FAULT = "events.mad_fault"
"""A MAD's own handler raised (its code failed, not an LLM's output): :class:`MadFault`."""
AUTH = "events.auth"
"""A login or token check at the gateway (:class:`AuthEvent`); McNamara audits it and watches for bursts."""
CONFIG_CHANGE = "events.config_change"
SECURITY = "events.security"
"""McNamara's enforcement decisions (:class:`SecurityAction`): IP blocks and MAD quarantines."""
ALERT = "events.alert"
"""A new or repeated security alert (:class:`SecurityAlert`), for Grace's page."""
CLAIM = "events.claim"
"""Horace: a file claimed, refused (holder named) or released (with the reason), a branch merged or discarded."""
WORKFLOW = "events.workflow"
"""A workflow run's entry: transition, validation failure, guard refusal, test run, end (Hopper's society)."""


PARTICIPANTS_MEDIA_TYPE = "application/vnd.mad.participants+json"
"""A reply's data part listing the MADs that took part in producing it (``{"participants": [...]}``)."""


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


class MadFault(Strict):
    """A MAD's handler raised an unexpected exception (answered as ``handler_error``)."""

    mad: str
    error_type: str = Field(max_length=200)
    envelope_id: str
    tool: str | None = None


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
    """The address that asked (a MAD, or a person's ``user.<name>`` at the gateway)."""
    principal: str = "system"
    """Whom the call served (``user:alice``, ``operator:admin``, ``system``)."""
    chain: list[str] = Field(default_factory=list)
    """The MADs the work came through before this tool ran (``grace`` → ``rogers``)."""
    duration_ms: float


class AuthEvent(Strict):
    """One authentication attempt. ``failure``: bad credentials; ``denied``: known principal refused."""

    outcome: Literal["success", "failure", "denied"]
    method: Literal["login", "token"] = "login"
    principal: str | None = Field(default=None, max_length=200)
    ip: IPvAnyAddress
    reason: str = Field(default="", max_length=500)
    route: str = Field(max_length=500)


class ConfigChange(Strict):
    """Configuration was changed. Names the keys, never the values (they may be secrets)."""

    actor: str = Field(min_length=1, max_length=200)
    section: str = Field(min_length=1, max_length=100)
    keys: list[str] = Field(default_factory=list, max_length=200)
    action: Literal["set", "delete", "reload"] = "set"
    summary: str = Field(default="", max_length=500)


class SecurityAction(Strict):
    """An enforcement decision every process applies: the gateway refuses blocked IPs until ``until``;
    every host's quarantine gate refuses a quarantined MAD's messages until it is released."""

    action: Literal["block_ip", "unblock_ip", "quarantine", "release"]
    ip: IPvAnyAddress | None = None
    mad: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_\-]*$", max_length=64)
    until: datetime | None = None
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.action in ("block_ip", "unblock_ip") and self.ip is None:
            raise ValueError(f"ip is required for {self.action}")
        if self.action in ("quarantine", "release") and self.mad is None:
            raise ValueError(f"mad is required for {self.action}")
        if self.action == "block_ip" and self.until is None:
            raise ValueError("until is required for block_ip")
        return self


class SecurityAlert(Strict):
    """A security alert; repeats within the rule's cooldown raise ``count`` instead of a new alert."""

    id: str
    rule: str
    severity: Literal["info", "warning", "high", "critical"]
    subject: str
    message: str
    first_seen: datetime
    last_seen: datetime
    count: int = Field(ge=1)
    acknowledged: bool = False
