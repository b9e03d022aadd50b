"""McNamara's boundary models: configuration, tool arguments and results, event views.

Argument models forbid unknown fields, so the bus contract rejects a bad call
(naming the field) before a tool runs. Payloads McNamara only *reads* from
publishers that have no shared model yet (sandbox limits, URL refusals, LLM
calls) are tolerant views: the fields McNamara needs are typed, the rest is kept.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress

from bus.topics import SecurityAlert
from mads.core.audit_trail import AuditEvent, ChainHead
from mads.mcnamara.rules import RulesConfig

MAD_NAME_PATTERN = r"^[a-z_][a-z0-9_\-]*$"


class McNamaraConfig(BaseModel):
    """McNamara's configuration section (``[mcnamara]`` in ecosystem.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: RulesConfig = Field(default_factory=RulesConfig)
    unaudited_tools: frozenset[str] = Field(
        default=frozenset({"mcnamara.record", "mcnamara.is_blocked"}),
        description="'<mad>.<tool>' calls not written as tool.call records (already audited, or per-request noise)",
    )
    max_detail_chars: int = Field(default=2000, ge=100, le=100_000)
    audit_busy_timeout_ms: int = Field(
        default=5000, ge=0, le=120_000, description="how long an append waits for another writer (the CLI)"
    )


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(Args):
    pass


class RecordArgs(AuditEvent):
    """One audit record to append synchronously (the fields of AuditEvent)."""


class RecordResult(BaseModel):
    seq: int
    hash: str


class TailArgs(Args):
    n: int = Field(default=20, ge=1, le=1000)


class AlertsArgs(Args):
    since: datetime | None = Field(default=None, description="only alerts last seen at or after this time")
    include_acknowledged: bool = False


class AcknowledgeArgs(Args):
    id: str = Field(min_length=1, max_length=64)


class IpArgs(Args):
    ip: IPvAnyAddress


class MadArgs(Args):
    mad: str = Field(pattern=MAD_NAME_PATTERN, max_length=64)


class BlockedIp(BaseModel):
    ip: str
    until: datetime
    reason: str


class BlockStatus(BaseModel):
    ip: str
    blocked: bool
    until: datetime | None = None


class Quarantined(BaseModel):
    mad: str
    since: datetime
    reason: str


class ChangeResult(BaseModel):
    """Outcome of unblock/release: whether there was anything to undo."""

    target: str
    changed: bool


class SecurityStatus(BaseModel):
    head: ChainHead
    blocked_ips: list[BlockedIp]
    quarantined: list[Quarantined]
    open_alerts: int


class SandboxNotice(BaseModel):
    """Tolerant view of an ``events.sandbox_limit`` payload: a limit hit, maybe a violation."""

    model_config = ConfigDict(extra="allow")

    mad: str | None = Field(default=None, max_length=128)
    violation: bool = False
    limit: str | None = Field(default=None, max_length=200)


class UrlRefusal(BaseModel):
    """Tolerant view of an ``events.url_refused`` payload."""

    model_config = ConfigDict(extra="allow")

    mad: str | None = Field(default=None, max_length=128)
    url: str | None = Field(default=None, max_length=8192)
    reason: str = Field(default="", max_length=2000)


class LlmCallView(BaseModel):
    """Tolerant view of Fiedler's ``events.llm_call`` payload (MADs never import each other's models)."""

    model_config = ConfigDict(extra="allow")

    caller: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    duration_ms: float | None = Field(default=None, allow_inf_nan=False)
    ok: bool = True
    error_code: str | None = None
    conversation_id: str | None = None


__all__ = [
    "AcknowledgeArgs",
    "AlertsArgs",
    "BlockStatus",
    "BlockedIp",
    "ChangeResult",
    "IpArgs",
    "LlmCallView",
    "MadArgs",
    "McNamaraConfig",
    "NoArgs",
    "Quarantined",
    "RecordArgs",
    "RecordResult",
    "SandboxNotice",
    "SecurityAlert",
    "SecurityStatus",
    "TailArgs",
    "UrlRefusal",
]
