"""The bus contract: every transport must pass these, unchanged.

Synchronisation is by events and futures, never by sleeping.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field

from bus.base import Bus, BusClosed, DeadlineExceeded, waiting
from bus.contract import Contract
from bus.envelope import CommandPart, DataPart, Envelope, Kind, Principal, ProsePart, deadline_in

WAIT = 10.0


def req(recipient: str, *parts, deadline: float | None = None, sender: str = "tester") -> Envelope:
    return Envelope(
        sender=sender,
        recipient=recipient,
        kind=Kind.REQUEST,
        content=list(parts) or [ProsePart(text="hello")],
        deadline=deadline_in(deadline) if deadline else None,
    )


def event(topic: str, value: object) -> Envelope:
    return Envelope(sender="tester", recipient=topic, kind=Kind.EVENT, content=[DataPart(value=value)])


async def echo(envelope: Envelope) -> Envelope:
    return envelope.reply(ProsePart(text=f"echo: {envelope.text()}"))


async def eventually(predicate, timeout: float = WAIT) -> None:
    """Wait for a condition driven by the bus's own progress (yields, never sleeps a fixed time)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class SearchArgs(BaseModel):
    model_config = {"extra": "forbid"}
    query: str = Field(min_length=1)
    limit: int = Field(default=10, ge=1, le=100)


async def test_request_reply_round_trip(bus: Bus) -> None:
    await bus.subscribe("echo", echo)
    reply = await bus.request(req("echo", ProsePart(text="hi")), timeout=WAIT)
    assert reply.kind is Kind.REPLY
    assert reply.text() == "echo: hi"
    assert reply.sender == "echo"
    assert reply.recipient == "tester"


async def test_reply_correlates_to_request(bus: Bus) -> None:
    await bus.subscribe("echo", echo)
    requests = [req("echo", ProsePart(text=str(i))) for i in range(20)]
    replies = await asyncio.gather(*(bus.request(r, timeout=WAIT) for r in requests))
    for request, reply in zip(requests, replies, strict=True):
        assert reply.correlation_id == request.id
        assert reply.text() == f"echo: {request.text()}"


async def test_handler_exception_becomes_error_reply_and_bus_survives(bus: Bus) -> None:
    async def broken(envelope: Envelope) -> Envelope:
        if envelope.text() == "boom":
            raise RuntimeError("kaput")
        return envelope.reply(ProsePart(text="fine"))

    await bus.subscribe("fragile", broken)
    reply = await bus.request(req("fragile", ProsePart(text="boom")), timeout=WAIT)
    assert reply.kind is Kind.ERROR
    assert reply.error is not None
    assert reply.error.code == "handler_error"
    assert "RuntimeError" in reply.error.message
    again = await bus.request(req("fragile", ProsePart(text="ok")), timeout=WAIT)
    assert again.text() == "fine"
    assert bus.stats().handler_errors == 1


async def test_unknown_tool_is_rejected_naming_the_field(bus: Bus) -> None:
    calls: list[Envelope] = []

    async def handler(envelope: Envelope) -> Envelope:
        calls.append(envelope)
        return envelope.reply(DataPart(value=1))

    await bus.subscribe("rogers", handler, contract=Contract({"search": SearchArgs}))
    reply = await bus.request(req("rogers", CommandPart(tool="serch", arguments={"query": "x"})), timeout=WAIT)
    assert reply.kind is Kind.ERROR and reply.error is not None
    assert reply.error.code == "unknown_tool"
    assert reply.error.fields[0].field == "content.0.tool"
    assert "search" in reply.error.message
    assert calls == []


