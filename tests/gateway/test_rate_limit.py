"""Token-bucket rate limits: the bucket itself on a test clock, and 429 + Retry-After from the live gateway."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.auth.ratelimit import RateLimiter
from tests.gateway.conftest import GATEWAY_MADS, assert_error
from tests.support.ecosystem import ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=0.5, burst=2, clock=clock)
    assert [limiter.take("a"), limiter.take("a")] == [0, 0]
    assert limiter.take("a") == 2, "one token comes back after 1 / 0.5 = 2 s"
    assert limiter.take("b") == 0, "buckets are per key"
    clock.now += 1.0
    assert limiter.take("a") == 1
    clock.now += 1.0
    assert limiter.take("a") == 0
    clock.now += 3600
    assert [limiter.take("a"), limiter.take("a"), limiter.take("a")] == [0, 0, 2], "never more than the burst"


def test_bucket_count_is_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=ManualClock(), max_buckets=3)
    for key in "abcd":
        limiter.take(key)
    assert limiter.take("a") == 0, "the oldest bucket was dropped, so 'a' starts full again"


async def test_principal_and_ip_limits_answer_429_with_retry_after(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    settings = ecosystem_settings(
        tmp_path,
        llm_server.base_url,
        mads=GATEWAY_MADS,
        gateway={"rate_per_principal": 0.01, "burst_per_principal": 3},
    )
    async with running(settings) as eco:
        clock = ManualClock()
        eco.gateway.auth.per_principal.clock = clock
        for _ in range(3):
            status, _body = await eco.get("/api/mads")
            assert status == 200
        async with eco.http.get(eco.at("/api/mads")) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "100"
            assert response.headers["Content-Security-Policy"]
            limited = await response.json()
            assert_error(limited, "too_many_requests")
            assert limited["error"]["retryable"] is True, "a client may retry after Retry-After seconds"
        clock.now += 100
        async with eco.http.get(eco.at("/metrics")) as response:
            assert response.status == 200, "a token is back after Retry-After seconds"
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            metrics = await response.text()
        hits = [line for line in metrics.splitlines() if line.startswith("mad_gateway_rate_limit_hits")]
        assert any('scope="principal"' in line and line.endswith(" 1") for line in hits), hits
        status, _body = await eco.get("/healthz")
        assert status == 200, "liveness is never rate-limited"


async def test_login_attempts_have_their_own_stricter_bucket(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    settings = ecosystem_settings(
        tmp_path, llm_server.base_url, mads=GATEWAY_MADS, gateway={"login_rate_per_ip": 0.001, "login_burst_per_ip": 2}
    )
    async with running(settings) as eco, aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(eco.at("/api/session"), json={"token": eco.token}) as response:
                assert response.status == 200
        async with http.post(eco.at("/api/session"), json={"token": eco.token}) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "1000"
        status, _body = await eco.get("/api/mads")
        assert status == 200, "the API bucket is separate"


async def test_per_ip_limit(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    settings = ecosystem_settings(
        tmp_path, llm_server.base_url, mads=GATEWAY_MADS, gateway={"rate_per_ip": 0.5, "burst_per_ip": 2}
    )
    async with running(settings) as eco, aiohttp.ClientSession() as http:
        eco.gateway.auth.per_ip.clock = ManualClock()
        statuses = []
        for _ in range(3):
            async with http.get(eco.at("/login")) as response:
                statuses.append((response.status, response.headers.get("Retry-After")))
        assert statuses == [(200, None), (200, None), (429, "2")]
