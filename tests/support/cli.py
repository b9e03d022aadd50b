"""The command line as a person runs it: ``python ecosystem.py …`` in a real child process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository: ``ecosystem.py`` lives here."""


async def run_cli(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run ``ecosystem.py *args`` and return its exit code, stdout and stderr (text)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "ecosystem.py"),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
