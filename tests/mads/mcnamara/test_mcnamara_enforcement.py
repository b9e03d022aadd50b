"""Each rule end to end: real events over a real InMemoryBus into a real McNamara on real SQLite."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from bus.envelope import SYSTEM, CommandPart, Envelope, Kind, deadline_in
from bus.ids import new_id
from bus.topics import (
    AUTH,
    MAD_FAULT,
    SANDBOX_LIMIT,
    URL_REFUSED,
    VALIDATION_FAILURE,
    AuthEvent,
    MadFault,
    ValidationFailure,
)
from mads.core.base import MAD, MadContext, RemoteError
from mads.core.quarantine import QuarantineGate
from mads.core.tools import tool
from tests.mads.mcnamara.conftest import OPERATOR, PERSON, Harness

IP = "203.0.113.7"


def auth_failure(ip: str = IP) -> dict[str, object]:
    return AuthEvent(outcome="failure", ip=ip, reason="bad password", route="/login").model_dump(mode="json")


class PingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Echo(MAD):
    """A plain MAD other MADs call; it must stop hearing from a quarantined one."""

    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "answers ping"

    @tool("answer pong")
    async def ping(self, args: PingArgs) -> str:
        return "pong"


class Probe(Echo):
    name: ClassVar[str] = "probe"
    description: ClassVar[str] = "a MAD whose LLM keeps producing invalid tool calls"


def denial(actor: str = "hopper") -> dict[str, object]:
    return {
        "event_type": "secret.denied",
        "actor": actor,
        "action": "read",
        "outcome": "denied",
        "details": {"path": "providers/openai"},
    }


async def test_auth_failure_burst_blocks_the_ip(harness: Harness) -> None:
    for _ in range(4):
        await harness.publish(AUTH, auth_failure(), sender="gateway")
    await harness.publish(AUTH, auth_failure("198.51.100.1"), sender="gateway")
    await harness.fence()
    assert await harness.result("blocked_ips") == []
    await harness.publish(AUTH, auth_failure(), sender="gateway")
    (block,) = await harness.security.wait_for(lambda v: len(v) >= 1)
    assert block["action"] == "block_ip" and block["ip"] == IP and block["reason"]
    assert block["until"] == "2030-01-01T00:15:00Z"
    (listed,) = await harness.result("blocked_ips")  # type: ignore[misc]
    assert listed["ip"] == IP
    assert (await harness.result("is_blocked", {"ip": IP}))["blocked"] is True  # type: ignore[index]
    assert (await harness.result("is_blocked", {"ip": "198.51.100.1"}))["blocked"] is False  # type: ignore[index]
    alerts = await harness.result("alerts")
    assert [(a["rule"], a["subject"]) for a in alerts] == [("auth_failures", IP)]  # type: ignore[union-attr,index]

    harness.clock.advance(901)
    assert await harness.result("blocked_ips") == [], "blocks expire on their own"


async def test_unblock_is_for_operators_and_announced(harness: Harness) -> None:
    for _ in range(5):
        await harness.publish(AUTH, auth_failure(), sender="gateway")
    await harness.security.wait_for(lambda v: len(v) == 1)
    refused = await harness.call("unblock_ip", {"ip": IP}, sender="hopper", principal=PERSON)
    assert refused.error is not None and refused.error.code == "forbidden", "a MAD working for a plain user"
    refused = await harness.call("unblock_ip", {"ip": IP}, sender="hopper", principal=SYSTEM)
    assert refused.error is not None and refused.error.code == "forbidden", "no MAD is an operator by itself"
    assert await harness.result("unblock_ip", {"ip": IP}) == {"target": IP, "changed": True}
    await harness.security.wait_for(lambda v: len(v) == 2)
    assert harness.security.values[1]["action"] == "unblock_ip"
    assert (await harness.result("is_blocked", {"ip": IP}))["blocked"] is False  # type: ignore[index]
    bad = await harness.call("is_blocked", {"ip": "not-an-ip"})
    assert bad.error is not None and bad.error.code == "invalid_arguments"
    assert [f.field for f in bad.error.fields] == ["content.0.arguments.ip"]


async def test_auth_failures_recorded_synchronously_count_too(harness: Harness) -> None:
    for _ in range(5):
        await harness.result(
            "record",
            {
                "event_type": "auth.login",
                "actor": "mallory",
                "action": "login",
                "outcome": "failure",
                "details": {"ip": "2001:db8::1"},
            },
            sender="gateway",
        )
    assert (await harness.result("is_blocked", {"ip": "2001:db8::1"}))["blocked"] is True  # type: ignore[index]


async def test_secret_denial_burst_alerts_once_then_counts(harness: Harness) -> None:
    for _ in range(3):
        await harness.result("record", denial(), sender="turing")
    (alert,) = await harness.alerts.wait_for(lambda v: len(v) >= 1)
    assert (alert["rule"], alert["subject"], alert["severity"], alert["count"]) == (
        "secret_denials",
        "hopper",
        "high",
        1,
    )
    for _ in range(2):
        await harness.result("record", denial(), sender="turing")
    await harness.settle_alerts()
    assert len(harness.alerts.values) == 1, "within the cooldown repeats do not raise a second alert"
    (stored,) = await harness.result("alerts")  # type: ignore[misc]
    assert stored["id"] == alert["id"] and stored["count"] == 3

    harness.clock.advance(601)
    for _ in range(3):
        await harness.result("record", denial(), sender="turing")
    await harness.alerts.wait_for(lambda v: len(v) == 2)


async def test_invalid_llm_output_raises_an_alert_about_the_conversation_and_quarantines_nobody(
    harness: Harness,
) -> None:
    """What an LLM says cannot take a MAD away from everyone else: it counts against its conversation."""
    ctx = MadContext(bus=harness.bus, data_dir=harness.data_dir)
    echo, probe = Echo(ctx), Probe(ctx, instance=new_id())
    await echo.start()
    await probe.start()
    try:
        failure = ValidationFailure(mad="probe", problem="bad_json", detail="not JSON", conversation_id="c-bad")
        for _ in range(5):
            await probe.emit(VALIDATION_FAILURE, failure.model_dump(mode="json"), conversation_id="c-bad")
        await harness.fence()
        (alert,) = await harness.result("alerts")  # type: ignore[misc]
        assert (alert["rule"], alert["severity"], alert["subject"]) == (
            "validation_failures",
            "warning",
            "conversation c-bad",
        )
        assert await harness.result("quarantined") == []
        assert harness.security.values == []
        assert await probe.call("echo", "ping") == "pong"
    finally:
        await probe.stop()
        await echo.stop()


async def test_a_mad_whose_own_code_keeps_failing_is_quarantined_until_an_operator_releases_it(
    harness: Harness,
) -> None:
    ctx = MadContext(bus=harness.bus, data_dir=harness.data_dir)
    echo, probe = Echo(ctx), Probe(ctx, instance=new_id())
    await echo.start()
    await probe.start()
    try:
        assert await probe.call("echo", "ping") == "pong"
        for _ in range(5):
            fault = MadFault(mad="probe", error_type="ZeroDivisionError", envelope_id=new_id())
            await probe.emit(MAD_FAULT, fault.model_dump(mode="json"))
        (action,) = await harness.security.wait_for(lambda v: len(v) >= 1)
        assert action == {"action": "quarantine", "ip": None, "mad": "probe", "until": None, "reason": action["reason"]}

        try:
            await probe.call("echo", "ping")
            raise AssertionError("a quarantined MAD's request was delivered")
        except RemoteError as exc:
            assert exc.error.code == "quarantined"
        try:
            await probe.call("mcnamara", "release", {"mad": "probe"})
            raise AssertionError("a quarantined MAD released itself")
        except RemoteError as exc:
            assert exc.error.code == "quarantined"
        assert await harness.bus.request(_ping_from("user.alice")) is not None
        assert [q["mad"] for q in await harness.result("quarantined")] == ["probe"]  # type: ignore[index,union-attr]
        (alert,) = await harness.result("alerts")  # type: ignore[misc]
        assert (alert["rule"], alert["severity"]) == ("mad_faults", "critical")

        refused = await harness.call("release", {"mad": "probe"}, sender="user.alice", principal=PERSON)
        assert refused.error is not None and refused.error.code == "forbidden", "a plain user cannot release"
        assert await harness.result("release", {"mad": "probe"}, sender=OPERATOR) == {
            "target": "probe",
            "changed": True,
        }
        await harness.security.wait_for(lambda v: len(v) == 2)
        assert harness.security.values[1]["action"] == "release"
        assert await probe.call("echo", "ping") == "pong"
    finally:
        await probe.stop()
        await echo.stop()


def _ping_from(sender: str) -> Envelope:
    return Envelope(
        sender=sender,
        recipient="echo",
        kind=Kind.REQUEST,
        deadline=deadline_in(5),
        content=[CommandPart(tool="ping")],
    )


def fault(mad: str = "probe") -> dict[str, object]:
    return MadFault(mad=mad, error_type="RuntimeError", envelope_id=new_id()).model_dump(mode="json")


async def test_quarantine_survives_restart(harness: Harness) -> None:
    for _ in range(5):
        await harness.publish(MAD_FAULT, fault(), sender="probe.01JAAAAAAAAAAAAAAAAAAAAAAA")
    await harness.security.wait_for(lambda v: len(v) == 1)
    await harness.stop()
    await harness.start()
    gate = harness.m._quarantine_gate
    refusal = gate(_ping_from("probe.01JBBBBBBBBBBBBBBBBBBBBBBB"))
    assert refusal is not None and refusal.code == "quarantined"
    assert gate(_ping_from("echo")) is None


async def test_exempt_senders_are_never_quarantined(harness: Harness) -> None:
    for sender in ("gateway", "mcnamara", "user.alice"):
        for _ in range(6):
            await harness.publish(MAD_FAULT, fault(sender.split(".")[0]), sender=sender)
    await harness.fence()
    assert await harness.result("quarantined") == []
    assert harness.security.values == []


async def test_sandbox_violations_alert_and_plain_limits_do_not(harness: Harness) -> None:
    await harness.publish(SANDBOX_LIMIT, {"mad": "marco", "limit": "fuel", "violation": False}, sender="marco")
    await harness.fence()
    assert await harness.result("alerts") == []
    await harness.publish(SANDBOX_LIMIT, {"mad": "marco", "limit": "fs_write", "violation": True}, sender="marco")
    (alert,) = await harness.alerts.wait_for(lambda v: len(v) >= 1)
    assert (alert["rule"], alert["subject"], alert["severity"]) == ("sandbox_violations", "marco", "warning")
    await harness.publish(URL_REFUSED, {"mad": "marco", "url": "http://10.0.0.1/x", "reason": "private"}, "marco")
    await harness.fence()
    (stored,) = await harness.result("alerts")  # type: ignore[misc]
    assert stored["count"] == 2


async def test_alerts_and_cooldowns_survive_restart_and_acknowledge(harness: Harness) -> None:
    for _ in range(3):
        await harness.result("record", denial("marco"), sender="turing")
    (alert,) = await harness.alerts.wait_for(lambda v: len(v) == 1)
    await harness.stop()
    await harness.start()
    (stored,) = await harness.result("alerts")  # type: ignore[misc]
    assert stored == alert
    for _ in range(3):
        await harness.result("record", denial("marco"), sender="turing")
    await harness.settle_alerts()
    assert len(harness.alerts.values) == 1, "the cooldown was restored from the stored alert"
    assert (await harness.result("alerts"))[0]["count"] == 4  # type: ignore[index]

    refused = await harness.call("acknowledge", {"id": alert["id"]}, sender="hopper", principal=PERSON)
    assert refused.error is not None and refused.error.code == "forbidden"
    acked = await harness.result("acknowledge", {"id": alert["id"]})
    assert acked["acknowledged"] is True  # type: ignore[index]
    assert await harness.result("alerts") == []
    assert len(await harness.result("alerts", {"include_acknowledged": True})) == 1  # type: ignore[arg-type]
    missing = await harness.call("acknowledge", {"id": "nope"})
    assert missing.error is not None and missing.error.code == "not_found"


async def test_a_following_gate_learns_quarantine_from_announcements(harness: Harness) -> None:
    for _ in range(5):
        await harness.publish(MAD_FAULT, fault(), sender="probe")
    await harness.security.wait_for(lambda v: len(v) == 1)
    late = QuarantineGate()
    await late.follow(harness.bus)
    early = QuarantineGate()
    try:
        assert late.quarantined == {"probe"}, "a gate started later asks McNamara at start"
        await early.follow(harness.bus)
        await harness.result("release", {"mad": "probe"})
        await harness.security.wait_for(lambda v: len(v) == 2)
        await harness.publish("events.security", {"action": "quarantine", "mad": "echo"}, sender="hopper")
        await harness.fence()
        assert late.quarantined == frozenset() and early.quarantined == frozenset()
    finally:
        await late.stop()
        await early.stop()
