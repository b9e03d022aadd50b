"""Waiting for a condition in tests, with a deadline (never a bare sleep as synchronisation)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

WAIT = 10.0


async def eventually(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Return once ``predicate()`` is true; fail the test if it is not within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"{what} not reached within {timeout:g}s")
        await asyncio.sleep(0.005)


async def eventually_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float = WAIT, what: str = "condition"
) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        if loop.time() > end:
            raise AssertionError(f"{what} not reached within {timeout:g}s")
        await asyncio.sleep(0.01)
