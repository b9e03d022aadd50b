"""Security rules over audit events: sliding-window thresholds with cooldowns.

Pure and clock-free: every call takes ``now``, so tests drive time instead of
sleeping and the engine never blocks. The engine only *decides* (a
:class:`Verdict`); McNamara carries the decision out (block, quarantine, alert).

Rules, each a :class:`Threshold` in :class:`RulesConfig`:

- ``auth_failures``: failed or denied ``auth.*`` events from one IP → block the IP;
- ``secret_denials``: ``secret.denied`` events for one actor → alert;
- ``validation_failures``: ``validation.failure`` events from one MAD → quarantine it;
- ``sandbox_violations``: ``sandbox.violation`` events from one MAD → alert;
- ``storage_faults``: a store that cannot write, is damaged or lost acknowledged messages
  (``storage.unwritable``/``damaged``/``lost``) → a critical alert naming the file.

Once a rule fires for a subject, further matches within its cooldown are
*repeats* (the alert's count goes up; nothing new is enforced).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mads.core import names
from mads.core.audit_trail import AuditEvent, AuditEventType, AuditOutcome

RuleName = Literal[
    "auth_failures", "secret_denials", "validation_failures", "mad_faults", "sandbox_violations", "storage_faults"
]
Severity = Literal["info", "warning", "high", "critical"]
VerdictAction = Literal["block_ip", "quarantine", "alert"]

SELF = names.MCNAMARA
"""McNamara never quarantines itself: it would lock out the one MAD that can release."""


class Threshold(BaseModel):
    """Fire when ``count`` matching events arrive within ``window_s``; then stay quiet for ``cooldown_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, le=100_000)
    window_s: float = Field(gt=0, le=7 * 86_400)
    cooldown_s: float = Field(ge=0, le=30 * 86_400)


