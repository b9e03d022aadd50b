"""kill -9 a real process running Rogers: every acknowledged message is on disk afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiosqlite
import pytest

from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.rogers import Rogers
from tests.mads.rogers.support import call

CHILD = Path(__file__).with_name("_durability_child.py")
ROOT = Path(__file__).resolve().parents[3]
ACKS_BEFORE_KILL = 300


@pytest.mark.slow
async def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    conversation_id = "durability"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(tmp_path),
        conversation_id,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    acknowledged: list[str] = []
    try:
        async with asyncio.timeout(120):
            while len(acknowledged) < ACKS_BEFORE_KILL:
                line = await child.stdout.readline()
                if not line:
                    problem = (await child.stderr.read()).decode(errors="replace")
                    pytest.fail(f"child ended after {len(acknowledged)} acks: {problem[-2000:]}")
                acknowledged.append(line.decode().strip())
    finally:
        os.kill(child.pid, signal.SIGKILL)  # mid-flight: the child is still publishing and writing
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    path = tmp_path / "rogers" / "conversations.db"
    assert path.with_name(path.name + "-wal").exists()  # nothing checkpointed it on the way out
    async with aiosqlite.connect(path) as db:
        async with db.execute("PRAGMA integrity_check") as cur:
            assert [row[0] for row in await cur.fetchall()] == ["ok"]
        await db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
        marks = ",".join("?" * len(acknowledged))
        async with db.execute(f"SELECT id FROM messages WHERE id IN ({marks})", acknowledged) as cur:
            present = {row[0] for row in await cur.fetchall()}
        async with db.execute("SELECT count(*) FROM messages WHERE text LIKE 'unacknowledged %'") as cur:
            unacknowledged = (await cur.fetchone())[0]
    assert set(acknowledged) - present == set()
    assert unacknowledged > 0  # the flood was being written when the kill landed

    async with InMemoryBus() as bus:
        rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
        await rogers.start()
        try:
            seen: list[str] = []
            page = await call(bus, "history", {"conversation_id": conversation_id, "limit": 1000})
            seen += [m["id"] for m in page["messages"]]
            while page["next_cursor"]:
                page = await call(
                    bus, "history", {"conversation_id": conversation_id, "limit": 1000, "cursor": page["next_cursor"]}
                )
                seen += [m["id"] for m in page["messages"]]
            assert set(acknowledged) <= set(seen)
            assert seen == sorted(seen) and len(seen) == len(set(seen))
        finally:
            await rogers.stop()
