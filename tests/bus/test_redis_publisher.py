"""Publishes made in one event-loop turn share one pipeline (``bus.redis.publisher``).

Each caller must still get its own result or its own error, in the order the calls
were made; a lost connection fails every call of the batch with the connection error
(which ``RedisBus._publish`` retries), and a missing script is loaded on the way.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bus.envelope import CommandPart, DataPart, Envelope, Kind
from bus.redis import RedisBus
from bus.redis.publisher import ScriptBatcher
from tests.bus.redis_server import delete_prefix, free_port, redis_url, unique_prefix

pytestmark = pytest.mark.redis

# RPUSH the argument and answer the list length; 'bad' is refused with a script error.
APPEND = """
if ARGV[2] == 'bad' then return redis.error_reply('refused: ' .. ARGV[2]) end
return redis.call('RPUSH', ARGV[1], ARGV[2])
"""


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url())
    yield redis
    await redis.aclose()


@pytest.fixture
async def key(client: Redis) -> AsyncIterator[str]:
    name = f"test-batcher-{secrets.token_hex(6)}"
    yield name
    await client.delete(name)


async def test_calls_of_one_turn_get_their_own_results_in_call_order(client: Redis, key: str) -> None:
    batcher = ScriptBatcher(client, client.register_script(APPEND))
    values = [str(i) for i in range(50)]
    results = await asyncio.gather(*(batcher.call([key, v]) for v in values))
    assert sorted(results) == list(range(1, 51)), "every call ran exactly once"
    queued = results[1:]  # the first call went out alone, on its own connection: it may land anywhere
    assert queued == sorted(queued), "queued calls run in the order they were made"
    stored = [v.decode() for v in await client.lrange(key, 0, -1)]
    assert sorted(stored, key=int) == values


async def test_a_script_error_fails_only_its_own_call(client: Redis, key: str) -> None:
    batcher = ScriptBatcher(client, client.register_script(APPEND))
    results = await asyncio.gather(*(batcher.call([key, v]) for v in ["a", "b", "bad", "c"]), return_exceptions=True)
    assert isinstance(results[2], ResponseError) and "refused: bad" in str(results[2])
    # The first call goes out alone on its own connection and may land anywhere (see above): compare as sets.
    assert sorted(r for i, r in enumerate(results) if i != 2) == [1, 2, 3]
    assert sorted(await client.lrange(key, 0, -1)) == [b"a", b"b", b"c"]


async def test_a_script_unknown_to_the_server_is_loaded_and_run(client: Redis, key: str) -> None:
    fresh = client.register_script(APPEND + f"-- {secrets.token_hex(8)}\n")  # a text Redis has never seen
    batcher = ScriptBatcher(client, fresh)
    results = await asyncio.gather(*(batcher.call([key, v]) for v in ["x", "y", "z"]))
    assert sorted(results) == [1, 2, 3]
    assert await client.script_exists(fresh.sha) == [True]


async def test_a_lost_connection_fails_every_call_with_the_connection_error() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1.0)
    try:
        batcher = ScriptBatcher(dead, dead.register_script(APPEND))
        results = await asyncio.gather(*(batcher.call(["k", str(i)]) for i in range(5)), return_exceptions=True)
    finally:
        await dead.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in results), results


async def test_a_call_cancelled_before_the_flush_is_never_sent(client: Redis, key: str) -> None:
    batcher = ScriptBatcher(client, client.register_script(APPEND))
    first = asyncio.ensure_future(batcher.call([key, "sent"]))
    second = asyncio.ensure_future(batcher.call([key, "cancelled"]))
    await asyncio.sleep(0)  # both calls are made; the flush of the queued one is still to come
    second.cancel()
    assert await first == 1
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await batcher.call([key, "later"]) == 2
    assert await client.lrange(key, 0, -1) == [b"sent", b"later"]


@pytest.fixture
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[RedisBus]:
    url, prefix = redis_url(), unique_prefix(request.node.name)
    instance = RedisBus(url, prefix=prefix, block=0.2)
    await instance.start()
    yield instance
    await instance.close(drain_timeout=1)
    delete_prefix(url, prefix)


async def test_concurrent_requests_get_their_own_replies_and_no_route_answers(bus: RedisBus) -> None:
    async def echo(envelope: Envelope) -> Envelope:
        part = envelope.content[0]
        assert isinstance(part, CommandPart)
        return envelope.reply(DataPart(value=part.arguments["n"]))

    await bus.subscribe("echo", echo)

    def ask(recipient: str, n: int) -> Envelope:
        command = CommandPart(tool="echo", arguments={"n": n})
        return Envelope(sender="tester", recipient=recipient, kind=Kind.REQUEST, content=[command])

    envelopes = [ask("echo" if n % 3 else "nobody", n) for n in range(60)]
    replies = await asyncio.gather(*(bus.request(e, timeout=10) for e in envelopes))
    for n, (sent, reply) in enumerate(zip(envelopes, replies, strict=True)):
        assert reply.correlation_id == sent.id
        if n % 3:
            assert reply.kind is Kind.REPLY and reply.content[0] == DataPart(value=n)
        else:
            assert reply.kind is Kind.ERROR and reply.error is not None and reply.error.code == "no_route"
