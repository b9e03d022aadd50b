"""The command line as a person runs it: ``python ecosystem.py …`` in a real child process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository: ``ecosystem.py`` lives here."""


def child_env() -> dict[str, str]:
    """The test's environment without ecosystem overrides or hosted-LLM keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MAD_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


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