async def test_invalid_arguments_are_rejected_naming_field_and_reason(bus: Bus) -> None:
    await bus.subscribe("rogers", echo, contract=Contract({"search": SearchArgs}))
    reply = await bus.request(
        req("rogers", CommandPart(tool="search", arguments={"query": "x", "limit": 0, "colour": "red"})),
        timeout=WAIT,
    )
    assert reply.error is not None and reply.error.code == "invalid_arguments"
    fields = {f.field: f.reason for f in reply.error.fields}
    assert "content.0.arguments.limit" in fields
    assert "greater than or equal to 1" in fields["content.0.arguments.limit"]
    assert "content.0.arguments.colour" in fields
    assert "Extra inputs are not permitted" in fields["content.0.arguments.colour"]
    assert bus.stats().rejected == 1


async def test_prose_refused_when_not_accepted(bus: Bus) -> None:
    await bus.subscribe("tools_only", echo, contract=Contract({"search": SearchArgs}, accepts_prose=False))
    reply = await bus.request(req("tools_only", ProsePart(text="please")), timeout=WAIT)
    assert reply.error is not None and reply.error.code == "part_not_accepted"
    assert reply.error.fields[0].field == "content.0.type"


async def test_valid_command_reaches_handler(bus: Bus) -> None:
    await bus.subscribe("rogers", echo, contract=Contract({"search": SearchArgs}))
    reply = await bus.request(req("rogers", CommandPart(tool="search", arguments={"query": "x"})), timeout=WAIT)
    assert reply.kind is Kind.REPLY


async def test_request_to_nobody_gets_no_route_error(bus: Bus) -> None:
    reply = await bus.request(req("nobody_home"), timeout=WAIT)
    assert reply.kind is Kind.ERROR and reply.error is not None
    assert reply.error.code == "no_route"
    assert "nobody_home" in reply.error.message


async def test_a_handler_still_running_at_the_deadline_is_cancelled(bus: Bus) -> None:
    """The deadline ends the work, not only the wait: the handler is cancelled where it waits."""
    cancelled = asyncio.Event()

    async def slow(envelope: Envelope) -> Envelope:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return envelope.reply(ProsePart(text="never"))

    await bus.subscribe("slow", slow)
    with pytest.raises(DeadlineExceeded):
        await bus.request(req("slow", deadline=0.3), timeout=WAIT)
    await asyncio.wait_for(cancelled.wait(), WAIT)
    await eventually(lambda: bus.stats().expired_requests_dropped >= 1)


async def test_a_reply_that_ignores_its_deadline_is_dropped_and_counted(bus: Bus) -> None:
    """A handler that shields itself from cancellation and answers late: the reply is dropped, not delivered."""
    release = asyncio.Event()
    finished = asyncio.Event()

    async def stubborn(envelope: Envelope) -> Envelope:
        await asyncio.shield(release.wait())
        finished.set()
        return envelope.reply(ProsePart(text="too late"))

    async def slow(envelope: Envelope) -> Envelope:
        try:
            return await stubborn(envelope)
        except asyncio.CancelledError:
            await release.wait()
            finished.set()
            return envelope.reply(ProsePart(text="too late"))

    await bus.subscribe("slow", slow)
    with pytest.raises(DeadlineExceeded):
        await bus.request(req("slow", deadline=0.3), timeout=WAIT)
    release.set()
    await asyncio.wait_for(finished.wait(), WAIT)
    await eventually(lambda: bus.stats().late_replies_dropped >= 1)


async def test_a_handler_that_outlives_its_cancellation_leaves_its_worker_whole(bus: Bus) -> None:
    """The deadline's cancellation is absorbed once, whatever the handler did with it.

    One worker serves a handler that swallows the cancellation and answers late, then one that
    is cut off at its deadline, then a plain request: each ends as it should, and the worker
    still answers (no cancellation left pending to kill it, none taken for its own).
    """
    outcomes: list[str] = []

    async def handler(envelope: Envelope) -> Envelope:
        text = envelope.text()
        if text != "quick":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                outcomes.append(f"{text} cancelled")
                if text == "cut":
                    raise
        return envelope.reply(ProsePart(text=text))

    await bus.subscribe("one", handler, concurrency=1, waiting=0)
    for text in ("stubborn", "cut"):
        with pytest.raises(DeadlineExceeded):
            await bus.request(req("one", ProsePart(text=text), deadline=0.3), timeout=WAIT)
        await eventually(lambda text=text: f"{text} cancelled" in outcomes)
    reply = await bus.request(req("one", ProsePart(text="quick"), deadline=WAIT), timeout=WAIT)
    assert reply.text() == "quick"
    assert outcomes == ["stubborn cancelled", "cut cancelled"]
    await eventually(lambda: bus.stats().late_replies_dropped >= 1 and bus.stats().expired_requests_dropped >= 1)


