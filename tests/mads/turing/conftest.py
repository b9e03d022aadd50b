"""Fixtures: real Vaults on SQLite files under tmp_path, with a cheap KDF so tests stay quick."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mads.core.redaction import SecretRedactor
from mads.turing.barrier import Argon2idParams
from mads.turing.policy import Capability, Policy, PolicyRule
from mads.turing.store import Vault

PASSPHRASE = "correct horse battery staple"
FAST_KDF = Argon2idParams(iterations=1, lanes=1, memory_cost_kib=1024)
ALL = frozenset(Capability)
OPEN_POLICY = Policy(rules=(PolicyRule(principal="tester", paths=("**",), capabilities=ALL),))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "turing" / "vault.db"


@pytest.fixture
def redactor() -> SecretRedactor:
    return SecretRedactor()


@pytest.fixture
async def vault(db_path: Path, redactor: SecretRedactor) -> AsyncIterator[Vault]:
    v = Vault(db_path, policy=OPEN_POLICY, kdf=FAST_KDF, redactor=redactor)
    await v.open()
    await v.initialize(passphrase=PASSPHRASE)
    yield v
    await v.close()


def db_files_bytes(db: Path) -> bytes:
    """The database file plus its -wal/-shm siblings, as they are on disk right now."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.iterdir()) if p.name.startswith(db.name))
