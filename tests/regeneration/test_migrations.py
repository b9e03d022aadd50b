"""Stored data that changes shape: a migration is required (checked by code) and rehearsed on a copy of the data.

The rehearsal runs Rogers, as the change left it, confined, on a copy of a real Rogers data
directory (made with SQLite's backup API); the original files are compared by checksum.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mads.core import names
from mads.core.workflow import RunLog
from regeneration.gitrepo import git
from regeneration.migrations import shape_check
from regeneration.run import Regeneration
from tests.regeneration.support import OPERATOR, PING, PING_TEST, proposal
from tests.support.llm_server import ScriptedLLM

pytestmark = pytest.mark.slow

ROGERS_PING = {
    "mads/rogers/ping.py": PING.replace("McNamara", "Rogers"),
    "tests/mads/rogers/test_ping.py": PING_TEST.replace("mcnamara", "rogers"),
}
GOOD_MIGRATION = "ALTER TABLE messages ADD COLUMN regen_note TEXT NOT NULL DEFAULT '';\n"
BROKEN_MIGRATION = "ALTER TABLE no_such_table ADD COLUMN regen_note TEXT;\n"
MIGRATION = "mads/rogers/sql/007_regen_note.sql"


async def _commit(repo: Path, files: dict[str, str | None]) -> str:
    for path, content in files.items():
        if content is None:
            (repo / path).unlink()
        else:
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_text(content)
    await git(repo, "add", "-A")
    await git(repo, "commit", "-q", "-m", "change")
    return (await git(repo, "rev-parse", "HEAD")).strip()


async def test_shape_changes_are_read_from_the_diff(ecosystem_source: Path) -> None:
    base = (await git(ecosystem_source, "rev-parse", "HEAD")).strip()
    first = (ecosystem_source / "mads/rogers/sql/001_conversations.sql").read_text()

    edited = await _commit(ecosystem_source, {"mads/rogers/sql/001_conversations.sql": first + "-- tidied\n"})
    check = await shape_check(ecosystem_source, base, edited, names.ROGERS)
    assert [(p.rule, p.path) for p in check.problems] == [("migration_edited", "mads/rogers/sql/001_conversations.sql")]

    ddl = 'SCHEMA = "CREATE TABLE pings (id INTEGER PRIMARY KEY)"\n'
    no_migration = await _commit(
        ecosystem_source, {"mads/rogers/sql/001_conversations.sql": first, "mads/rogers/ping.py": ddl}
    )
    check = await shape_check(ecosystem_source, base, no_migration, names.ROGERS)
    assert [(p.rule, p.path) for p in check.problems] == [("shape_without_migration", "mads/rogers/ping.py")]

    in_code = 'MIGRATIONS = (Migration(1, "pings", "CREATE TABLE pings (id INTEGER PRIMARY KEY)"),)\n'
    code_migration = await _commit(ecosystem_source, {"mads/rogers/ping.py": in_code})
    check = await shape_check(ecosystem_source, base, code_migration, names.ROGERS)
    assert check.problems == [] and check.migrations_added == ["mads/rogers/ping.py: Migration(…)"]

    new_file = await _commit(ecosystem_source, {MIGRATION: GOOD_MIGRATION})
    check = await shape_check(ecosystem_source, code_migration, new_file, names.ROGERS)
    assert check.problems == [] and check.migrations_added == [MIGRATION]
    assert check.ddl_changed == []  # the new migration's own DDL is the migration


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
async def rogers_data(tmp_path: Path) -> Path:
    """A real Rogers data directory: the current Rogers started on it once, and a message stored."""
    data = tmp_path / "ecosystem-data"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "regeneration.rehearse", names.ROGERS, str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    db = sqlite3.connect(data / "rogers" / "conversations.db")
    with db:
        db.execute(
            "INSERT INTO messages (id, sender, recipient, kind, created_at, stored_at, text, envelope)"
            " VALUES ('m1', 'grace', 'rogers', 'event', '2026-01-01', '2026-01-01', 'kept', '{}')"
        )
    db.close()
    for path in (data / "rogers").glob("*.db"):  # closed cleanly: no WAL left over for a reader to fold in
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    assert sorted(p.name for p in (data / "rogers").iterdir()) == ["artifacts.db", "conversations.db"]
    return data


@pytest.fixture
async def with_data(
    regeneration: tuple[Regeneration, RunLog], rogers_data: Path
) -> AsyncIterator[tuple[Regeneration, RunLog]]:
    regen, log = regeneration
    rehearsing = Regeneration(dataclasses.replace(regen.ctx, data_dir=rogers_data))
    try:
        yield rehearsing, log
    finally:
        await rehearsing.engine.close()


def _version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])
    finally:
        conn.close()


async def test_a_good_migration_is_rehearsed_on_a_copy_and_the_data_is_untouched(
    with_data: tuple[Regeneration, RunLog], rogers_data: Path, llm_server: ScriptedLLM
) -> None:
    regen, log = with_data
    before = await asyncio.to_thread(_checksums, rogers_data)
    llm_server.script(proposal({**ROGERS_PING, MIGRATION: GOOD_MIGRATION}, message="Rogers notes"))

    run_id = await regen.start(names.ROGERS, OPERATOR)
    outcome = await regen.wait(run_id)

    assert outcome.state == "awaiting_approval", outcome
    summary = await regen.summary(run_id)
    rehearsal = summary.migration_rehearsal
    assert rehearsal is not None and rehearsal["ok"] is True
    assert sorted(rehearsal["copied"]) == ["rogers/artifacts.db", "rogers/conversations.db"]
    assert rehearsal["checked"]["rogers/conversations.db"] == {"schema_version": 7, "problems": []}
    audited = [e.payload for e in await log.entries(run_id) if e.kind == "regen_migration"]
    assert len(audited) == 1 and audited[0]["ok"] is True
    # The ecosystem's data is as it was: same bytes, still at version 6; the copy left nothing in the worktree.
    assert await asyncio.to_thread(_checksums, rogers_data) == before
    assert _version(rogers_data / "rogers" / "conversations.db") == 6


async def test_a_broken_migration_stops_the_run_before_approval(
    with_data: tuple[Regeneration, RunLog], rogers_data: Path, llm_server: ScriptedLLM, ecosystem_source: Path
) -> None:
    regen, log = with_data
    before = await asyncio.to_thread(_checksums, rogers_data)
    llm_server.script(proposal({**ROGERS_PING, MIGRATION: BROKEN_MIGRATION}, message="Rogers notes"))

    run_id = await regen.start(names.ROGERS, OPERATOR)
    outcome = await regen.wait(run_id)

    assert outcome.status == "failed" and outcome.code == "guard_refused", outcome
    assert "migration rehearsal" in outcome.message and "no such table" in outcome.message
    summary = await regen.summary(run_id)
    assert summary.llm_calls == 1  # stopped, not sent back to the LLM (the reason may hold stored data)
    assert "no such table" in str(summary.failure)
    [audited] = [e.payload for e in await log.entries(run_id) if e.kind == "regen_migration"]
    assert audited["ok"] is False and "no such table" in str(audited["reason"])
    assert await asyncio.to_thread(_checksums, rogers_data) == before
    assert (await git(ecosystem_source, "worktree", "list")).count("\n") == 1


async def test_a_shape_change_without_a_migration_is_refused(
    with_data: tuple[Regeneration, RunLog], llm_server: ScriptedLLM
) -> None:
    regen, _ = with_data
    ddl = ROGERS_PING["mads/rogers/ping.py"] + '\n\nSCHEMA = "CREATE TABLE pings (id INTEGER PRIMARY KEY)"\n'
    first = Path("mads/rogers/sql/001_conversations.sql")
    llm_server.script(
        proposal({**ROGERS_PING, "mads/rogers/ping.py": ddl}),
        proposal({**ROGERS_PING, str(first): "-- simplified\n"}),
        proposal(ROGERS_PING),
    )

    run_id = await regen.start(names.ROGERS, OPERATOR)
    outcome = await regen.wait(run_id)

    assert outcome.state == "awaiting_approval", outcome
    summary = await regen.summary(run_id)
    assert [a["ok"] for a in summary.attempts] == [False, False, True]
    assert "shape_without_migration mads/rogers/ping.py" in str(summary.attempts[0]["reason"])
    assert f"migration_edited {first}" in str(summary.attempts[1]["reason"])
    assert summary.migration_rehearsal is None  # no migration, nothing to rehearse