async def test_cancel_stops_the_handler_and_answers_cancelled(bus: Bus) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def long(envelope: Envelope) -> Envelope:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return envelope.reply(ProsePart(text="never"))

    await bus.subscribe("long", long)
    envelope = req("long", deadline=10 * WAIT)
    pending = asyncio.create_task(bus.request(envelope))
    await asyncio.wait_for(started.wait(), WAIT)
    assert bus.cancel(envelope.id)
    reply = await asyncio.wait_for(pending, WAIT)
    assert reply.error is not None and reply.error.code == "cancelled"
    assert cancelled.is_set()
    assert not bus.cancel(envelope.id)  # nothing left to cancel


async def test_a_requester_that_stops_waiting_cancels_the_work(bus: Bus) -> None:
    """Cancelling the task awaiting ``request()`` (a client gone away) cancels the handler too."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def long(envelope: Envelope) -> Envelope:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return envelope.reply(ProsePart(text="never"))

    await bus.subscribe("long", long)
    pending = asyncio.create_task(bus.request(req("long", deadline=10 * WAIT)))  # only the cancel can end it
    await asyncio.wait_for(started.wait(), WAIT)
    pending.cancel()
    await asyncio.wait_for(cancelled.wait(), WAIT)


async def test_timeout_without_deadline(bus: Bus) -> None:
    release = asyncio.Event()

    async def slow(envelope: Envelope) -> Envelope:
        await release.wait()
        return envelope.reply(ProsePart(text="late"))

    await bus.subscribe("slow", slow)
    with pytest.raises(DeadlineExceeded):
        await bus.request(req("slow"), timeout=0.3)
    release.set()


async def test_expired_request_is_not_delivered(bus: Bus) -> None:
    seen: list[str] = []

    async def handler(envelope: Envelope) -> Envelope:
        seen.append(envelope.text())
        return envelope.reply(ProsePart(text="x"))

    gate = asyncio.Event()
    busy = asyncio.Event()

    async def blocker(envelope: Envelope) -> Envelope:
        if envelope.text() != "first":
            return await handler(envelope)
        busy.set()
        await gate.wait()
        return envelope.reply(ProsePart(text="unblocked"))

    await bus.subscribe("single", blocker, concurrency=1)
    first = asyncio.create_task(bus.request(req("single", ProsePart(text="first")), timeout=WAIT))
    await asyncio.wait_for(busy.wait(), WAIT)
    with pytest.raises(DeadlineExceeded):
        await bus.request(req("single", ProsePart(text="second"), deadline=0.2), timeout=WAIT)
    gate.set()
    assert (await first).text() == "unblocked"
    await eventually(lambda: bus.stats().expired_requests_dropped >= 1)
    assert seen == []


async def test_topic_pattern_fans_out_to_every_listener(bus: Bus) -> None:
    got_a: list[object] = []
    got_b: list[object] = []
    done = asyncio.Event()

    async def listener_a(envelope: Envelope) -> None:
        got_a.append(envelope.data()[0])

    async def listener_b(envelope: Envelope) -> None:
        got_b.append(envelope.data()[0])
        if len(got_b) == 3:
            done.set()

    await bus.subscribe("events.*", listener_a)
    await bus.subscribe("events.validation_failure", listener_b, group="b")
    await bus.publish(event("events.validation_failure", 1))
    await bus.publish(event("events.validation_failure", 2))
    await bus.publish(event("events.validation_failure", 3))
    await asyncio.wait_for(done.wait(), WAIT)
    await eventually(lambda: len(got_a) == 3)
    assert sorted(got_a) == [1, 2, 3]
    assert sorted(got_b) == [1, 2, 3]


async def test_same_group_splits_work(bus: Bus) -> None:
    seen: dict[str, list[int]] = {"one": [], "two": []}

    def worker(label: str):
        async def handle(envelope: Envelope) -> Envelope:
            seen[label].append(int(envelope.text()))
            return envelope.reply(ProsePart(text=label))

        return handle

    await bus.subscribe("pool", worker("one"))
    await bus.subscribe("pool", worker("two"))
    replies = await asyncio.gather(*(bus.request(req("pool", ProsePart(text=str(i))), timeout=WAIT) for i in range(40)))
    assert all(r.kind is Kind.REPLY for r in replies)
    handled = sorted(seen["one"] + seen["two"])
    assert handled == list(range(40)), "every request handled exactly once"


async def test_wiretap_sees_requests_and_replies(bus: Bus) -> None:
    tapped: list[Envelope] = []
    await bus.wiretap(lambda e: _append(tapped, e))
    await bus.subscribe("echo", echo)
    request = req("echo", ProsePart(text="tap me"))
    reply = await bus.request(request, timeout=WAIT)
    await eventually(lambda: any(e.id == reply.id for e in tapped))
    ids = [e.id for e in tapped]
    assert request.id in ids
    assert ids.index(request.id) < ids.index(reply.id)


async def _append(target: list[Envelope], envelope: Envelope) -> None:
    target.append(envelope)


async def test_cancelled_subscription_stops_delivery(bus: Bus) -> None:
    sub = await bus.subscribe("echo", echo)
    assert (await bus.request(req("echo"), timeout=WAIT)).kind is Kind.REPLY
    await sub.cancel()
    reply = await bus.request(req("echo"), timeout=2)
    assert reply.kind is Kind.ERROR and reply.error is not None and reply.error.code == "no_route"


async def test_close_drains_in_flight_work(bus: Bus) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(envelope: Envelope) -> Envelope:
        started.set()
        await release.wait()
        return envelope.reply(ProsePart(text="finished"))

    await bus.subscribe("slow", slow)
    pending = asyncio.create_task(bus.request(req("slow"), timeout=WAIT))
    await asyncio.wait_for(started.wait(), WAIT)
    closing = asyncio.create_task(bus.close(drain_timeout=WAIT))
    await eventually(lambda: _refuses_new_work(bus))
    release.set()
    reply = await asyncio.wait_for(pending, WAIT)
    assert reply.text() == "finished"
    await asyncio.wait_for(closing, WAIT)
    with pytest.raises(BusClosed):
        await bus.publish(event("events.x", 1))


def _refuses_new_work(bus: Bus) -> bool:
    return getattr(bus, "_closing", True)


async def test_gate_refuses_before_any_handler(bus: Bus) -> None:
    from bus.envelope import ErrorInfo

    handled: list[str] = []

    async def handler(envelope: Envelope) -> Envelope:
        handled.append(envelope.sender)
        return envelope.reply(ProsePart(text="ok"))

    def quarantine(envelope: Envelope) -> ErrorInfo | None:
        if envelope.sender == "rogue":
            return ErrorInfo(code="quarantined", message="rogue is quarantined")
        return None

    bus.add_gate(quarantine)
    await bus.subscribe("target", handler)
    refused = await bus.request(req("target", sender="rogue"), timeout=WAIT)
    assert refused.error is not None and refused.error.code == "quarantined"
    accepted = await bus.request(req("target", sender="friend"), timeout=WAIT)
    assert accepted.kind is Kind.REPLY
    bus.remove_gate(quarantine)
    assert (await bus.request(req("target", sender="rogue"), timeout=WAIT)).kind is Kind.REPLY
    assert handled == ["friend", "rogue"]


class BatchRecorder:
    """A batch observer: every call's envelope ids, and the ids of calls that returned."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.returned: list[list[str]] = []
        self.fail_first = fail_first

    async def __call__(self, batch: list[Envelope]) -> None:
        assert isinstance(batch, list) and all(isinstance(e, Envelope) for e in batch)
        ids = [e.id for e in batch]
        self.calls.append(ids)
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("observer failed")
        self.returned.append(ids)

    def seen(self) -> list[str]:
        return [envelope_id for ids in self.returned for envelope_id in ids]


