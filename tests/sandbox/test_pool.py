"""Prepared cells: each used for one program only, refilled in the background while the event loop serves."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from sandbox import LimitMaxima, RunLimits, Sandbox
from tests.sandbox.conftest import CompiledCache


@pytest.fixture
async def pooled(compiled_cache: CompiledCache) -> AsyncIterator[Sandbox]:
    box = Sandbox(compiled_cache.path, maxima=LimitMaxima(timeout_s=10), pool_size=2, pool_cpu_share=1.0)
    await box.start()
    yield box
    await box.close()


async def test_a_cell_never_serves_a_second_program(pooled: Sandbox) -> None:
    await pooled.pool.wait_full()
    first = await pooled.run_python("import builtins, sys\nbuiltins.leak = 'secret'\nsys.modules['leaky'] = sys")
    second = await pooled.run_python("import builtins, sys\nprint(hasattr(builtins, 'leak'), 'leaky' in sys.modules)")
    assert first.ok and second.stdout == "False False\n"


async def test_the_pool_refills_after_each_take(pooled: Sandbox) -> None:
    await pooled.pool.wait_full()
    prepared = pooled.pool.prepared
    for _ in range(3):
        assert (await pooled.run_python("print(1)")).stdout == "1\n"
    await pooled.pool.wait_full()
    assert pooled.pool.ready == 2
    assert pooled.pool.prepared > prepared  # a request that finds the pool empty prepares its own cell


async def test_the_event_loop_keeps_serving_while_the_pool_refills(pooled: Sandbox) -> None:
    await pooled.pool.wait_full()
    await asyncio.gather(*(pooled.run_python("print(1)") for _ in range(2)))
    assert pooled.pool.ready < 2
    turns = 0
    refill = asyncio.ensure_future(pooled.pool.wait_full())
    while not refill.done():
        await asyncio.sleep(0)
        turns += 1
    assert turns > 10  # other coroutines ran all along: preparation happens in worker threads


async def test_a_request_of_another_shape_prepares_its_own_cell(pooled: Sandbox) -> None:
    await pooled.pool.wait_full()
    result = await pooled.run_python("print(1)", limits=RunLimits(memory_bytes=96 << 20))
    assert result.stdout == "1\n"
    assert pooled.pool.ready == 2  # the pool's cells were not used


async def test_closing_discards_prepared_cells(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path, pool_size=2)
    await box.start()
    await box.pool.wait_full()
    await box.close()
    assert box.pool.ready == 0
