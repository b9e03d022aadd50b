"""kill -9 in the middle of a run, then a new process: the run finishes, completed side effects are not repeated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[4]


async def spawn(directory: Path, mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.mads.core.workflow.crash_worker", str(directory), mode, cwd=ROOT
    )


@pytest.mark.slow
async def test_kill_9_mid_run_then_restart_finishes_without_repeating_side_effects(tmp_path: Path) -> None:
    first = await spawn(tmp_path, "start")
    await eventually(lambda: (tmp_path / "blocked").exists(), timeout=60, what="the engineer's step to start")
    os.kill(first.pid, signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL

    second = await spawn(tmp_path, "resume")
    assert await second.wait() == 0
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert (outcome["status"], outcome["state"], outcome["succeeded"]) == ("finished", "done", True)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    # The planner's completed call is reused; the engineer's call that was cut off is asked again.
    assert calls == ["plan:0", "code:0", "code:0"]
    effects = (tmp_path / "effects.txt").read_text().splitlines()
    assert effects == ["record:plan:0", "record:code:1", "guard:1", "record:code:1", "release:finished"]