async def test_batch_wiretap_sees_each_envelope_once_in_order(bus: Bus) -> None:
    recorder = BatchRecorder()
    await bus.wiretap_batches(recorder, batch=16)
    await bus.subscribe("events.*", _ignore)
    published = [event("events.batch", i) for i in range(200)]
    for envelope in published:
        await bus.publish(envelope)
    expected = [e.id for e in published]
    await eventually(lambda: len(recorder.seen()) >= len(expected))
    assert recorder.seen() == expected, "every envelope once, in publication order"
    assert all(1 <= len(ids) <= 16 for ids in recorder.returned)


async def test_batch_wiretap_never_waits_to_fill_a_batch(bus: Bus) -> None:
    recorder = BatchRecorder()
    await bus.wiretap_batches(recorder, batch=512)
    lone = event("events.lone", 1)
    await bus.publish(lone)
    await eventually(lambda: bool(recorder.returned))
    assert recorder.returned == [[lone.id]]


async def test_batch_wiretap_redelivers_a_batch_whose_observer_raised(bus: Bus) -> None:
    """A raising observer loses nothing: the batch is delivered again (Redis: once ``reclaim_idle`` has
    passed, possibly after newer envelopes; memory: at once, before them)."""
    recorder = BatchRecorder(fail_first=1)
    await bus.wiretap_batches(recorder, batch=8)
    published = [event("events.retry", i) for i in range(20)]
    for envelope in published:
        await bus.publish(envelope)
    expected = [e.id for e in published]
    await eventually(lambda: set(recorder.seen()) >= set(expected))
    assert sorted(recorder.seen()) == sorted(expected), "each envelope observed successfully exactly once"
    assert len(recorder.calls) == len(recorder.returned) + 1, "exactly one call failed"
    assert set(recorder.calls[0]) <= set(recorder.seen()), "the failed batch was delivered again"


