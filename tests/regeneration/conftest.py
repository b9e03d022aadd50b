"""Fixtures: a git repository holding the ecosystem's current source: what a regeneration branches from.

Built once per session from the files of this checkout (tracked and untracked, not ignored),
so the tests never touch the repository they run from; each test clones it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mads.core import names
from mads.core.workflow import Budget, RunLog
from regeneration.confinement import Confinement
from regeneration.run import Regeneration, RegenerationContext
from regeneration.worktree import WorktreeManager
from tests.regeneration.support import PINNED, ping_tests
from tests.support.ecosystem import Running

ROOT = Path(__file__).resolve().parents[2]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def ecosystem_source_origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    origin = tmp_path_factory.mktemp("ecosystem-source")
    files = _git(ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (origin / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, origin / name)
    _git(origin, "init", "-q", "-b", "main")
    _git(origin, "add", "-A")
    _git(origin, "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", "the running tree")
    return origin


@pytest.fixture
def ecosystem_source(ecosystem_source_origin: Path, tmp_path: Path) -> Path:
    """A clone of the ecosystem's source, on ``main``, owned by this test."""
    clone = tmp_path / "source"
    subprocess.run(["git", "clone", "-q", str(ecosystem_source_origin), str(clone)], check=True)
    _git(clone, "config", "user.name", "test")
    _git(clone, "config", "user.email", "test@localhost")
    return clone


@pytest.fixture
def confinement() -> Confinement:
    return Confinement()


@pytest.fixture
async def regeneration(
    ecosystem: Running, ecosystem_source: Path, tmp_path: Path
) -> AsyncIterator[tuple[Regeneration, RunLog]]:
    grace = ecosystem.host.mads[names.GRACE]

    async def fiedler(tool: str, arguments: dict[str, Any]) -> Any:
        return await grace.call(names.FIEDLER, tool, arguments, timeout=60)

    log = await RunLog.open(tmp_path / "regeneration.db")
    ctx = RegenerationContext(
        source=ecosystem_source,
        worktrees=WorktreeManager(ecosystem_source, tmp_path / "worktrees"),
        confinement=Confinement(),
        log=log,
        fiedler=fiedler,
        model=PINNED,
        budget=Budget(llm_calls=3, wall_s=600),
        python=sys.executable,
        tests=ping_tests,
    )
    regen = Regeneration(ctx)
    try:
        yield regen, log
    finally:
        await regen.engine.close()
        await log.close()