class RulesConfig(BaseModel):
    """The thresholds of every rule (McNamara's ``[mcnamara.rules]`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth_failures: Threshold = Threshold(count=5, window_s=60, cooldown_s=900)
    block_s: float = Field(default=900, gt=0, le=30 * 86_400, description="how long a burst's IP stays blocked")
    secret_denials: Threshold = Threshold(count=3, window_s=60, cooldown_s=600)
    validation_failures: Threshold = Threshold(count=5, window_s=60, cooldown_s=600)
    """An LLM's invalid outputs in one conversation: an alert about that conversation, never a quarantine —
    what an LLM says must not take a MAD away from everyone else."""
    mad_faults: Threshold = Threshold(count=5, window_s=60, cooldown_s=600)
    """A MAD's own handler crashing (its code, not an LLM's output): quarantine the MAD."""
    sandbox_violations: Threshold = Threshold(count=1, window_s=60, cooldown_s=300)
    storage_faults: Threshold = Threshold(count=1, window_s=60, cooldown_s=300)
    """One storage fault is enough: a store that cannot write refuses messages until someone acts."""
    never_quarantine: frozenset[str] = Field(
        default=frozenset({"gateway", "user", "bus", "directory"}),
        description="MAD names (the part of a sender address before the first dot) never quarantined",
    )
    max_subjects: int = Field(default=10_000, ge=10, le=10_000_000, description="tracked (rule, subject) pairs")


class Verdict(BaseModel):
    """What a rule decided about one event."""

    model_config = ConfigDict(frozen=True)

    rule: RuleName
    subject: str
    action: VerdictAction
    severity: Severity
    message: str
    repeat: bool
    """True within the cooldown after the rule fired: count it, enforce nothing new."""
    until: datetime | None = None


_ACTIONS: dict[RuleName, tuple[VerdictAction, Severity]] = {
    "auth_failures": ("block_ip", "high"),
    "secret_denials": ("alert", "high"),
    "validation_failures": ("alert", "warning"),
    "mad_faults": ("quarantine", "critical"),
    "sandbox_violations": ("alert", "warning"),
    "storage_faults": ("alert", "critical"),
}
_STORAGE_FAULTS = frozenset({"storage.unwritable", "storage.damaged", "storage.lost"})

_AUTH_TYPES = frozenset({AuditEventType.AUTH_LOGIN, AuditEventType.AUTH_TOKEN_USE, AuditEventType.AUTH_DENIED})


def mad_name(address: str) -> str:
    """The MAD a bus address belongs to: ``hopper.01J…`` → ``hopper``."""
    return address.split(".", 1)[0]


class RulesEngine:
    """Sliding windows and cooldowns per (rule, subject), bounded by ``max_subjects``."""

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        self._windows: OrderedDict[tuple[RuleName, str], deque[datetime]] = OrderedDict()
        self._fired: OrderedDict[tuple[RuleName, str], datetime] = OrderedDict()

    def classify(self, event: AuditEvent) -> tuple[RuleName, str] | None:
        """Which rule an event counts toward, and for which subject (IP, actor or MAD)."""
        kind = event.event_type
        if kind in _AUTH_TYPES and event.outcome in (AuditOutcome.FAILURE, AuditOutcome.DENIED):
            ip = event.details.get("ip")
            return ("auth_failures", ip) if isinstance(ip, str) and ip else None
        if kind == AuditEventType.SECRET_DENIED:
            return "secret_denials", event.actor
        if kind == AuditEventType.VALIDATION_FAILURE:
            conversation = event.details.get("conversation_id")
            principal = event.details.get("principal")
            subject = conversation if isinstance(conversation, str) and conversation else principal
            return ("validation_failures", f"conversation {subject}") if isinstance(subject, str) and subject else None
        if kind == AuditEventType.MAD_FAULT:
            mad = mad_name(event.actor)
            if mad == SELF or mad in self.config.never_quarantine:
                return None
            return "mad_faults", mad
        if kind == AuditEventType.SANDBOX_VIOLATION:
            return "sandbox_violations", mad_name(event.actor)
        if kind in _STORAGE_FAULTS:
            path = event.details.get("path")
            return ("storage_faults", f"{path} ({kind.removeprefix('storage.')})") if isinstance(path, str) else None
        return None

    def observe(self, event: AuditEvent, now: datetime) -> Verdict | None:
        """Count one event at time ``now``; a verdict when a rule fires or repeats."""
        found = self.classify(event)
        if found is None:
            return None
        rule, subject = found
        threshold: Threshold = getattr(self.config, rule)
        key = (rule, subject)
        fired = self._fired.get(key)
        if fired is not None:
            if now - fired < timedelta(seconds=threshold.cooldown_s):
                self._fired.move_to_end(key)
                return self._verdict(rule, subject, threshold, now, repeat=True)
            del self._fired[key]
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque()
        self._windows.move_to_end(key)
        horizon = now - timedelta(seconds=threshold.window_s)
        while window and window[0] <= horizon:
            window.popleft()
        window.append(now)
        self._evict()
        if len(window) < threshold.count:
            return None
        del self._windows[key]
        self.note_fired(rule, subject, now)
        return self._verdict(rule, subject, threshold, now, repeat=False)

    def note_fired(self, rule: RuleName, subject: str, at: datetime) -> None:
        """Start a cooldown (also used to restore cooldowns from stored alerts after a restart)."""
        self._fired[(rule, subject)] = at
        self._fired.move_to_end((rule, subject))
        self._evict()

    def forget(self, rule: RuleName, subject: str) -> None:
        """Drop the window and cooldown (an operator released the MAD or unblocked the IP)."""
        self._windows.pop((rule, subject), None)
        self._fired.pop((rule, subject), None)

    def _evict(self) -> None:
        for table in (self._windows, self._fired):
            while len(table) > self.config.max_subjects:
                table.popitem(last=False)

    def _verdict(self, rule: RuleName, subject: str, threshold: Threshold, now: datetime, *, repeat: bool) -> Verdict:
        action, severity = _ACTIONS[rule]
        until = now + timedelta(seconds=self.config.block_s) if action == "block_ip" else None
        messages = {
            "auth_failures": f"{threshold.count} failed authentications from {subject} within {threshold.window_s:g}s",
            "secret_denials": f"{threshold.count} secret denials for {subject} within {threshold.window_s:g}s",
            "validation_failures": (
                f"{threshold.count} invalid LLM outputs in {subject} within {threshold.window_s:g}s"
            ),
            "mad_faults": f"MAD {subject} crashed {threshold.count} times within {threshold.window_s:g}s",
            "sandbox_violations": f"sandbox violation by {subject}",
            "storage_faults": f"storage fault: {subject}",
        }
        return Verdict(
            rule=rule,
            subject=subject,
            action=action,
            severity=severity,
            message=messages[rule],
            repeat=repeat,
            until=until,
        )