async def test_single_envelope_wiretap_still_sees_everything(bus: Bus) -> None:
    tapped: list[Envelope] = []
    await bus.wiretap(lambda e: _append(tapped, e))
    published = [event("events.single", i) for i in range(30)]
    for envelope in published:
        await bus.publish(envelope)
    await eventually(lambda: len(tapped) >= len(published))
    assert [e.id for e in tapped] == [e.id for e in published]


async def test_batch_wiretap_refuses_a_bad_batch_size(bus: Bus) -> None:
    with pytest.raises(ValueError, match="batch must be at least 1"):
        await bus.wiretap_batches(BatchRecorder(), batch=0)


async def _ignore(envelope: Envelope) -> None:
    return None


async def test_a_reply_must_answer_its_request_for_the_same_principal(bus: Bus) -> None:
    """Replies are checked by the bus: from the request's recipient, for the request's principal."""
    alice = Principal(kind="user", name="alice")

    async def forging(envelope: Envelope) -> Envelope:
        return envelope.reply(ProsePart(text="as root")).model_copy(
            update={"principal": Principal(kind="operator", name="root")}
        )

    async def impersonating(envelope: Envelope) -> Envelope:
        return envelope.reply(ProsePart(text="it is I, turing"), sender="turing")

    await bus.subscribe("forging", forging)
    await bus.subscribe("impersonating", impersonating)
    for target in ("forging", "impersonating"):
        envelope = req(target).model_copy(update={"principal": alice})
        reply = await bus.request(envelope, timeout=WAIT)
        assert reply.error is not None and reply.error.code == "forged_reply", target
        assert reply.principal == alice


