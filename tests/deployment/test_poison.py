"""A request whose handler kills its process every time it runs (real processes, real SIGKILL).

After ``max_deliveries`` crashes the entry is dead-lettered, and the caller — waiting in another
process with a long deadline — is answered at once with a typed ``dead_lettered`` error instead of
waiting the deadline out (issue 9, item 15).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bus.envelope import Envelope, Kind, ProsePart
from bus.redis import RedisBus
from bus.redis.settings import split_url
from tests.deployment.conftest import Namespace
from tests.deployment.support import FAST_BUS, REPO, START_TIMEOUT, child_env

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WAIT = 30.0
DEADLINE = 600.0
"""The caller's deadline: far beyond the test, so only the dead-letter answer can end its wait."""


async def run_worker(url: str, address: str) -> asyncio.subprocess.Process:
    """Start a crashing worker and wait until it has subscribed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.deployment.crashing_worker",
        url,
        address,
        cwd=REPO,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(START_TIMEOUT):
        assert (await process.stdout.readline()).decode().strip() == "ready"
    return process


async def test_a_request_that_keeps_killing_its_process_answers_its_caller_dead_lettered(
    crash_ns: Namespace, tmp_path: Path
) -> None:
    url = crash_ns.url(**FAST_BUS, max_deliveries="2")
    connection, settings = split_url(url)
    caller = RedisBus(connection, **settings)
    await caller.start()
    workers: list[asyncio.subprocess.Process] = []
    try:
        workers.append(await run_worker(url, "fragile"))
        request = Envelope(sender="tester", recipient="fragile", kind=Kind.REQUEST, content=[ProsePart(text="boom")])
        pending = asyncio.create_task(caller.request(request, timeout=DEADLINE))
        for _ in range(2):  # the first worker gets the request, the second reclaims it; both die handling it
            async with asyncio.timeout(WAIT):
                assert await workers[-1].wait() == -9
            if len(workers) < 2:
                workers.append(await run_worker(url, "fragile"))
        survivor = await run_worker(url, "fragile")  # finds it delivered twice: dead-letters it, never runs it
        workers.append(survivor)
        async with asyncio.timeout(WAIT):
            answer = await pending
        assert answer.kind is Kind.ERROR and answer.error is not None, answer
        assert answer.error.code == "dead_lettered" and not answer.error.retryable
        assert "delivered 2 times without being acknowledged" in answer.error.message
        assert answer.correlation_id == request.id and answer.recipient == "tester"
        assert survivor.returncode is None, "the survivor never ran the poison request"
        [letter] = await caller.dead_letters()
        assert letter.stream == f"{crash_ns.prefix}:s:fragile" and request.id in letter.payload
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        await caller.close(drain_timeout=1)
