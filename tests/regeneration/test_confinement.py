"""The confined runner: real bubblewrap, real processes, the host's real Redis as the thing not to reach."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from regeneration.confinement import Confinement, ConfinementLimits, ConfinementUnavailable
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    path = tmp_path / "worktree"
    path.mkdir()
    return path


@pytest.fixture
def confinement() -> Confinement:
    return Confinement()


HERE = Path(__file__).resolve()


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_the_command_runs_as_nobody_and_can_write_its_worktree(confinement: Confinement, worktree: Path) -> None:
    result = await confinement.run(
        _python("import os; open('made.txt', 'w').write('hi'); print(os.getuid(), os.getgid(), os.getgroups())"),
        worktree,
    )
    assert result.ok, result.stderr
    assert result.stdout.split() == ["65534", "65534", "[]"]
    assert (worktree / "made.txt").read_text() == "hi"
    # The worktree is handed back to its owner after the run.
    assert (worktree / "made.txt").stat().st_uid == os.getuid()


async def test_a_confined_program_cannot_write_outside_the_worktree(confinement: Confinement, worktree: Path) -> None:
    # A host directory anyone may write to, outside the worktree and outside the private /tmp.
    outside = Path("/var/tmp") / f"confinement-{uuid.uuid4().hex}"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)
    try:
        code = (
            "import sys\n"
            "errors = []\n"
            f"for target in [{str(outside / 'escaped.txt')!r}, {str(HERE)!r}, '/etc/escaped']:\n"
            "    try:\n"
            "        open(target, 'a').write('escaped')\n"
            "        errors.append('WROTE ' + target)\n"
            "    except OSError as e:\n"
            "        errors.append(type(e).__name__)\n"
            "print(errors)\n"
        )
        result = await confinement.run(_python(code), worktree)
        assert result.ok, result.stderr
        assert "WROTE" not in result.stdout
        assert "OSError" in result.stdout or "PermissionError" in result.stdout
        assert list(outside.iterdir()) == []
    finally:
        for leftover in outside.iterdir():
            leftover.unlink()
        outside.rmdir()


async def test_a_confined_program_cannot_reach_the_hosts_redis(confinement: Confinement, worktree: Path) -> None:
    # Redis listens on the host's loopback: reachable from here, so the refusal below means something.
    with socket.create_connection(("127.0.0.1", 6379), timeout=5):
        pass
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 6379), timeout=5)\n"
        "    print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('refused', type(e).__name__)\n"
    )
    result = await confinement.run(_python(code), worktree)
    assert result.ok, result.stderr
    assert result.stdout.startswith("refused"), result.stdout


async def test_a_fork_bomb_stops_at_the_process_limit(confinement: Confinement, worktree: Path) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 10000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(600)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print(n, type(e).__name__)\n"
    )
    result = await confinement.run(_python(code), worktree, ConfinementLimits(processes=32, wall_seconds=60))
    assert result.ok, result.stderr
    forked, error = result.stdout.split()
    assert int(forked) < 32
    assert error == "BlockingIOError"


async def test_the_wall_clock_timeout_kills_every_process_of_the_sandbox(
    confinement: Confinement, worktree: Path
) -> None:
    marker = str(uuid.uuid4().int % 10**9 + 10**9)  # a distinctive sleep length to find the processes by
    result = await confinement.run(
        ["/bin/sh", "-c", f"sleep {marker} & sleep {marker}; echo never"],
        worktree,
        ConfinementLimits(wall_seconds=1),
    )
    assert result.timed_out
    assert result.limit == "wall_time"
    assert result.returncode is None
    assert "never" not in result.stdout

    def _sleepers_gone() -> bool:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return False
                except OSError:
                    continue
        return True

    await eventually(_sleepers_gone, what="every sandboxed process killed")


async def test_cpu_time_is_limited(confinement: Confinement, worktree: Path) -> None:
    result = await confinement.run(_python("while True: pass"), worktree, ConfinementLimits(cpu_seconds=1))
    assert not result.ok
    assert result.limit == "cpu"


async def test_output_is_capped(confinement: Confinement, worktree: Path) -> None:
    result = await confinement.run(
        _python("import sys; sys.stdout.write('x' * 200000)"), worktree, ConfinementLimits(output_bytes=1024)
    )
    assert result.ok
    assert result.stdout == "x" * 1024
    assert result.stdout_truncated


async def test_pytest_runs_inside(confinement: Confinement, worktree: Path) -> None:
    (worktree / "test_sample.py").write_text(
        "def test_green():\n    assert 1 + 1 == 2\n\ndef test_red():\n    assert 1 + 1 == 3\n"
    )
    result = await confinement.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sample.py"], worktree
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout


async def test_without_bubblewrap_nothing_runs(worktree: Path) -> None:
    confinement = Confinement(bwrap=str(worktree / "no-such-bwrap"))
    with pytest.raises(ConfinementUnavailable, match="bubblewrap"):
        await confinement.run(_python("open('ran.txt', 'w')"), worktree)
    assert not (worktree / "ran.txt").exists()


async def test_bubblewrap_not_installed_is_named(worktree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(worktree))
    with pytest.raises(ConfinementUnavailable, match="not installed"):
        await Confinement().run(_python("open('ran.txt', 'w')"), worktree)
    assert not (worktree / "ran.txt").exists()
