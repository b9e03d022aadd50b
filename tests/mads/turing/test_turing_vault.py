"""Vault behaviour end to end on a real SQLite file: seal state, KV v2 semantics, persistence."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mads.core.redaction import SecretRedactor
from mads.turing.barrier import (
    AlreadyInitializedError,
    NotInitializedError,
    ScryptParams,
    SealedError,
    TuringError,
    UnsealError,
)
from mads.turing.policy import AccessDenied, Policy
from mads.turing.store import (
    SCHEMA_VERSION,
    CASMismatchError,
    SecretDeletedError,
    SecretDestroyedError,
    SecretNotFoundError,
    Vault,
    VaultClosedError,
)

from .conftest import FAST_KDF, OPEN_POLICY, PASSPHRASE, db_files_bytes


async def test_fresh_vault_is_uninitialized_and_sealed(db_path: Path) -> None:
    async with Vault(db_path, policy=OPEN_POLICY, kdf=FAST_KDF) as v:
        st = v.status()
        assert (st.initialized, st.sealed, st.key_term, st.schema_version) == (False, True, None, SCHEMA_VERSION)
        with pytest.raises(NotInitializedError):
            await v.unseal(passphrase=PASSPHRASE)
        with pytest.raises(SealedError, match="sealed"):
            await v.put("tester", "a/b", "some-value")


async def test_sealed_vault_refuses_every_operation(vault: Vault) -> None:
    await vault.put("tester", "a/b", "value-one")
    vault.seal()
    assert vault.sealed and vault.status().key_term is None
    ops = [
        vault.put("tester", "a/b", "value-two"),
        vault.get("tester", "a/b"),
        vault.list("tester", ""),
        vault.versions("tester", "a/b"),
        vault.delete("tester", "a/b"),
        vault.undelete("tester", "a/b", [1]),
        vault.destroy("tester", "a/b", [1]),
        vault.rotate(),
        vault.rekey(new_passphrase="another long passphrase"),
    ]
    for op in ops:
        with pytest.raises(SealedError, match="unseal it before"):
            await op
    await vault.unseal(passphrase=PASSPHRASE)
    assert (await vault.get("tester", "a/b")).value.get_secret_value() == "value-one"


async def test_wrong_passphrase_does_not_unseal(vault: Vault) -> None:
    vault.seal()
    with pytest.raises(UnsealError, match="wrong passphrase or key file"):
        await vault.unseal(passphrase="not the passphrase at all")
    assert vault.sealed


async def test_initialize_twice_is_refused(vault: Vault) -> None:
    with pytest.raises(AlreadyInitializedError):
        await vault.initialize(passphrase=PASSPHRASE)


async def test_short_passphrase_and_both_credentials_rejected(db_path: Path) -> None:
    async with Vault(db_path, kdf=FAST_KDF) as v:
        with pytest.raises(ValueError, match="passphrase must be at least 12"):
            await v.initialize(passphrase="short")
        with pytest.raises(ValueError, match="exactly one of passphrase or key_file"):
            await v.initialize(passphrase=PASSPHRASE, key_file=db_path.parent / "k")
        assert not v.status().initialized


async def test_data_survives_reopen(db_path: Path, vault: Vault) -> None:
    await vault.put("tester", "providers/openai", "sk-live-123456")
    await vault.rotate()
    await vault.close()
    async with Vault(db_path, policy=OPEN_POLICY, kdf=FAST_KDF) as again:
        assert again.sealed and again.status().initialized
        await again.unseal(passphrase=PASSPHRASE)
        assert again.status().key_term == 2
        assert (await again.get("tester", "providers/openai")).value.get_secret_value() == "sk-live-123456"


async def test_cas_semantics(vault: Vault) -> None:
    assert await vault.put("tester", "cfg/x", "first-value", cas=0) == 1
    with pytest.raises(CASMismatchError, match="cas=0 requires that 'cfg/x' does not exist"):
        await vault.put("tester", "cfg/x", "clobber-value", cas=0)
    assert await vault.put("tester", "cfg/x", "second-value", cas=1) == 2
    with pytest.raises(CASMismatchError, match="cas=1 does not match current version 2"):
        await vault.put("tester", "cfg/x", "stale-value", cas=1)
    with pytest.raises(ValueError, match="cas must be an integer >= 0"):
        await vault.put("tester", "cfg/x", "bad-cas-value", cas=-1)
    got = await vault.get("tester", "cfg/x")
    assert (got.version, got.value.get_secret_value()) == (2, "second-value")
    assert await vault.put("tester", "cfg/x", "third-value") == 3


async def test_concurrent_writes_get_distinct_versions(vault: Vault) -> None:
    versions = await asyncio.gather(*(vault.put("tester", "race/x", f"value-{i:04d}") for i in range(20)))
    assert sorted(versions) == list(range(1, 21))
    meta = await vault.versions("tester", "race/x")
    assert meta.current_version == 20 and meta.oldest_version == 11


async def test_read_specific_and_missing_versions(vault: Vault) -> None:
    for i in range(3):
        await vault.put("tester", "v/x", f"value-number-{i}")
    assert (await vault.get("tester", "v/x", version=2)).value.get_secret_value() == "value-number-1"
    with pytest.raises(SecretNotFoundError, match="'v/x' has no version 9"):
        await vault.get("tester", "v/x", version=9)
    with pytest.raises(SecretNotFoundError, match="no secret at 'v/nope'"):
        await vault.get("tester", "v/nope")
    with pytest.raises(ValueError, match="version must be an integer >= 1"):
        await vault.get("tester", "v/x", version=0)


async def test_max_versions_prunes_oldest(db_path: Path) -> None:
    async with Vault(db_path, policy=OPEN_POLICY, kdf=FAST_KDF, max_versions=3) as v:
        await v.initialize(passphrase=PASSPHRASE)
        for i in range(5):
            await v.put("tester", "p/x", f"value-number-{i}")
        meta = await v.versions("tester", "p/x")
        assert [x.version for x in meta.versions] == [3, 4, 5]
        assert (meta.current_version, meta.oldest_version, meta.max_versions) == (5, 3, 3)
        with pytest.raises(SecretNotFoundError):
            await v.get("tester", "p/x", version=1)


async def test_delete_undelete_destroy(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "d/x", "version-one-canary")
    await vault.put("tester", "d/x", "version-two-canary")
    assert await vault.delete("tester", "d/x") == [2]
    with pytest.raises(SecretDeletedError, match="version 2 of 'd/x' is deleted"):
        await vault.get("tester", "d/x")
    assert (await vault.get("tester", "d/x", version=1)).value.get_secret_value() == "version-one-canary"
    assert await vault.delete("tester", "d/x", [2]) == []
    assert await vault.undelete("tester", "d/x", [2]) == [2]
    assert (await vault.get("tester", "d/x")).value.get_secret_value() == "version-two-canary"

    with sqlite3.connect(db_path) as raw:
        (blob,) = raw.execute("SELECT value FROM secret_versions WHERE path='d/x' AND version=1").fetchone()
    assert await vault.destroy("tester", "d/x", [1]) == [1]
    with pytest.raises(SecretDestroyedError, match="version 1 of 'd/x' was destroyed"):
        await vault.get("tester", "d/x", version=1)
    assert await vault.undelete("tester", "d/x", [1]) == []
    meta = await vault.versions("tester", "d/x")
    assert [(x.version, x.destroyed, x.deletion_time is None) for x in meta.versions] == [
        (1, True, True),
        (2, False, True),
    ]
    on_disk = db_files_bytes(db_path)
    assert blob not in on_disk, "destroyed ciphertext must be erased from the database files"
    with pytest.raises(SecretNotFoundError, match=r"has no version\(s\) \[7\]"):
        await vault.destroy("tester", "d/x", [7])
    with pytest.raises(ValueError, match="versions must be a non-empty list"):
        await vault.destroy("tester", "d/x", [])


async def test_list_by_prefix(vault: Vault) -> None:
    for p in ("providers/openai", "providers/anthropic", "providers/deep/x", "gateway/signing"):
        await vault.put("tester", p, "some-secret-value")
    assert await vault.list("tester", "providers/") == ["providers/anthropic", "providers/deep/x", "providers/openai"]
    assert await vault.list("tester", "") == [
        "gateway/signing",
        "providers/anthropic",
        "providers/deep/x",
        "providers/openai",
    ]
    assert await vault.list("tester", "nothing/") == []


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "trailing/", "../up", "a/../b", "sp ace", "a/.hidden", "x" * 513])
async def test_invalid_paths_rejected_naming_the_field(vault: Vault, bad: str) -> None:
    with pytest.raises(ValueError, match="path"):
        await vault.put("tester", bad, "some-secret-value")


async def test_invalid_values_rejected(vault: Vault) -> None:
    with pytest.raises(ValueError, match="value must be a string"):
        await vault.put("tester", "a/b", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value must be at most"):
        await vault.put("tester", "a/b", "x" * (1024 * 1024 + 1))
    with pytest.raises(SecretNotFoundError):
        await vault.get("tester", "a/b")


async def test_deny_by_default(db_path: Path) -> None:
    async with Vault(db_path, kdf=FAST_KDF, redactor=SecretRedactor()) as v:
        await v.initialize(passphrase=PASSPHRASE)
        with pytest.raises(AccessDenied) as err:
            await v.put("ghost", "providers/openai", "sk-never-stored")
        assert str(err.value) == "access denied: principal 'ghost' lacks 'write' on 'providers/openai'"
        assert "sk-never-stored" not in str(err.value)
        with pytest.raises(AccessDenied, match="lacks 'list' on ''"):
            await v.list("ghost", "")
        v.policy = OPEN_POLICY
        await v.put("tester", "providers/openai", "sk-stored-value")
        v.policy = Policy()
        with pytest.raises(AccessDenied, match="lacks 'read'"):
            await v.get("tester", "providers/openai")
        with pytest.raises(AccessDenied, match="lacks 'delete'"):
            await v.destroy("tester", "providers/openai", [1])


async def test_registers_values_with_redactor(vault: Vault, redactor: SecretRedactor) -> None:
    await vault.put("tester", "a/b", "hunter2-but-longer")
    assert redactor.redact("pw=hunter2-but-longer") == "pw=[REDACTED]"


async def test_secret_value_repr_hides_value(vault: Vault) -> None:
    await vault.put("tester", "a/b", "do-not-print-me")
    got = await vault.get("tester", "a/b")
    assert "do-not-print-me" not in repr(got) and "do-not-print-me" not in got.model_dump_json()


async def test_closed_vault_refuses(db_path: Path) -> None:
    v = Vault(db_path, kdf=FAST_KDF)
    with pytest.raises(VaultClosedError, match="call open"):
        await v.put("tester", "a/b", "some-secret-value")
    with pytest.raises(ValueError, match="max_versions"):
        Vault(db_path, max_versions=0)


async def test_schema_migrations_recorded_and_newer_schema_refused(db_path: Path, vault: Vault) -> None:
    await vault.close()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT version FROM schema_migrations").fetchall() == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)
        ]
        raw.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 'future')")
    with pytest.raises(TuringError, match="schema version 99 is newer"):
        await Vault(db_path).open()


async def test_scrypt_vault_round_trip(db_path: Path) -> None:
    kdf = ScryptParams(log2_n=10, r=8, p=1)
    async with Vault(db_path, policy=OPEN_POLICY, kdf=kdf) as v:
        await v.initialize(passphrase=PASSPHRASE)
        assert v.status().kdf == "scrypt"
        await v.put("tester", "a/b", "scrypt-protected")
        v.seal()
        with pytest.raises(UnsealError):
            await v.unseal(passphrase="wrong wrong wrong")
        await v.unseal(passphrase=PASSPHRASE)
        assert (await v.get("tester", "a/b")).value.get_secret_value() == "scrypt-protected"


async def test_default_kdf_is_argon2id(db_path: Path) -> None:
    async with Vault(db_path, policy=OPEN_POLICY) as v:
        await v.initialize(passphrase=PASSPHRASE)
        assert v.status().kdf == "argon2id"
    with sqlite3.connect(db_path) as raw:
        (state,) = raw.execute("SELECT state FROM barrier").fetchone()
    assert '"memory_cost_kib":65536' in state and '"iterations":3' in state
