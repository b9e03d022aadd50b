"""Rogers's schema, as versioned migration files ``sql/NNN_name.sql`` run by the runtime's one
migration system (:func:`mads.core.sqlite.migrate`): each in its own transaction with its row in
``schema_migrations``, so a crash leaves the database at a whole version and starting again applies
only what is missing; a database newer than this code is refused rather than misread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from mads.core import names, sqlite
from mads.core.sqlite import Migration, load_migrations, schema_version

SQL_DIR = Path(__file__).with_name("sql")


class MigrationError(Exception):
    """The database cannot be brought to this code's schema."""


MIGRATIONS: tuple[Migration, ...] = load_migrations(SQL_DIR)
"""Read once at import: the files ship with the code and never change while it runs."""

LATEST_VERSION = MIGRATIONS[-1].version


async def current_version(conn: aiosqlite.Connection) -> int:
    return await schema_version(conn)


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the missing migrations in order; return the resulting version."""
    return await sqlite.migrate(conn, migrations, error=MigrationError, label=names.ROGERS)
