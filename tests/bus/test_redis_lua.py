"""The glob translation used by the publish script means inside Redis what fnmatch means in Python."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bus.redis.lua import glob_to_lua
from tests.bus.redis_server import redis_url

pytestmark = pytest.mark.redis

PATTERNS = [
    "events.*",
    "*",
    "stream.?",
    "hopper.[0-9]*",
    "a[!b]c",
    "x-y.*_z",
    "events.[a-c]*",
    "[]]x",
    "100%.x",
    "a(b)",
]
ADDRESSES = [
    "events.validation_failure",
    "events",
    "eventsx",
    "stream.1",
    "stream.12",
    "hopper.01J",
    "hopper.x",
    "abc",
    "axc",
    "x-y.q_z",
    "x-y._z",
    "events.b",
    "events.d",
    "]x",
    "100%.x",
    "a(b)",
    "",
    "EVENTS.x",
]


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url())
    yield client
    await client.aclose()


async def test_glob_translation_matches_fnmatch_inside_redis(raw: Redis) -> None:
    script = raw.register_script("if string.find(ARGV[2], ARGV[1]) then return 1 else return 0 end")
    mismatches = []
    for pattern in PATTERNS:
        lua = glob_to_lua(pattern)
        for address in ADDRESSES:
            expected = fnmatch.fnmatchcase(address, pattern)
            got = await script(keys=[], args=[lua, address]) == 1
            if got != expected:
                mismatches.append((pattern, lua, address, expected))
    assert mismatches == []
