"""Turn bus events into audit events: one function per topic, no I/O.

McNamara subscribes to ``events.*``; :func:`to_audit_event` decides what each
envelope becomes in the trail. Heartbeats (``events.presence``) and McNamara's
own announcements (already audited when it acted) are not stored; a payload that
fails validation is stored as ``audit.malformed_event`` naming the fields and
reasons (never the values), so the fact of the event is not lost.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, JsonValue, ValidationError

from bus.base import Redact
from bus.envelope import Envelope, field_errors
from bus.topics import (
    ALERT,
    AUTH,
    CONFIG_CHANGE,
    LLM_CALL,
    MAD_FAULT,
    MAD_LIFECYCLE,
    SANDBOX_LIMIT,
    SECURITY,
    TOOL_CALL,
    URL_REFUSED,
    VALIDATION_FAILURE,
    AuthEvent,
    ConfigChange,
    MadFault,
    SecurityAction,
    ToolCallEvent,
    ValidationFailure,
)
from mads.core.audit_trail import AuditEvent, AuditEventType, AuditOutcome, canonical_json
from mads.core.ledger import LEDGER_EVENT_TYPE, LEDGER_TOPIC, LedgerEvent
from mads.core.store_health import STORAGE_TOPIC, StorageEvent
from mads.mcnamara.rules import SELF, mad_name
from mads.mcnamara.schemas import LlmCallView, SandboxNotice, UrlRefusal

MALFORMED = "audit.malformed_event"
SANDBOX_LIMIT_TYPE = "sandbox.limit"
MAD_LIFECYCLE_TYPE = "mad.lifecycle"
_NOT_AUDITED = frozenset({"events.presence", "events.presence_query"})
_OWN_ANNOUNCEMENTS = frozenset({SECURITY, ALERT})

S, F = AuditOutcome.SUCCESS, AuditOutcome.FAILURE


class EventMapper:
    """Maps an event envelope to an audit event, bounded to ``max_detail_chars`` of details."""

    def __init__(self, *, unaudited_tools: frozenset[str], max_detail_chars: int, redact: Redact) -> None:
        self.redact = redact
        self.unaudited_tools = unaudited_tools
        self.max_detail_chars = max_detail_chars
        self._mappers: dict[str, tuple[type[BaseModel], Callable[[Envelope, BaseModel], AuditEvent | None]]] = {
            TOOL_CALL: (ToolCallEvent, self._tool_call),
            VALIDATION_FAILURE: (ValidationFailure, self._validation_failure),
            LLM_CALL: (LlmCallView, self._llm_call),
            SANDBOX_LIMIT: (SandboxNotice, self._sandbox_limit),
            URL_REFUSED: (UrlRefusal, self._url_refused),
            AUTH: (AuthEvent, self._auth),
            CONFIG_CHANGE: (ConfigChange, self._config_change),
            SECURITY: (SecurityAction, self._security),
            MAD_FAULT: (MadFault, self._mad_fault),
            STORAGE_TOPIC: (StorageEvent, self._storage),
            LEDGER_TOPIC: (LedgerEvent, self._ledger),
        }

    def to_audit_event(self, envelope: Envelope) -> AuditEvent | None:
        """The record for one event, naming whom the work served and the MADs it came through
        (read from the envelope, which the runtime stamps, not from the payload)."""
        event = self._map(envelope)
        if event is None:
            return None
        authority: dict[str, JsonValue] = {"principal": str(envelope.principal), "chain": list(envelope.chain)}
        return event.model_copy(update={"details": {**authority, **event.details}})

    def _map(self, envelope: Envelope) -> AuditEvent | None:
        topic = envelope.recipient
        if topic in _NOT_AUDITED or (topic in _OWN_ANNOUNCEMENTS and mad_name(envelope.sender) == SELF):
            return None
        values = envelope.data()
        payload = values[0] if values else None
        if topic == MAD_LIFECYCLE:
            return self._event(MAD_LIFECYCLE_TYPE, envelope.sender, "lifecycle", S, {"payload": payload})
        entry = self._mappers.get(topic)
        if entry is None:
            return None
        model, mapper = entry
        try:
            parsed = model.model_validate(payload)
        except ValidationError as exc:
            errors: list[JsonValue] = [{"field": f.field, "reason": f.reason} for f in field_errors(exc)[:20]]
            return self._event(MALFORMED, envelope.sender, topic, AuditOutcome.ERROR, {"errors": errors})
        return mapper(envelope, parsed)

    def _event(
        self, event_type: str, actor: str, action: str, outcome: AuditOutcome, details: dict[str, JsonValue]
    ) -> AuditEvent:
        text = canonical_json(details)
        if len(text) > self.max_detail_chars:
            # Redact before cutting: a secret cut in half would no longer be recognised later.
            details = {"truncated": True, "preview": self.redact(text)[: self.max_detail_chars]}
        return AuditEvent(
            event_type=event_type,
            actor=self.redact(actor)[:200],
            action=self.redact(action)[:200],
            outcome=outcome,
            details=details,
        )

    def _tool_call(self, envelope: Envelope, e: BaseModel) -> AuditEvent | None:
        assert isinstance(e, ToolCallEvent)
        if f"{e.mad}.{e.tool}" in self.unaudited_tools:
            return None
        details: dict[str, JsonValue] = {
            "mad": e.mad,
            "tool": e.tool,
            "via_llm": e.via_llm,
            "conversation_id": e.conversation_id,
            "duration_ms": round(e.duration_ms, 3),
        }
        details["caller"] = e.caller
        return self._event(AuditEventType.TOOL_CALL, e.principal, f"{e.mad}.{e.tool}", S if e.ok else F, details)

    def _validation_failure(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, ValidationFailure)
        details: dict[str, JsonValue] = {
            "mad": e.mad,
            "source": e.source,
            "tool": e.tool,
            "detail": self.redact(e.detail)[:500],
            "fields": list(e.fields[:50]),
            "conversation_id": e.conversation_id,
            "attempt": e.attempt,
        }
        return self._event(AuditEventType.VALIDATION_FAILURE, envelope.sender, e.problem, F, details)

    def _llm_call(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, LlmCallView)
        details: dict[str, JsonValue] = {
            "model": e.model,
            "input_tokens": e.input_tokens,
            "output_tokens": e.output_tokens,
            "cost_usd": e.cost_usd,
            "duration_ms": e.duration_ms,
            "error_code": e.error_code,
            "conversation_id": e.conversation_id,
        }
        return self._event(AuditEventType.LLM_CALL, e.caller, e.model, S if e.ok else F, details)

    def _sandbox_limit(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, SandboxNotice)
        event_type = AuditEventType.SANDBOX_VIOLATION if e.violation else SANDBOX_LIMIT_TYPE
        details: dict[str, JsonValue] = e.model_dump(mode="json")
        return self._event(event_type, e.mad or envelope.sender, e.limit or "limit", F, details)

    def _url_refused(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, UrlRefusal)
        details: dict[str, JsonValue] = e.model_dump(mode="json")
        details["url"] = _without_credentials(e.url) if e.url else None
        return self._event(AuditEventType.SANDBOX_VIOLATION, e.mad or envelope.sender, "url_refused", F, details)

    def _auth(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, AuthEvent)
        if e.outcome == "denied":
            event_type, outcome = AuditEventType.AUTH_DENIED, AuditOutcome.DENIED
        else:
            event_type = AuditEventType.AUTH_LOGIN if e.method == "login" else AuditEventType.AUTH_TOKEN_USE
            outcome = S if e.outcome == "success" else F
        details: dict[str, JsonValue] = {
            "ip": str(e.ip),
            "route": e.route,
            "reason": e.reason,
            "principal": e.principal,
            "method": e.method,
            "reported_by": envelope.sender,
        }
        return self._event(event_type, e.principal or "anonymous", e.method, outcome, details)

    def _config_change(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, ConfigChange)
        details: dict[str, JsonValue] = {
            "section": e.section,
            "keys": list(e.keys),
            "summary": e.summary,
            "reported_by": envelope.sender,
        }
        return self._event(AuditEventType.CONFIG_CHANGE, e.actor, f"{e.action} {e.section}", S, details)

    def _security(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, SecurityAction)
        details: dict[str, JsonValue] = e.model_dump(mode="json", exclude_none=True)
        return self._event(f"security.{e.action}", envelope.sender, e.action, S, details)

    def _mad_fault(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        assert isinstance(e, MadFault)
        details: dict[str, JsonValue] = {"envelope_id": e.envelope_id, "tool": e.tool, "mad": e.mad}
        return self._event(AuditEventType.MAD_FAULT, envelope.sender, e.error_type, F, details)

    def _storage(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        """A store's state changed: ``storage.<state>`` (``storage.writable`` carries how many messages were
        refused while it could not write, so the gap is in the trail)."""
        assert isinstance(e, StorageEvent)
        details: dict[str, JsonValue] = {
            "store": e.store,
            "path": e.path,
            "message": e.message,
            "free_bytes": e.free_bytes,
            **e.details,
        }
        outcome = S if e.state in ("writable", "low_space") else F
        return self._event(f"storage.{e.state}", envelope.sender, e.state, outcome, details)

    def _ledger(self, envelope: Envelope, e: BaseModel) -> AuditEvent:
        """What Rogers acknowledged per conversation (count and running hash): checked after a restart.

        Written whole (never cut to ``max_detail_chars``: Rogers sends small chunks), so it stays comparable.
        """
        assert isinstance(e, LedgerEvent)
        details: dict[str, JsonValue] = e.model_dump(mode="json")
        return AuditEvent(
            event_type=LEDGER_EVENT_TYPE, actor=envelope.sender, action="acknowledged", outcome=S, details=details
        )


def _without_credentials(url: str) -> str:
    """The URL without user info, query or fragment: those may carry tokens."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "(unparseable url)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
