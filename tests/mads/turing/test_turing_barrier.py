"""Vault-style barrier tests against the real database file: integrity, binding, keys, rekey."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr

from mads.turing.barrier import (
    Argon2idParams,
    Barrier,
    BarrierState,
    IntegrityError,
    KeyFileError,
    Passphrase,
    SealedError,
    UnsealError,
    create_key_file,
    read_key_file,
)
from mads.turing.keyring import KeyLengthError, Keyring, check_key
from mads.turing.store import Vault

from .conftest import FAST_KDF, OPEN_POLICY, PASSPHRASE, db_files_bytes

NEW_PASSPHRASE = "a completely different passphrase"


def _value_blob(db: Path, path: str, version: int) -> bytes:
    with sqlite3.connect(db) as raw:
        (blob,) = raw.execute(
            "SELECT value FROM secret_versions WHERE path = ? AND version = ?", (path, version)
        ).fetchone()
    return blob


def _set_value_blob(db: Path, path: str, version: int, blob: bytes) -> None:
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE secret_versions SET value = ? WHERE path = ? AND version = ?", (blob, path, version))


@pytest.mark.parametrize("offset", [0, 4, 7, 20, -1], ids=["version", "term", "nonce", "body", "tag"])
async def test_one_flipped_byte_fails_integrity(vault: Vault, db_path: Path, offset: int) -> None:
    await vault.put("tester", "providers/openai", "sk-flip-me-123456")
    blob = bytearray(_value_blob(db_path, "providers/openai", 1))
    blob[offset] ^= 0x01
    _set_value_blob(db_path, "providers/openai", 1, bytes(blob))
    with pytest.raises(IntegrityError, match=r"integrity check failed for 'providers/openai#v1'"):
        await vault.get("tester", "providers/openai")


async def test_flipped_metadata_fails_integrity(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "a/b", "metadata-tamper")
    with sqlite3.connect(db_path) as raw:
        (meta,) = raw.execute("SELECT meta FROM secrets WHERE path='a/b'").fetchone()
        tampered = bytearray(meta)
        tampered[30] ^= 0x80
        raw.execute("UPDATE secrets SET meta = ? WHERE path='a/b'", (bytes(tampered),))
    with pytest.raises(IntegrityError, match="'a/b#meta'"):
        await vault.get("tester", "a/b")


async def test_entry_copied_to_another_path_fails(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "providers/openai", "sk-original-openai")
    await vault.put("tester", "providers/other", "harmless-value")
    _set_value_blob(db_path, "providers/other", 1, _value_blob(db_path, "providers/openai", 1))
    with pytest.raises(IntegrityError, match="'providers/other#v1'"):
        await vault.get("tester", "providers/other")


async def test_whole_rows_copied_to_a_new_path_fail(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "providers/openai", "sk-original-openai")
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO secrets SELECT 'stolen/copy', meta FROM secrets WHERE path='providers/openai'")
        raw.execute(
            "INSERT INTO secret_versions SELECT 'stolen/copy', version, meta, value FROM secret_versions "
            "WHERE path='providers/openai'"
        )
    with pytest.raises(IntegrityError, match="'stolen/copy#meta'"):
        await vault.get("tester", "stolen/copy")


async def test_versions_cannot_be_swapped(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "a/b", "old-value-one")
    await vault.put("tester", "a/b", "new-value-two")
    _set_value_blob(db_path, "a/b", 2, _value_blob(db_path, "a/b", 1))
    with pytest.raises(IntegrityError, match="'a/b#v2'"):
        await vault.get("tester", "a/b")


async def test_same_value_encrypts_differently(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "a/b", "identical-value")
    await vault.put("tester", "a/b", "identical-value")
    await vault.put("tester", "a/c", "identical-value")
    blobs = {_value_blob(db_path, "a/b", 1), _value_blob(db_path, "a/b", 2), _value_blob(db_path, "a/c", 1)}
    assert len(blobs) == 3
    nonces = {b[5:17] for b in blobs}
    assert len(nonces) == 3


async def test_rotate_keeps_old_terms_and_uses_new_one(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "r/x", "written-under-term-1")
    assert await vault.rotate() == 2
    await vault.put("tester", "r/x", "written-under-term-2")
    assert int.from_bytes(_value_blob(db_path, "r/x", 1)[1:5], "big") == 1
    assert int.from_bytes(_value_blob(db_path, "r/x", 2)[1:5], "big") == 2
    vault.seal()
    await vault.unseal(passphrase=PASSPHRASE)
    assert vault.status().key_term == 2
    assert (await vault.get("tester", "r/x", 1)).value.get_secret_value() == "written-under-term-1"
    assert (await vault.get("tester", "r/x", 2)).value.get_secret_value() == "written-under-term-2"


async def test_rekey_passphrase(vault: Vault, db_path: Path) -> None:
    await vault.put("tester", "k/x", "survives-rekey")
    await vault.rotate()
    with sqlite3.connect(db_path) as raw:
        (before,) = raw.execute("SELECT state FROM barrier").fetchone()
    await vault.rekey(new_passphrase=NEW_PASSPHRASE)
    vault.seal()
    with pytest.raises(UnsealError):
        await vault.unseal(passphrase=PASSPHRASE)
    await vault.unseal(passphrase=NEW_PASSPHRASE)
    assert (await vault.get("tester", "k/x")).value.get_secret_value() == "survives-rekey"
    assert vault.status().key_term == 2

    with sqlite3.connect(db_path) as raw:
        (after,) = raw.execute("SELECT state FROM barrier").fetchone()
    old, new = BarrierState.model_validate_json(before), BarrierState.model_validate_json(after)
    hybrid = BarrierState(seal=old.seal, keyring=new.keyring)
    with pytest.raises(IntegrityError, match="keyring failed its integrity check"):
        await Barrier().unseal(hybrid, Passphrase(value=SecretStr(PASSPHRASE)))


async def test_rekey_between_passphrase_and_key_file(vault: Vault, tmp_path: Path) -> None:
    await vault.put("tester", "k/x", "survives-both-rekeys")
    key_file = tmp_path / "keys" / "root.key"
    await vault.rekey(new_key_file=key_file)
    assert vault.status().unseal_method == "key_file"
    vault.seal()
    with pytest.raises(UnsealError, match="sealed with a key file, not a passphrase"):
        await vault.unseal(passphrase=PASSPHRASE)
    await vault.unseal(key_file=key_file)
    await vault.rekey(new_passphrase=NEW_PASSPHRASE)
    vault.seal()
    with pytest.raises(UnsealError, match="sealed with a passphrase, not a key file"):
        await vault.unseal(key_file=key_file)
    await vault.unseal(passphrase=NEW_PASSPHRASE)
    assert (await vault.get("tester", "k/x")).value.get_secret_value() == "survives-both-rekeys"


async def test_key_file_is_created_0600_and_unseals(tmp_path: Path) -> None:
    key_file = tmp_path / "root.key"
    async with Vault(tmp_path / "v.db", policy=OPEN_POLICY, kdf=FAST_KDF) as v:
        await v.initialize(key_file=key_file)
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert len(key_file.read_bytes()) == 32
        await v.put("tester", "a/b", "behind-a-key-file")
        v.seal()
        other = tmp_path / "other.key"
        create_key_file(other)
        with pytest.raises(UnsealError, match="wrong passphrase or key file"):
            await v.unseal(key_file=other)
        await v.unseal(key_file=key_file)
        assert (await v.get("tester", "a/b")).value.get_secret_value() == "behind-a-key-file"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "root.key"
    create_key_file(key_file)
    os.chmod(key_file, mode)
    with pytest.raises(KeyFileError, match="must not be accessible by group or others"):
        read_key_file(key_file)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
async def test_key_file_of_wrong_length_is_refused(tmp_path: Path, size: int) -> None:
    key_file = tmp_path / "root.key"
    key_file.write_bytes(os.urandom(size))
    os.chmod(key_file, 0o600)
    with pytest.raises(KeyFileError, match="must hold exactly 32 bytes"):
        read_key_file(key_file)
    async with Vault(tmp_path / "v.db", kdf=FAST_KDF) as v:
        with pytest.raises(KeyFileError):
            await v.initialize(key_file=key_file)
        assert not v.status().initialized


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "absent.key")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 48])
def test_wrong_length_keys_rejected(size: int) -> None:
    with pytest.raises(KeyLengthError, match=f"exactly 32 bytes, got {size}"):
        check_key(os.urandom(size), "root key")
    with pytest.raises(KeyLengthError, match="data key for term 1"):
        Keyring({1: bytearray(os.urandom(size))}, 1)


def test_wrong_length_key_in_keyring_blob_rejected() -> None:
    blob = Keyring.generate().to_bytes()
    with pytest.raises(ValueError, match="length does not match"):
        Keyring.from_bytes(blob[:-1])


def test_keyring_rotation_and_wipe() -> None:
    ring = Keyring.generate()
    rotated = ring.rotated()
    assert (ring.terms, rotated.terms, rotated.active_term) == ([1], [1, 2], 2)
    assert rotated.key(1) == ring.key(1) and rotated.key(2) != ring.key(1)
    key = rotated.key(2)
    rotated.wipe()
    assert key == bytearray(32)
    assert Keyring.from_bytes(ring.to_bytes()).key(1) == ring.key(1)


async def test_seal_wipes_key_buffers() -> None:
    barrier = Barrier()
    await barrier.initialize(Passphrase(value=SecretStr(PASSPHRASE)), FAST_KDF)
    ct = barrier.encrypt("a/b", b"payload")
    key = barrier._keyring.key(1)  # type: ignore[union-attr]  # white-box: prove the buffer is zeroed
    barrier.seal()
    assert key == bytearray(32)
    with pytest.raises(SealedError, match="sealed"):
        barrier.decrypt("a/b", ct)


async def test_tampered_keyring_blob_fails_unseal(vault: Vault, db_path: Path) -> None:
    vault.seal()
    with sqlite3.connect(db_path) as raw:
        (state,) = raw.execute("SELECT state FROM barrier").fetchone()
        parsed = BarrierState.model_validate_json(state)
        ring = bytearray(parsed.keyring)
        ring[-3] ^= 0x10
        raw.execute(
            "UPDATE barrier SET state = ?", (BarrierState(seal=parsed.seal, keyring=bytes(ring)).model_dump_json(),)
        )
    with pytest.raises(IntegrityError, match="keyring failed its integrity check"):
        await vault.unseal(passphrase=PASSPHRASE)
    assert vault.sealed


async def test_canary_never_in_database_bytes(vault: Vault, db_path: Path) -> None:
    canary = "CANARY-sk-7f3a9c1e5b"
    await vault.put("tester", "providers/canary", canary)
    await vault.put("tester", "providers/canary", canary + "-v2")
    await vault.rotate()
    await vault.rekey(new_passphrase=NEW_PASSPHRASE)
    await vault.delete("tester", "providers/canary")
    data = db_files_bytes(db_path)
    assert b"providers/canary" in data, "sanity: paths are stored in clear, so we are reading the right files"
    assert canary.encode() not in data
    assert canary.encode("utf-16-le") not in data
    await vault.close()
    data = db_files_bytes(db_path)
    assert b"providers/canary" in data and canary.encode() not in data


def test_kdf_params_validated() -> None:
    with pytest.raises(ValueError, match="memory_cost_kib must be >= 8 \\* lanes"):
        Argon2idParams(lanes=4, memory_cost_kib=16)
