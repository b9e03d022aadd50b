from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mads.core.workflow import RunLog


@pytest.fixture
async def run_log(tmp_path: Path) -> AsyncIterator[RunLog]:
    log = await RunLog.open(tmp_path / "runs.db")
    try:
        yield log
    finally:
        await log.close()
