"""The rules engine alone: windows, thresholds, cooldowns and exemptions, with time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from mads.core.audit_trail import AuditEvent
from mads.mcnamara.rules import RulesConfig, RulesEngine, Threshold, mad_name
from mads.mcnamara.schemas import McNamaraConfig

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def auth(ip: str = "198.51.100.9", outcome: str = "failure") -> AuditEvent:
    return AuditEvent(event_type="auth.login", actor="anonymous", action="login", outcome=outcome, details={"ip": ip})


def failure(actor: str, conversation: str = "c1") -> AuditEvent:
    return AuditEvent(
        event_type="validation.failure",
        actor=actor,
        action="bad_json",
        outcome="failure",
        details={"conversation_id": conversation, "principal": "user:alice"},
    )


def fault(actor: str) -> AuditEvent:
    return AuditEvent(event_type="mad.fault", actor=actor, action="RuntimeError", outcome="failure")


def test_auth_burst_blocks_at_threshold_then_repeats_within_cooldown() -> None:
    engine = RulesEngine(RulesConfig())
    assert [engine.observe(auth(), at(i)) for i in range(4)] == [None] * 4
    verdict = engine.observe(auth(), at(4))
    assert verdict is not None
    assert (verdict.rule, verdict.subject, verdict.action, verdict.repeat) == (
        "auth_failures",
        "198.51.100.9",
        "block_ip",
        False,
    )
    assert verdict.until == at(4 + 900)
    again = engine.observe(auth(), at(100))
    assert again is not None and again.repeat
    assert engine.observe(auth(), at(4 + 900)) is None, "after the cooldown a fresh burst is needed"


def test_window_slides_and_subjects_are_separate() -> None:
    engine = RulesEngine(RulesConfig(auth_failures=Threshold(count=3, window_s=10, cooldown_s=60)))
    assert engine.observe(auth(), at(0)) is None
    assert engine.observe(auth(), at(5)) is None
    assert engine.observe(auth(), at(11)) is None, "the first failure left the window"
    assert engine.observe(auth("203.0.113.1"), at(12)) is None
    assert engine.observe(auth(outcome="success"), at(12)) is None
    verdict = engine.observe(auth(), at(14))
    assert verdict is not None and verdict.subject == "198.51.100.9"


def test_denied_counts_success_does_not() -> None:
    engine = RulesEngine(RulesConfig(auth_failures=Threshold(count=2, window_s=10, cooldown_s=60)))
    denied = AuditEvent(
        event_type="auth.denied", actor="alice", action="token", outcome="denied", details={"ip": "10.1.1.1"}
    )
    assert engine.observe(denied, at(0)) is None
    assert engine.observe(auth("10.1.1.1", "success"), at(1)) is None
    assert engine.observe(denied, at(2)) is not None
    no_ip = AuditEvent(event_type="auth.login", actor="a", action="login", outcome="failure")
    assert engine.classify(no_ip) is None


def test_invalid_llm_output_counts_per_conversation_and_only_alerts() -> None:
    engine = RulesEngine(RulesConfig(validation_failures=Threshold(count=2, window_s=60, cooldown_s=60)))
    assert engine.observe(failure("hopper.01JABC"), at(0)) is None
    assert engine.observe(failure("grace", conversation="c2"), at(1)) is None, "another conversation counts apart"
    verdict = engine.observe(failure("grace"), at(2))
    assert verdict is not None
    assert (verdict.rule, verdict.subject, verdict.action) == ("validation_failures", "conversation c1", "alert")


def test_mad_faults_count_per_mad_quarantine_and_exempt_senders() -> None:
    engine = RulesEngine(RulesConfig(mad_faults=Threshold(count=2, window_s=60, cooldown_s=60)))
    assert engine.observe(fault("hopper.01JABC"), at(0)) is None
    verdict = engine.observe(fault("hopper.01JXYZ"), at(1))
    assert verdict is not None and (verdict.subject, verdict.action) == ("hopper", "quarantine")
    for exempt in ("mcnamara", "mcnamara.01JX", "gateway", "user.alice", "bus"):
        assert engine.classify(fault(exempt)) is None, exempt
    assert mad_name("hopper.01J.x") == "hopper"


def test_secret_denials_and_sandbox_violations_alert() -> None:
    engine = RulesEngine(RulesConfig())
    denied = AuditEvent(event_type="secret.denied", actor="hopper", action="read", outcome="denied")
    verdicts = [engine.observe(denied, at(i)) for i in range(3)]
    assert verdicts[:2] == [None, None]
    assert verdicts[2] is not None and (verdicts[2].rule, verdicts[2].action) == ("secret_denials", "alert")
    violation = AuditEvent(event_type="sandbox.violation", actor="marco.01J", action="url_refused", outcome="failure")
    first = engine.observe(violation, at(0))
    assert first is not None and (first.subject, first.severity, first.repeat) == ("marco", "warning", False)


def test_forget_restarts_counting_and_note_fired_restores_cooldown() -> None:
    engine = RulesEngine(RulesConfig(mad_faults=Threshold(count=1, window_s=60, cooldown_s=600)))
    assert engine.observe(fault("hopper"), at(0)) is not None
    repeat = engine.observe(fault("hopper"), at(1))
    assert repeat is not None and repeat.repeat
    engine.forget("mad_faults", "hopper")
    fresh = engine.observe(fault("hopper"), at(2))
    assert fresh is not None and not fresh.repeat
    other = RulesEngine(engine.config)
    other.note_fired("mad_faults", "hopper", at(0))
    restored = other.observe(fault("hopper"), at(10))
    assert restored is not None and restored.repeat


def test_tracked_subjects_are_bounded() -> None:
    engine = RulesEngine(RulesConfig(max_subjects=10))
    for i in range(100):
        engine.observe(auth(f"10.0.0.{i}"), at(i))
    assert len(engine._windows) == 10


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"rules": {"auth_failures": {"count": 0, "window_s": 60, "cooldown_s": 1}}}, "rules.auth_failures.count"),
        ({"rules": {"block_s": -1}}, "rules.block_s"),
        ({"rules": {"typo": 1}}, "rules.typo"),
        ({"operators": "user.*"}, "operators"),
    ],
)
def test_bad_config_names_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        McNamaraConfig.model_validate(values)
    assert ".".join(str(p) for p in err.value.errors()[0]["loc"]) == field
