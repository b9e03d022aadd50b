"""Stored data that changes shape: a change must bring a migration, and the migration is rehearsed on a copy.

**Shape, checked by code** (``shape_check``) on the diff of ``mads/<mad>/`` between the base and
the change:

- a migration file is ``NNN_name.sql`` (the files ``mads.core.sqlite.load_migrations`` reads); a
  migration in code is a ``Migration(…)`` call (``mads.core.sqlite.Migration``);
- ``migration_edited``: an existing migration file modified, deleted or renamed. Stored data
  already went through it; a shape change is a *new* migration, never an edit of an applied one;
- ``shape_without_migration``: a line of SQL DDL (``CREATE``/``ALTER``/``DROP`` of a table,
  index, view or trigger) added or removed anywhere in the MAD's package while the change adds
  no migration file and no ``Migration(…)`` call.

**Rehearsal** (``rehearse``), when the change adds a migration: every SQLite database under the
ecosystem's ``<data_dir>/<mad>/`` is copied with SQLite's online backup API
(``mads.core.sqlite.backup_file``; the live files are only read) into the run's worktree; only
databases are copied — key files and anything else stay where they are (Turing's vault copy is
therefore sealed). ``python -m regeneration.rehearse`` then runs **confined**: the MAD, as changed,
starts on the copy (its stores apply the new migrations), stops, and every database must pass
``integrity_check``. The copy is removed afterwards, whatever the result. The rehearsal's output
goes to the run's audit and the operator, never back to the LLM (it may hold stored data).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue

from mads.core.sqlite import backup_file, check_file
from regeneration.confinement import Confinement, ConfinementLimits
from regeneration.gitrepo import git
from regeneration.rehearse import databases, schema_version

MIGRATION_FILE = re.compile(r"^\d{3}_[A-Za-z0-9_]+\.sql$")
DDL = re.compile(
    r"\b(CREATE|ALTER|DROP)\s+(TEMP\s+|TEMPORARY\s+|VIRTUAL\s+|UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)\b", re.I
)
CODE_MIGRATION = re.compile(r"\bMigration\(")
REHEARSAL_DIR = ".regen-rehearsal"
"""Where, inside the run's worktree, the copy of the data lives during the rehearsal."""
OUTPUT_CAP = 6000

ShapeRule = Literal["migration_edited", "shape_without_migration"]


class ShapeProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: ShapeRule
    path: str
    detail: str


class ShapeCheck(BaseModel):
    """What the change does to the MAD's stored data's shape."""

    model_config = ConfigDict(extra="forbid")

    migrations_added: list[str]
    """New migration files, and ``path: Migration(…)`` for each migration added in code."""
    ddl_changed: list[str]
    """Files whose SQL DDL lines the change adds or removes."""
    problems: list[ShapeProblem]

    @property
    def refused(self) -> bool:
        return bool(self.problems)


async def shape_check(worktree: Path, base: str, head: str, mad: str) -> ShapeCheck:
    """Read the change's diff under ``mads/<mad>/``: migrations added, DDL changed, and what that breaks."""
    scope = f"mads/{mad}/"
    status = await git(worktree, "diff", "--name-status", "-M", base, head, "--", scope)
    added: list[str] = []
    problems: list[ShapeProblem] = []
    for line in filter(None, status.split("\n")):
        fields = line.split("\t")
        kind, paths = fields[0][0], fields[1:]
        if kind == "A" and MIGRATION_FILE.match(PurePosixPath(paths[-1]).name):
            added.append(paths[-1])
        elif kind in "MDR" and MIGRATION_FILE.match(PurePosixPath(paths[0]).name):
            problems.append(
                ShapeProblem(
                    rule="migration_edited",
                    path=paths[0],
                    detail="stored data already went through this migration; change the shape with a new one",
                )
            )
    ddl: set[str] = set()
    patch = await git(worktree, "diff", "-U0", "--no-color", base, head, "--", scope)
    current = ""
    for line in patch.split("\n"):
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else current
            continue
        if line.startswith("--- "):
            current = line[6:] if line.startswith("--- a/") else current
            continue
        if not line.startswith(("+", "-")) or current in added:
            continue
        if line.startswith("+") and current.endswith(".py") and CODE_MIGRATION.search(line):
            added.append(f"{current}: Migration(…)")
        if DDL.search(line):
            ddl.add(current)
    if ddl and not added:
        problems += [
            ShapeProblem(
                rule="shape_without_migration",
                path=path,
                detail="SQL DDL changed but the change adds no migration (a new NNN_name.sql or Migration(…))",
            )
            for path in sorted(ddl)
        ]
    return ShapeCheck(migrations_added=added, ddl_changed=sorted(ddl), problems=problems)


