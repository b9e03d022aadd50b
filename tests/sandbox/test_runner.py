"""The Sandbox service: validation at the boundary, concurrency, a responsive event loop, lifecycle."""

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from sandbox import LimitMaxima, RunLimits, Sandbox, SandboxStateError
from tests.sandbox.conftest import CompiledCache


async def test_run_returns_output_exit_code_and_fuel(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (result.stdout, result.stderr, result.exit_code, result.limit_hit) == ("out\n", "err\n", 3, None)
    assert result.fuel_used > 0 and result.duration_ms > 0
    assert not result.ok


async def test_python_exception_is_a_result_not_a_host_error(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("x = 1\nraise ValueError('boom')")
    assert result.exit_code == 1
    assert 'File "/code/main.py", line 2' in result.stderr
    assert "    raise ValueError('boom')" in result.stderr  # source lines help whoever fixes the code
    assert result.stderr.rstrip().endswith("ValueError: boom")


async def test_stdlib_and_scientific_stack_are_there(sandbox: Sandbox) -> None:
    code = (
        "import sys, json, re, html.parser, zlib, sqlite3\n"
        "import numpy, pandas, scipy, sklearn, matplotlib, lxml, bs4, openpyxl\n"
        "print(sys.version_info[:2], json.dumps([1]), int(numpy.arange(4).sum()))"
    )
    result = await sandbox.run_python(code, limits=RunLimits(timeout_s=10))
    assert result.stdout == "(3, 15) [1] 6\n", result.stderr


async def test_input_files_and_collected_files(sandbox: Sandbox) -> None:
    code = (
        "data = open('/input/in.bin', 'rb').read()\n"
        "open('copy.bin', 'wb').write(data[::-1])\n"
        "import os\nos.mkdir('sub')\nopen('sub/note.txt', 'w').write('hello')\n"
    )
    result = await sandbox.run_python(code, input_files={"in.bin": b"\x00\xff\x01"}, collect_files=True)
    assert result.ok, result.stderr
    files = {f.path: f for f in result.files}
    assert files["copy.bin"].encoding == "base64" and files["copy.bin"].content == "Af8A"
    assert files["sub/note.txt"].content == "hello"


async def test_collected_files_respect_the_byte_budget(sandbox: Sandbox) -> None:
    code = "open('a.txt', 'w').write('a' * 100)\nopen('b.txt', 'w').write('b' * 100)"
    result = await sandbox.run_python(code, limits=RunLimits(collect_bytes=150), collect_files=True)
    assert [(f.path, len(f.content), f.truncated) for f in result.files] == [
        ("a.txt", 100, False),
        ("b.txt", 50, True),
    ]
    assert result.files_truncated


async def test_scratch_is_fresh_for_every_run(sandbox: Sandbox) -> None:
    await sandbox.run_python("open('left-behind.txt', 'w').write('x')")
    result = await sandbox.run_python("import os\nprint(os.listdir('/'))")
    assert result.stdout == "[]\n"


async def test_limits_above_maximum_are_rejected_naming_the_field(sandbox: Sandbox) -> None:
    with pytest.raises(ValidationError) as caught:
        await sandbox.run_python("print(1)", limits={"timeout_s": 11})
    assert caught.value.errors()[0]["loc"] == ("limits", "timeout_s")
    assert "exceeds the configured maximum 10.0" in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "loc"),
    [
        ({"limits": {"memory_bytes": 1024}}, ("limits", "memory_bytes")),
        ({"limits": {"fuel": 0}}, ("limits", "fuel")),
        ({"limits": {"walltime": 1}}, ("limits", "walltime")),
        ({"input_files": {"../x": b""}}, ("input_files",)),
        ({"input_files": {"big.bin": b"x" * (17 << 20)}}, ("input_files",)),
    ],
)
async def test_bad_requests_are_rejected_naming_the_field(
    sandbox: Sandbox, kwargs: dict[str, object], loc: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        await sandbox.run_python("print(1)", **kwargs)  # type: ignore[arg-type]
    assert caught.value.errors()[0]["loc"] == loc


async def test_code_above_maximum_is_rejected(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path, maxima=LimitMaxima(code_bytes=100))
    await box.start()
    with pytest.raises(ValidationError, match="code"):
        await box.run_python("#" * 101)
    await box.close()


async def test_defaults_are_lowered_to_fit_small_maxima(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path, maxima=LimitMaxima(timeout_s=0.5))
    await box.start()
    result = await box.run_python("while True:\n    pass")
    await box.close()
    assert result.limit_hit == "timeout"


async def test_event_loop_keeps_ticking_during_a_long_run(sandbox: Sandbox) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    result = await sandbox.run_python("while True:\n    pass", limits=RunLimits(timeout_s=1.0))
    done.set()
    await tick_task
    assert result.limit_hit == "timeout"
    assert ticks >= 10  # a blocked loop would have ticked once or twice


async def test_concurrency_limit_is_honoured(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path, max_concurrency=2)
    await box.start()
    samples: list[int] = []
    runs = [
        asyncio.create_task(box.run_python("while True:\n    pass", limits=RunLimits(timeout_s=0.5))) for _ in range(5)
    ]

    async def sample() -> None:
        while not all(run.done() for run in runs):
            samples.append(box.active_runs)
            await asyncio.sleep(0.005)

    await sample()
    results = await asyncio.gather(*runs)
    await box.close()
    assert [r.limit_hit for r in results] == ["timeout"] * 5
    assert max(samples) == 2


async def test_cancelled_caller_keeps_its_slot_until_the_cell_ends(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path, max_concurrency=1)
    await box.start()
    with pytest.raises(TimeoutError):  # wait_for cancels the caller while the cell is still running
        await asyncio.wait_for(box.run_python("while True:\n    pass", limits=RunLimits(timeout_s=0.5)), 0.05)
    assert box.active_runs == 1  # the thread is still running the cell
    follow_up = await box.run_python("print('next')")
    assert follow_up.stdout == "next\n"
    await box.close()


async def test_close_discards_the_pool_and_refuses_new_runs(compiled_cache: CompiledCache) -> None:
    box = Sandbox(compiled_cache.path, pool_size=1)
    await box.start()
    await box.run_python("print(1)")
    await box.close()
    assert box.pool.ready == 0
    with pytest.raises(SandboxStateError, match="closed"):
        await box.run_python("print(1)")


async def test_run_before_start_is_refused(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "cache")
    with pytest.raises(SandboxStateError, match="start"):
        await box.run_python("print(1)")
    await box.close()
