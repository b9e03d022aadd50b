"""Start one MAD on a copy of its stored data and check the result — run only inside the confined process.

``python -m regeneration.rehearse MAD DATA_DIR`` starts a host running only ``MAD`` (in-memory
bus, default configuration) on ``DATA_DIR`` — a copy of the ecosystem's data made for this
rehearsal — so the MAD's stores open and apply their pending migrations; then it stops the host
and runs SQLite's ``integrity_check`` on every database under ``DATA_DIR/MAD``. It prints
``{"started": bool, "error": str | null, "databases": [{"path", "schema_version", "problems"}]}``
and exits 0 only when the MAD started and stopped and every database is whole.

The host, and with it the MAD's code (written by an LLM), is imported by name here
(``importlib``), as ``regeneration.describe`` imports a MAD's class: never in the ecosystem's
own process before approval.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from mads.core.settings import EcosystemSection, Settings
from mads.core.sqlite import check_file

SQLITE_HEADER = b"SQLite format 3\x00"


def is_sqlite(path: Path) -> bool:
    """A file that starts with SQLite's header (blocking)."""
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def schema_version(path: Path) -> int | None:
    """The highest version in ``schema_migrations``; ``None`` when the database has no such table."""
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return int(row[0]) if row and row[0] is not None else 0


def databases(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and is_sqlite(p))


async def start_and_stop(mad: str, data_dir: Path) -> None:
    settings = Settings(ecosystem=EcosystemSection(data_dir=data_dir, mads=[mad], freeze_startup_heap=False))
    host = importlib.import_module("mads.host").Host(settings)
    await host.start()
    await host.stop()


def rehearse(mad: str, data_dir: Path) -> dict[str, Any]:
    error = None
    try:
        asyncio.run(start_and_stop(mad, data_dir))
    except Exception as e:  # the reason goes to the run's audit, whatever the MAD's code raised
        error = f"{type(e).__name__}: {e}"[:2000]
    found = [
        {"path": str(p.relative_to(data_dir)), "schema_version": schema_version(p), "problems": check_file(p)}
        for p in databases(data_dir / mad)
    ]
    return {"started": error is None, "error": error, "databases": found}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m regeneration.rehearse MAD DATA_DIR", file=sys.stderr)
        return 2
    result = rehearse(argv[0], Path(argv[1]))
    print(json.dumps(result, sort_keys=True))
    ok = result["started"] and not any(d["problems"] for d in result["databases"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
