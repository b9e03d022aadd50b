"""Brute force: failed token checks go to McNamara over the bus, McNamara blocks the IP, the gateway refuses it.

The real McNamara runs in the ecosystem; its auth_failures rule (5 in 60 s) decides,
the gateway only follows its ``events.security`` announcements. Alerts show up in the
API and an operator can acknowledge them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp

from bus.envelope import Envelope
from bus.topics import ALERT, AUTH, SECURITY
from tests.gateway.conftest import assert_error
from tests.support.ecosystem import Running

WAIT = 10.0


async def test_auth_failure_burst_gets_the_ip_blocked_and_alerted(ecosystem: Running) -> None:
    bus = ecosystem.host.bus
    auth_events: list[dict[str, Any]] = []
    blocked = asyncio.Event()

    async def on_auth(envelope: Envelope) -> None:
        auth_events.extend(envelope.data())

    async def on_security(envelope: Envelope) -> None:
        if any(v.get("action") == "block_ip" for v in envelope.data()):
            blocked.set()

    await bus.subscribe(AUTH, on_auth, group="test-auth")
    await bus.subscribe(SECURITY, on_security, group="test-security")
    alert_seen = asyncio.Event()

    async def on_alert(envelope: Envelope) -> None:
        alert_seen.set()

    await bus.subscribe(ALERT, on_alert, group="test-alert")

    async with aiohttp.ClientSession() as http:
        for n in range(5):
            bad = {"Authorization": f"Bearer mad_{'x' * 42}{n}"}
            async with http.get(ecosystem.at("/api/conversations"), headers=bad) as response:
                assert response.status in (401, 403)
        await asyncio.wait_for(blocked.wait(), WAIT)
        await asyncio.wait_for(alert_seen.wait(), WAIT)
        async with http.get(ecosystem.at("/login")) as response:
            assert response.status == 403
            error = assert_error(await response.json(), "ip_blocked")
            assert "127.0.0.1" in error["message"] and "until" in error["message"]

    failures = [e for e in auth_events if e["outcome"] == "failure"]
    assert len(failures) >= 5 and all(e["ip"] == "127.0.0.1" and e["method"] == "token" for e in failures)
    assert all("mad_" not in str(e) for e in auth_events), "tokens never appear in events"

    status, body = await ecosystem.get("/api/alerts")
    assert status == 403, "the valid token comes from the blocked IP too"
    blocks = ecosystem.gateway.auth.blocks
    real_clock = blocks.clock
    blocks.clock = lambda: real_clock() + timedelta(seconds=901)
    status, body = await ecosystem.get("/api/alerts")
    assert status == 200, "the block ends at its until (900 s by default)"
    [alert] = body["alerts"]
    assert alert["rule"] == "auth_failures" and alert["subject"] == "127.0.0.1" and not alert["acknowledged"]
    status, acked = await ecosystem.post(f"/api/alerts/{alert['id']}/acknowledge")
    assert status == 200 and acked["acknowledged"] is True
    status, body = await ecosystem.get("/api/alerts")
    assert body == {"alerts": []}


async def test_logins_are_recorded_in_the_audit_trail_and_failures_are_events(ecosystem: Running) -> None:
    mcnamara = ecosystem.host.mads["mcnamara"]
    async with (
        aiohttp.ClientSession() as http,
        http.post(ecosystem.at("/api/session"), json={"token": ecosystem.token}) as response,
    ):
        assert response.status == 200
    records = await mcnamara.trail.tail(50)
    logins = [r for r in records if r.event_type == "auth.login"]
    assert logins and logins[-1].actor == "tester" and logins[-1].details["ip"] == "127.0.0.1"
    creations = [r for r in records if r.event_type == "auth.token_create"]
    assert {r.details["principal"] for r in creations} >= {"admin", "tester"}
    assert ecosystem.token not in str([r.model_dump() for r in records])


async def test_login_fails_when_the_audit_record_cannot_be_written(ecosystem: Running) -> None:
    mcnamara = ecosystem.host.mads["mcnamara"]
    await mcnamara.trail.close()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(ecosystem.at("/api/session"), json={"token": ecosystem.token}) as response:
            assert response.status == 503
            assert_error(await response.json(), "audit_unavailable")
            assert "Set-Cookie" not in response.headers
        async with http.get(ecosystem.at("/api/session")) as response:
            assert response.status == 401, "no session was opened"
