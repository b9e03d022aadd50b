"""Fixtures: a git repository holding the ecosystem's current source: what a regeneration branches from.

Built once per session from the files of this checkout (tracked and untracked, not ignored),
so the tests never touch the repository they run from; each test clones it.
"""

from __future__ import annotations

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
from tests.support.regeneration import clone_source, source_origin


@pytest.fixture(scope="session")
def ecosystem_source_origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_origin(tmp_path_factory.mktemp("ecosystem-source"))


@pytest.fixture
def ecosystem_source(ecosystem_source_origin: Path, tmp_path: Path) -> Path:
    """A clone of the ecosystem's source, on ``main``, owned by this test."""
    return clone_source(ecosystem_source_origin, tmp_path / "source")


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
