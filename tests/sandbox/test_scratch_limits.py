"""Issue 9, items 8-12: deep directory chains, open files, the scratch quota, cleanup inside the deadline,
input-file names and fuel_used after a timeout. Each ends in a typed RunResult and leaves the host untouched."""

import os

import pytest
from pydantic import ValidationError

from sandbox import RunLimits, Sandbox
from tests.support.waiting import eventually

LIMITS = RunLimits(timeout_s=8.0, fuel=50_000_000_000, output_bytes=8192)


async def test_a_deep_directory_chain_is_cleaned_without_recursion(sandbox: Sandbox) -> None:
    code = (
        "import os\n"
        "for depth in range(1100):\n"
        "    os.mkdir('d')\n"
        "    os.chdir('d')\n"
        "open('bottom.txt', 'w').write('deep')\n"
        "print(len(os.getcwd().split('/')) - 1)\n"
    )
    result = await sandbox.run_python(code, limits=LIMITS)
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.stdout == "1100\n"
    await eventually(lambda: sandbox.active_runs == 0, what="slot released")


async def test_a_big_file_in_a_deep_chain_hits_the_scratch_quota(sandbox: Sandbox) -> None:
    code = (
        "import os\n"
        "os.makedirs('/'.join(['d'] * 300))\n"
        "with open('/'.join(['d'] * 300 + ['big.bin']), 'wb') as f:\n"
        "    for _ in range(100):\n"
        "        f.write(bytes(1 << 20))\n"
    )
    limits = LIMITS.model_copy(update={"scratch_bytes": 16 << 20})
    result = await sandbox.run_python(code, limits=limits)
    assert result.limit_hit == "scratch", result
    assert result.exit_code == 1
    await eventually(lambda: sandbox.active_runs == 0, what="slot released")


async def test_scratch_bytes_quota_is_enforced_across_files(sandbox: Sandbox) -> None:
    code = (
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        with open(f'f{n}', 'wb') as f:\n"
        "            f.write(bytes(1 << 20))\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print(n, exc.strerror)\n"
    )
    limits = LIMITS.model_copy(update={"scratch_bytes": 5 << 20})
    result = await sandbox.run_python(code, limits=limits)
    assert result.stdout == "5 Quota exceeded\n", result
    assert result.limit_hit == "scratch"


async def test_scratch_files_quota_is_enforced(sandbox: Sandbox) -> None:
    code = (
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        open(f'f{n}', 'w').close()\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print(n, exc.strerror)\n"
    )
    limits = LIMITS.model_copy(update={"scratch_files": 50})
    result = await sandbox.run_python(code, limits=limits)
    assert result.stdout == "50 Quota exceeded\n", result
    assert result.limit_hit == "scratch"


async def test_many_files_until_the_deadline_release_the_slot_at_return(sandbox: Sandbox) -> None:
    code = "import os\nn = 0\nwhile True:\n    open(f'f{n}', 'w').close()\n    n += 1\n"
    limits = LIMITS.model_copy(update={"timeout_s": 2.0, "scratch_files": 10_000, "fuel": 10**11})
    result = await sandbox.run_python(code, limits=limits)
    assert result.limit_hit in {"timeout", "scratch"}
    # The slot is released by the run's own worker right after its in-memory cleanup, with no further work.
    await eventually(lambda: sandbox.active_runs == 0, what="slot released")


async def test_open_files_are_capped_per_cell(sandbox: Sandbox) -> None:
    cap = sandbox.maxima.open_files
    host_before = len(os.listdir("/proc/self/fd"))
    code = (
        "import os\n"
        "held = []\n"
        "try:\n"
        "    for _ in range(100000):\n"
        "        held.append(os.open('/input/x', os.O_RDONLY))\n"
        "except OSError as exc:\n"
        "    import errno\n"
        "    print(len(held), errno.errorcode[exc.errno])\n"
    )
    result = await sandbox.run_python(code, limits=LIMITS, input_files={"x": "x"})
    count, _, reason = result.stdout.strip().partition(" ")
    assert reason == "EMFILE", result
    assert 0 < int(count) <= cap
    await eventually(lambda: sandbox.active_runs == 0, what="cell discarded")
    assert len(os.listdir("/proc/self/fd")) <= host_before + 8  # the host's descriptors came back


@pytest.mark.parametrize("name", ["a\n", "a\r", "a\nb", "\n", "a/b", "..", ".hidden"])
async def test_input_file_names_must_be_plain_without_newlines(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(ValidationError, match="input_files"):
        await sandbox.run_python("print(1)", input_files={name: "x"})


async def test_fuel_used_is_not_reported_after_a_timeout(sandbox: Sandbox) -> None:
    limits = LIMITS.model_copy(update={"timeout_s": 0.5})
    result = await sandbox.run_python("while True:\n    pass", limits=limits)
    assert result.limit_hit == "timeout"
    assert result.fuel_used is None  # wasmtime does not bring the fuel count up to date at an epoch interrupt


async def test_fuel_used_is_counted_when_the_program_ends(sandbox: Sandbox) -> None:
    small = await sandbox.run_python("x = 0\nfor i in range(10_000):\n    x += i", limits=LIMITS)
    large = await sandbox.run_python("x = 0\nfor i in range(1_000_000):\n    x += i", limits=LIMITS)
    assert small.fuel_used is not None and large.fuel_used is not None
    assert 0 < small.fuel_used < large.fuel_used