class Rehearsal(BaseModel):
    """A migration rehearsed on a copy of the stored data."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    copied: list[str]
    """The databases copied (relative to the data directory)."""
    returncode: int | None
    timed_out: bool
    result: dict[str, JsonValue] | None
    """What ``regeneration.rehearse`` printed: started, error, databases (schema_version, problems)."""
    checked: dict[str, dict[str, JsonValue]]
    """Checked again here, outside the sandbox, on the copy it left: path → schema_version, problems."""
    output: str

    def reason(self) -> str:
        if self.timed_out:
            return "the migration rehearsal timed out"
        if self.result is None:
            return f"the migration rehearsal failed (exit {self.returncode}) before reporting"
        if self.result.get("error"):
            return f"the MAD did not start on a copy of its data: {self.result['error']}"
        broken = {path: c["problems"] for path, c in self.checked.items() if c["problems"]}
        if broken:
            return "integrity_check failed on the migrated copy: " + "; ".join(f"{p}: {b}" for p, b in broken.items())
        return "ok" if self.ok else f"the migration rehearsal failed (exit {self.returncode})"


def copy_databases(source: Path, target: Path) -> list[str]:
    """Copy every SQLite database under ``source`` into ``target`` with the backup API (blocking)."""
    copied: list[str] = []
    if not source.is_dir():
        return copied
    for path in databases(source):
        relative = path.relative_to(source)
        backup_file(path, target / relative)
        copied.append(str(relative))
    return copied


async def rehearse(
    confinement: Confinement,
    python: str,
    worktree: Path,
    mad: str,
    data_dir: Path,
    limits: ConfinementLimits,
) -> Rehearsal:
    """Copy ``<data_dir>/<mad>``'s databases into the worktree, start the changed MAD on them confined, check."""
    root = worktree / REHEARSAL_DIR
    await asyncio.to_thread(shutil.rmtree, root, True)
    try:
        copied = await asyncio.to_thread(copy_databases, data_dir / mad, root / mad)
        await asyncio.to_thread((root / mad).mkdir, parents=True, exist_ok=True)
        ran = await confinement.run(
            [python, "-m", "regeneration.rehearse", mad, str(root)], worktree, limits, {"PYTHONPATH": str(worktree)}
        )
        checked = await asyncio.to_thread(_check_copy, root)
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)
    result = None
    for line in reversed(ran.stdout.strip().split("\n")):
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            result = parsed
            break
    return Rehearsal(
        ok=ran.ok and result is not None and not any(c["problems"] for c in checked.values()),
        copied=[f"{mad}/{c}" for c in copied],
        returncode=ran.returncode,
        timed_out=ran.timed_out,
        result=result,
        checked=checked,
        output=(ran.stdout + ran.stderr)[-OUTPUT_CAP:],
    )


def _check_copy(root: Path) -> dict[str, dict[str, JsonValue]]:
    """``integrity_check`` and schema version of every database the rehearsal left (blocking)."""
    return {
        str(p.relative_to(root)): {"schema_version": schema_version(p), "problems": list(check_file(p))}
        for p in databases(root)
    }