# ---- handler slots: working handlers are bounded, waiting ones do not hold a slot ---------------


class Gauge:
    """Handlers under way now and the most seen at once, released together by one event."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.release = asyncio.Event()

    async def hold(self, envelope: Envelope, *, waits: bool) -> Envelope:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            if waits:
                with waiting():
                    await self.release.wait()
            else:
                await self.release.wait()
        finally:
            self.now -= 1
        return envelope.reply(ProsePart(text="done"))


async def test_a_handler_waiting_on_io_frees_its_slot_for_the_next_request(bus: Bus) -> None:
    gauge = Gauge()

    async def handler(envelope: Envelope) -> Envelope:
        return await gauge.hold(envelope, waits=True)

    await bus.subscribe("slow", handler, concurrency=2)
    replies = [asyncio.create_task(bus.request(req("slow"), timeout=WAIT)) for _ in range(12)]
    await eventually(lambda: gauge.now == 12)
    gauge.release.set()
    assert [r.text() for r in await asyncio.gather(*replies)] == ["done"] * 12


async def test_a_handler_that_does_not_say_it_waits_keeps_its_slot(bus: Bus) -> None:
    gauge = Gauge()

    async def handler(envelope: Envelope) -> Envelope:
        return await gauge.hold(envelope, waits=False)

    await bus.subscribe("busy", handler, concurrency=2)
    replies = [asyncio.create_task(bus.request(req("busy"), timeout=WAIT)) for _ in range(6)]
    await eventually(lambda: gauge.now == 2)
    await _settle(bus)
    assert gauge.now == 2 and gauge.peak == 2
    gauge.release.set()
    assert len(await asyncio.gather(*replies)) == 6
    assert gauge.peak == 2


async def test_waiting_handlers_are_bounded_too(bus: Bus) -> None:
    gauge = Gauge()

    async def handler(envelope: Envelope) -> Envelope:
        return await gauge.hold(envelope, waits=True)

    await bus.subscribe("bounded", handler, concurrency=2, waiting=3)
    replies = [asyncio.create_task(bus.request(req("bounded"), timeout=WAIT)) for _ in range(10)]
    await eventually(lambda: gauge.now == 5)
    await _settle(bus)
    assert gauge.peak == 5
    gauge.release.set()
    assert len(await asyncio.gather(*replies)) == 10
    assert gauge.peak == 5


async def test_one_handler_waiting_on_several_things_counts_once(bus: Bus) -> None:
    gauge = Gauge()
    started = asyncio.Event()

    async def fan_out(envelope: Envelope) -> Envelope:
        async def wait_one() -> None:
            with waiting(), waiting():
                await gauge.release.wait()

        started.set()
        await asyncio.gather(*(wait_one() for _ in range(5)))
        return envelope.reply(ProsePart(text="fanned"))

    await bus.subscribe("fan", fan_out, concurrency=1, waiting=1)
    first = asyncio.create_task(bus.request(req("fan"), timeout=WAIT))
    await started.wait()
    started.clear()
    # One waiting handler with five waits used one waiting place: a second request still starts ...
    second = asyncio.create_task(bus.request(req("fan"), timeout=WAIT))
    await started.wait()
    started.clear()
    # ... but it takes the only working slot (the waiting bound is reached), so a third must queue.
    third = asyncio.create_task(bus.request(req("fan"), timeout=WAIT))
    await _settle(bus)
    assert not started.is_set()
    gauge.release.set()
    assert [r.text() for r in await asyncio.gather(first, second, third)] == ["fanned"] * 3


async def _settle(bus: Bus) -> None:
    """Let every delivery the bus can make now happen: a round trip through a fresh echo subscription."""
    sub = await bus.subscribe("settle-echo", echo)
    for _ in range(3):
        await bus.request(req("settle-echo"), timeout=WAIT)
    await sub.cancel()
