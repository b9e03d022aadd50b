"""McNamara: security operations over the hash-chained audit trail.

Three jobs:

- **record** audit-critical operations synchronously (Turing before it returns a
  secret, the gateway for logins): the caller gets ``{seq, hash}`` only once the
  record is durable, or ``audit_unavailable`` so it can fail closed;
- **audit** what crosses the bus: every ``events.*`` topic except heartbeats
  becomes a trail record (:mod:`mads.mcnamara.events`);
- **enforce**: every appended record goes through the rules
  (:mod:`mads.mcnamara.rules`), which block IPs, quarantine MADs (a delivery gate
  on the bus) and raise alerts. Decisions are announced on ``events.security`` /
  ``events.alert``, written to the trail, and kept in ``security.db`` so they
  survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import get_args

from pydantic import JsonValue

from bus.base import Subscription
from bus.envelope import Envelope
from bus.ids import new_id
from bus.topics import ALERT, SECURITY, SecurityAction, SecurityAlert
from mads.core import names
from mads.core.audit_trail import (
    AuditError,
    AuditEvent,
    AuditOutcome,
    AuditRecord,
    AuditTrail,
    VerifyReport,
)
from mads.core.base import MAD, MadContext, ToolFailure
from mads.core.ledger import LEDGER_EVENT_TYPE, Entry, Ledger, LedgerEvent
from mads.core.quarantine import QuarantineGate
from mads.core.sqlite import fault_detail, storage_fault
from mads.core.store_health import HealthTracker, StorageReport
from mads.core.tools import Call, tool
from mads.mcnamara.events import EventMapper
from mads.mcnamara.rules import RuleName, RulesEngine, Verdict
from mads.mcnamara.schemas import (
    AcknowledgeArgs,
    AlertsArgs,
    BlockedIp,
    BlockStatus,
    ChangeResult,
    IpArgs,
    MadArgs,
    McNamaraConfig,
    NoArgs,
    Quarantined,
    RecordArgs,
    RecordResult,
    TailArgs,
)
from mads.mcnamara.store import SecurityStore

log = logging.getLogger(__name__)

AUDIT_DB = "audit.db"
SECURITY_DB = "security.db"
EVENTS_PATTERN = "events.*"

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class McNamara(MAD[McNamaraConfig]):
    name = names.MCNAMARA
    description = (
        "Security operations: keeps the tamper-evident audit trail, blocks IPs after authentication-failure "
        "bursts, quarantines misbehaving MADs, raises and lists security alerts, and verifies the trail."
    )
    role_prompt = (
        "Answer questions about security using your tools: alerts for open alerts, tail for recent audit "
        "records, verify to check the trail is intact, blocked_ips and quarantined for enforcement state. "
        "Report what the tools return; never invent records."
    )
    config_model = McNamaraConfig
    concurrency = 32

    def __init__(self, ctx: MadContext, *, instance: str | None = None, clock: Clock = _utcnow) -> None:
        super().__init__(ctx, instance=instance)
        self.clock = clock
        self.trail = AuditTrail(
            self.data_dir / AUDIT_DB, busy_timeout_ms=self.config.audit_busy_timeout_ms, redact=self.redactor.redact
        )
        self.store = SecurityStore(self.data_dir / SECURITY_DB)
        self.health = HealthTracker(f"{self.name}/{AUDIT_DB}", self.data_dir / AUDIT_DB)
        """The trail's store as /healthz shows it: unwritable from a failed append until one succeeds."""
        # McNamara's own events (alerts, enforcement) go out through an outbox drained by a task of its own:
        # published from the audit handler, they would wait for room in that handler's own mailbox (events.*)
        # and, under load, deadlock every publisher of events.*.
        self._outbox: asyncio.Queue[tuple[str, JsonValue]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self.rules = RulesEngine(self.config.rules)
        self.mapper = EventMapper(
            unaudited_tools=self.config.unaudited_tools,
            max_detail_chars=self.config.max_detail_chars,
            redact=self.redactor.redact,
        )
        self._quarantine_gate = QuarantineGate()
        self._blocks: dict[str, BlockedIp] = {}
        self._events: Subscription | None = None
        self._act = asyncio.Lock()
        self._progress = asyncio.Condition()
        self.consumed = 0
        """Events handled by the audit consumer so far."""
        self._recent: deque[str] = deque(maxlen=1024)
        self.lost = 0
        """Events that could not be written to the trail (logged; the trail was unavailable)."""

    # ---- lifecycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.trail.open()
        await self.store.open()
        now = self.clock()
        for block in await self.store.blocks():
            if block.until > now:
                self._blocks[block.ip] = block
            else:
                await self.store.remove_block(block.ip)
        for entry in await self.store.quarantines():
            self._quarantine_gate.quarantine(entry.mad)
        await self._restore_cooldowns(now)
        self.bus.add_gate(self._quarantine_gate)
        self._sender = asyncio.create_task(self._send_outbox(), name="mcnamara-outbox")
        self._events = await self.bus.subscribe(
            EVENTS_PATTERN, self._consume, group=f"{self.name}:audit", concurrency=1
        )

    async def on_stop(self) -> None:
        if self._events is not None:
            await self._events.cancel()
            self._events = None
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        self.bus.remove_gate(self._quarantine_gate)
        await self.store.close()
        await self.trail.close()

    async def _restore_cooldowns(self, now: datetime) -> None:
        """Alerts raised shortly before a restart keep their rule quiet for the rest of its cooldown."""
        names: tuple[RuleName, ...] = get_args(RuleName)
        longest = max(getattr(self.config.rules, name).cooldown_s for name in names)
        for rule, subject, fired in await self.store.latest_fired(now - timedelta(seconds=longest)):
            for name in names:
                if rule == name:
                    self.rules.note_fired(name, subject, fired)

    async def wait_consumed(self, envelope_id: str, timeout: float = 5.0) -> None:
        """Wait until the audit consumer has handled the event ``envelope_id`` (events are handled
        in publication order, so every event published before it has been handled too)."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: envelope_id in self._recent)

    # ---- the audit consumer ------------------------------------------------------------

    async def _consume(self, envelope: Envelope) -> None:
        try:
            event = self.mapper.to_audit_event(envelope)
            if event is not None:
                await self._append(event)
        except AuditError as exc:
            self.lost += 1
            log.error("audit record for %s from %s lost: %s", envelope.recipient, envelope.sender, exc)
        finally:
            async with self._progress:
                self.consumed += 1
                self._recent.append(envelope.id)
                self._progress.notify_all()

    async def _append(self, event: AuditEvent) -> AuditRecord:
        """Write one record, then let the rules see it (enforcement never fails the write)."""
        try:
            record = await self.trail.append(event)
        except AuditError as exc:
            cause = exc.__cause__
            detail = fault_detail(cause) if cause is not None else "the trail is not open or its head is missing"
            self.health.failed(f"{storage_fault(cause or exc) or 'write_failed'}: {detail}")
            self.health.health.refused += 1  # records that could not be written (each will be in a gap record)
            raise
        if not self.health.health.writable:
            self.health.recovered()
        try:
            verdict = self.rules.observe(event, self.clock())
            if verdict is not None:
                await self._enforce(verdict)
        except Exception:
            log.exception("enforcing rules after audit record %s failed", record.seq)
        return record

    # ---- enforcement -------------------------------------------------------------------

    async def _enforce(self, verdict: Verdict) -> None:
        async with self._act:
            now = self.clock()
            repeat = verdict.repeat
            if verdict.action == "block_ip" and not repeat:
                await self._block(verdict, now)
            elif verdict.action == "quarantine" and not repeat:
                if self._quarantine_gate.is_quarantined(verdict.subject):
                    repeat = True
                else:
                    await self._quarantine(verdict, now)
            await self._raise_alert(verdict, now, repeat=repeat)

    async def _block(self, verdict: Verdict, now: datetime) -> None:
        try:
            ip = str(ipaddress.ip_address(verdict.subject))
        except ValueError:
            log.warning("not blocking %r: not an IP address", verdict.subject[:64])
            return
        until = verdict.until or now
        block = BlockedIp(ip=ip, until=until, reason=verdict.message)
        self._blocks[ip] = block
        await self.store.put_block(block)
        await self._announce(SecurityAction(action="block_ip", ip=ip, until=until, reason=verdict.message))

    async def _quarantine(self, verdict: Verdict, now: datetime) -> None:
        self._quarantine_gate.quarantine(verdict.subject)
        await self.store.put_quarantine(Quarantined(mad=verdict.subject, since=now, reason=verdict.message))
        await self._announce(SecurityAction(action="quarantine", mad=verdict.subject, reason=verdict.message))

    async def _send_outbox(self) -> None:
        while True:
            topic, value = await self._outbox.get()
            try:
                await self.emit(topic, value)
            except Exception:
                log.exception("mcnamara could not publish %s", topic)

    async def _announce(self, action: SecurityAction, actor: str | None = None) -> None:
        """Audit an enforcement decision, then tell every process about it."""
        await self.trail.append(
            AuditEvent(
                event_type=f"security.{action.action}",
                actor=actor or self.name,
                action=action.action,
                outcome=AuditOutcome.SUCCESS,
                details=action.model_dump(mode="json", exclude_none=True),
            )
        )
        self._outbox.put_nowait((SECURITY, action.model_dump(mode="json")))

    async def _raise_alert(self, verdict: Verdict, now: datetime, *, repeat: bool) -> None:
        if repeat and await self.store.repeat_alert(verdict.rule, verdict.subject, now) is not None:
            return
        alert = SecurityAlert(
            id=new_id(),
            rule=verdict.rule,
            severity=verdict.severity,
            subject=verdict.subject,
            message=verdict.message,
            first_seen=now,
            last_seen=now,
            count=1,
        )
        await self.store.add_alert(alert)
        await self.trail.append(
            AuditEvent(
                event_type="security.alert",
                actor=self.name,
                action=verdict.rule,
                outcome=AuditOutcome.SUCCESS,
                details={
                    "id": alert.id,
                    "severity": alert.severity,
                    "subject": alert.subject,
                    "message": alert.message,
                },
            )
        )
        self._outbox.put_nowait((ALERT, alert.model_dump(mode="json")))

    def _active_blocks(self) -> list[BlockedIp]:
        now = self.clock()
        for ip in [ip for ip, b in self._blocks.items() if b.until <= now]:
            del self._blocks[ip]
        return sorted(self._blocks.values(), key=lambda b: b.until)

    # ---- tools -------------------------------------------------------------------------

    @tool(
        "The latest acknowledged count and hash of every conversation Rogers reported (storage.ledger).", internal=True
    )
    async def ledger(self, args: NoArgs) -> Ledger:
        folded: dict[str, Entry] = {}
        since = 0
        while True:
            records = await self.trail.query(since, [LEDGER_EVENT_TYPE], limit=10_000)
            if not records:
                return Ledger(conversations=folded)
            for record in records:
                with contextlib.suppress(ValueError):
                    entries = {"conversations": record.details.get("conversations")}
                    folded.update(LedgerEvent.model_validate(entries).conversations)
            since = records[-1].seq

    @tool("The audit trail's store: writable, free space, last write error, records lost.", internal=True)
    async def storage(self, args: NoArgs) -> StorageReport:
        return StorageReport(stores=[await asyncio.to_thread(self.health.refresh)])

    @tool("Append one audit record synchronously; returns its seq and hash once durable.", internal=True)
    async def record(self, args: RecordArgs, call: Call) -> RecordResult:
        details = {"principal": str(call.principal), **args.details, "reported_by": call.sender}
        event = AuditEvent(
            event_type=args.event_type,
            actor=args.actor,
            action=args.action,
            outcome=args.outcome,
            details=details,
            hmac_keys=args.hmac_keys,
        )
        try:
            record = await self._append(event)
        except AuditError as exc:
            raise ToolFailure("audit_unavailable", f"the audit trail cannot record: {exc}", retryable=True) from None
        return RecordResult(seq=record.seq, hash=record.hash)

    @tool("Walk the whole hash chain; names the first bad record and why if it was tampered with.")
    async def verify(self, args: NoArgs) -> VerifyReport:
        return await self.trail.verify()

    @tool("The last n audit records, oldest first (sensitive values appear only as HMACs).")
    async def tail(self, args: TailArgs) -> list[JsonValue]:
        return [r.model_dump(mode="json") for r in await self.trail.tail(args.n)]

    @tool("Security alerts, most recent activity first; acknowledged ones only if asked.")
    async def alerts(self, args: AlertsArgs) -> list[JsonValue]:
        found = await self.store.alerts(since=args.since, include_acknowledged=args.include_acknowledged)
        return [a.model_dump(mode="json") for a in found]

    @tool("Mark an alert as handled (operators only).", operator=True)
    async def acknowledge(self, args: AcknowledgeArgs, call: Call) -> SecurityAlert:
        alert = await self.store.acknowledge(args.id)
        if alert is None:
            raise ToolFailure("not_found", f"no alert with id {args.id!r}")
        await self.trail.append(
            AuditEvent(
                event_type="security.acknowledge",
                actor=str(call.principal),
                action="acknowledge",
                outcome=AuditOutcome.SUCCESS,
                details={"id": alert.id, "rule": alert.rule, "subject": alert.subject},
            )
        )
        return alert

    @tool("IP addresses currently blocked, with until when and why.")
    async def blocked_ips(self, args: NoArgs) -> list[JsonValue]:
        return [b.model_dump(mode="json") for b in self._active_blocks()]

    @tool("Whether one IP address is blocked right now.")
    async def is_blocked(self, args: IpArgs) -> BlockStatus:
        ip = str(args.ip)
        block = next((b for b in self._active_blocks() if b.ip == ip), None)
        return BlockStatus(ip=ip, blocked=block is not None, until=block.until if block else None)

    @tool("Lift an IP block before it expires (operators only).", operator=True)
    async def unblock_ip(self, args: IpArgs, call: Call) -> ChangeResult:
        ip = str(args.ip)
        async with self._act:
            was = self._blocks.pop(ip, None) is not None
            await self.store.remove_block(ip)
            self.rules.forget("auth_failures", ip)
            await self._announce(
                SecurityAction(action="unblock_ip", ip=ip, reason="operator"), actor=str(call.principal)
            )
        return ChangeResult(target=ip, changed=was)

    @tool("MADs currently quarantined (their messages are refused).")
    async def quarantined(self, args: NoArgs) -> list[JsonValue]:
        return [q.model_dump(mode="json") for q in await self.store.quarantines()]

    @tool("Release a quarantined MAD so its messages are delivered again (operators only).", operator=True)
    async def release(self, args: MadArgs, call: Call) -> ChangeResult:
        async with self._act:
            was = self._quarantine_gate.is_quarantined(args.mad)
            self._quarantine_gate.release(args.mad)
            await self.store.remove_quarantine(args.mad)
            self.rules.forget("mad_faults", args.mad)
            await self._announce(
                SecurityAction(action="release", mad=args.mad, reason="operator"), actor=str(call.principal)
            )
        return ChangeResult(target=args.mad, changed=was)
