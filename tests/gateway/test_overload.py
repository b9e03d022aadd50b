"""Real overload is answered at once with a retryable 503, never by queueing a person without bound."""

from __future__ import annotations

import asyncio

import pytest

from bus.envelope import Envelope, Principal, ProsePart
from bus.memory import InMemoryBus
from gateway.drain import Drain
from gateway.errors import ApiError
from gateway.mad_client import GRACE, MadClient
from tests.support.waiting import eventually

ALICE = Principal(kind="user", name="alice")


async def test_a_full_mailbox_answers_503_backpressure_and_the_queued_work_still_completes() -> None:
    bus = InMemoryBus()
    await bus.start()
    release = asyncio.Event()
    started = 0

    async def stuck(envelope: Envelope) -> Envelope:
        nonlocal started
        started += 1
        await release.wait()  # working, not waiting on I/O: keeps its slot
        return envelope.reply(ProsePart(text="answered"))

    await bus.subscribe(GRACE, stuck, concurrency=1, mailbox=2)
    client = MadClient(bus, Drain(), reply_timeout=30.0)

    def message(text: str) -> Envelope:
        return client.envelope(GRACE, ProsePart(text=text), principal=ALICE, conversation_id="c1", timeout=30.0)

    try:
        queued = [asyncio.create_task(client.send(message(f"m{i}"))) for i in range(3)]
        await eventually(lambda: started == 1 and not bus.has_room(GRACE), what="Grace's mailbox full")
        with pytest.raises(ApiError) as refused:
            await client.send(message("one too many"))
        assert refused.value.status == 503
        assert refused.value.info.code == "backpressure"
        assert refused.value.info.retryable
        assert GRACE in refused.value.info.message
        release.set()
        assert [r.text() for r in await asyncio.gather(*queued)] == ["answered"] * 3
        assert bus.has_room(GRACE)
    finally:
        release.set()
        await bus.close()
