"""The cryptographic barrier: everything that crosses it is AES-256-GCM sealed.

Modelled on Vault's barrier. A random root key wraps the keyring of data keys; the root
key itself is wrapped by a key-encryption key (KEK) derived from a passphrase (Argon2id,
or scrypt when the OpenSSL build lacks Argon2) or from a 32-byte key file. Until
`unseal()` succeeds the barrier holds no keys and every operation raises `SealedError`.

Ciphertext layout: ``version(1) | term(4, big endian) | nonce(12) | AES-GCM ct+tag``.
The associated data binds the ciphertext to its storage label (the secret path) and term,
so a ciphertext copied to another path, or a flipped byte anywhere, fails authentication.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, SecretStr, model_validator

from mads.turing.keyring import KEY_LEN, Keyring, KeyringFormatError, check_key, new_key, wipe

NONCE_LEN = 12
_FORMAT_VERSION = 1
_HEADER = struct.Struct(">BI")
_MIN_CIPHERTEXT = _HEADER.size + NONCE_LEN + 16
_ROOT_WRAP_AAD = b"turing/root-key/v1\x00"
_KEYRING_AAD = b"turing/keyring/v1"
_ENTRY_AAD = b"turing/entry/v1\x00"
MIN_PASSPHRASE_LEN = 12


class TuringError(Exception):
    """Base of every error Turing raises on purpose."""


class SealedError(TuringError):
    """The vault is sealed: no keys are in memory, so no secret operation can run."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"vault is sealed: unseal it before '{operation}'")


class NotInitializedError(TuringError):
    """The vault has never been initialised (no root key exists yet)."""


class AlreadyInitializedError(TuringError):
    """`initialize()` was called on a vault that already has a root key."""


class UnsealError(TuringError):
    """The passphrase or key file did not unwrap the root key."""


class IntegrityError(TuringError):
    """A ciphertext failed authentication: modified, moved, or sealed under another key."""


class KeyFileError(TuringError):
    """A key file is missing, has the wrong length, or is readable by group/others."""


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _unb64(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(value, validate=True)


B64Bytes = Annotated[bytes, PlainValidator(_unb64), PlainSerializer(_b64, return_type=str)]


class Argon2idParams(BaseModel):
    """Argon2id cost (RFC 9106 second recommendation by default: t=3, 64 MiB, p=4)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["argon2id"] = "argon2id"
    iterations: int = Field(default=3, ge=1, le=64)
    lanes: int = Field(default=4, ge=1, le=64)
    memory_cost_kib: int = Field(default=64 * 1024, ge=8, le=4 * 1024 * 1024)

    @model_validator(mode="after")
    def _memory_covers_lanes(self) -> Argon2idParams:
        if self.memory_cost_kib < 8 * self.lanes:
            raise ValueError(f"memory_cost_kib must be >= 8 * lanes ({8 * self.lanes}), got {self.memory_cost_kib}")
        return self


class ScryptParams(BaseModel):
    """scrypt cost, used when this OpenSSL build has no Argon2id."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["scrypt"] = "scrypt"
    log2_n: int = Field(default=15, ge=10, le=22)
    r: int = Field(default=8, ge=1, le=32)
    p: int = Field(default=1, ge=1, le=16)


KdfParams = Annotated[Argon2idParams | ScryptParams, Field(discriminator="kind")]


class KeyFileParams(BaseModel):
    """The KEK comes from a key file via HKDF; nothing to tune."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["key_file"] = "key_file"


class SealConfig(BaseModel):
    """Everything needed to unwrap the root key, minus the secret itself. Safe to store."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kdf: Annotated[Argon2idParams | ScryptParams | KeyFileParams, Field(discriminator="kind")]
    salt: B64Bytes
    wrapped_root_key: B64Bytes


class BarrierState(BaseModel):
    """What the store persists for the barrier: how to unwrap the root key, and the keyring."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seal: SealConfig
    keyring: B64Bytes


@dataclass(frozen=True)
class Passphrase:
    value: SecretStr


@dataclass(frozen=True)
class KeyFile:
    path: Path


Unlock = Passphrase | KeyFile


def make_unlock(passphrase: str | SecretStr | None, key_file: str | os.PathLike[str] | None) -> Unlock:
    """Exactly one of passphrase / key_file, validated; names the offending argument."""
    if (passphrase is None) == (key_file is None):
        raise ValueError("give exactly one of passphrase or key_file")
    if key_file is not None:
        return KeyFile(Path(key_file))
    secret = passphrase if isinstance(passphrase, SecretStr) else SecretStr(str(passphrase))
    if len(secret.get_secret_value()) < MIN_PASSPHRASE_LEN:
        raise ValueError(f"passphrase must be at least {MIN_PASSPHRASE_LEN} characters")
    return Passphrase(secret)


def argon2id_supported() -> bool:
    """cryptography >= 44 ships Argon2id, but only when its OpenSSL provides it."""
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        Argon2id(salt=b"\0" * 16, length=32, iterations=1, lanes=1, memory_cost=8).derive(b"probe")
    except (ImportError, UnsupportedAlgorithm):
        return False
    return True


def default_kdf() -> Argon2idParams | ScryptParams:
    return Argon2idParams() if argon2id_supported() else ScryptParams()


def create_key_file(path: Path) -> None:
    """Write 32 random bytes to a new file with mode 0600; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        key = new_key()
        os.write(fd, key)
        wipe(key)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytearray:
    """Read a key file, refusing wrong length and any group/world permission bits."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be accessible "
            "by group or others (chmod 600)"
        )
    with open(path, "rb") as fh:
        data = bytearray(fh.read(KEY_LEN + 1))
    if len(data) != KEY_LEN:
        n = len(data)
        wipe(data)
        raise KeyFileError(f"key file {path} must hold exactly {KEY_LEN} bytes, got {n}{'+' if n > KEY_LEN else ''}")
    return data


def _derive_kek(unlock: Unlock, kdf: Argon2idParams | ScryptParams | KeyFileParams, salt: bytes) -> bytearray:
    """CPU-heavy for passphrases: always call through asyncio.to_thread."""
    if isinstance(unlock, KeyFile):
        if not isinstance(kdf, KeyFileParams):
            raise UnsealError("this vault is sealed with a passphrase, not a key file")
        material = read_key_file(unlock.path)
        try:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=b"turing/key-file-kek/v1")
            return bytearray(hkdf.derive(bytes(material)))
        finally:
            wipe(material)
    if isinstance(kdf, KeyFileParams):
        raise UnsealError("this vault is sealed with a key file, not a passphrase")
    secret = unlock.value.get_secret_value().encode("utf-8")
    if isinstance(kdf, Argon2idParams):
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        argon = Argon2id(
            salt=salt, length=KEY_LEN, iterations=kdf.iterations, lanes=kdf.lanes, memory_cost=kdf.memory_cost_kib
        )
        return bytearray(argon.derive(secret))
    return bytearray(Scrypt(salt=salt, length=KEY_LEN, n=2**kdf.log2_n, r=kdf.r, p=kdf.p).derive(secret))


def _wrap_aad(kdf: Argon2idParams | ScryptParams | KeyFileParams) -> bytes:
    return _ROOT_WRAP_AAD + kdf.kind.encode("ascii")


def _wrap_root(root: bytearray, unlock: Unlock, kdf_for_passphrase: Argon2idParams | ScryptParams) -> SealConfig:
    kdf: Argon2idParams | ScryptParams | KeyFileParams
    if isinstance(unlock, KeyFile):
        if not unlock.path.exists():
            create_key_file(unlock.path)
        kdf = KeyFileParams()
    else:
        kdf = kdf_for_passphrase
    salt = os.urandom(16)
    kek = _derive_kek(unlock, kdf, salt)
    try:
        nonce = os.urandom(NONCE_LEN)
        wrapped = nonce + AESGCM(kek).encrypt(nonce, bytes(root), _wrap_aad(kdf))
    finally:
        wipe(kek)
    return SealConfig(kdf=kdf, salt=salt, wrapped_root_key=wrapped)


def _unwrap_root(seal: SealConfig, unlock: Unlock) -> bytearray:
    kek = _derive_kek(unlock, seal.kdf, seal.salt)
    try:
        blob = seal.wrapped_root_key
        root = bytearray(AESGCM(kek).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], _wrap_aad(seal.kdf)))
    except InvalidTag:
        raise UnsealError("unseal failed: wrong passphrase or key file") from None
    finally:
        wipe(kek)
    check_key(root, "root key")
    return root


def _seal_keyring(root: bytearray, keyring: Keyring) -> bytes:
    check_key(root, "root key")
    nonce = os.urandom(NONCE_LEN)
    return nonce + AESGCM(root).encrypt(nonce, keyring.to_bytes(), _KEYRING_AAD)


def _open_keyring(root: bytearray, blob: bytes) -> Keyring:
    try:
        plain = AESGCM(root).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], _KEYRING_AAD)
    except (InvalidTag, ValueError):
        raise IntegrityError("keyring failed its integrity check: the stored keyring was modified") from None
    try:
        return Keyring.from_bytes(plain)
    except KeyringFormatError as exc:
        raise IntegrityError(f"keyring is malformed: {exc}") from None


def _entry_aad(label: str, term: int) -> bytes:
    return _ENTRY_AAD + label.encode("utf-8") + b"\x00" + struct.pack(">I", term)


@dataclass
class BarrierChange:
    """A rotate/rekey computed but not yet applied: persist `state`, then `Barrier.apply()`."""

    state: BarrierState
    root: bytearray
    keyring: Keyring

    def discard(self) -> None:
        wipe(self.root)
        self.keyring.wipe()


class Barrier:
    """Holds the root key and keyring while unsealed; encrypts and decrypts entries."""

    def __init__(self) -> None:
        self._root: bytearray | None = None
        self._keyring: Keyring | None = None
        self._seal_config: SealConfig | None = None

    @property
    def sealed(self) -> bool:
        return self._keyring is None

    def _require(self, operation: str) -> Keyring:
        if self._keyring is None:
            raise SealedError(operation)
        return self._keyring

    @property
    def term(self) -> int:
        return self._require("term").active_term

    async def initialize(self, unlock: Unlock, kdf: Argon2idParams | ScryptParams) -> BarrierState:
        """Create a root key and first keyring; leaves the barrier unsealed."""
        root = new_key()
        keyring = Keyring.generate()
        seal = await asyncio.to_thread(_wrap_root, root, unlock, kdf)
        state = BarrierState(seal=seal, keyring=_seal_keyring(root, keyring))
        self.apply(BarrierChange(state, root, keyring))
        return state

    async def unseal(self, state: BarrierState, unlock: Unlock) -> None:
        root = await asyncio.to_thread(_unwrap_root, state.seal, unlock)
        try:
            keyring = _open_keyring(root, state.keyring)
        except IntegrityError:
            wipe(root)
            raise
        self.apply(BarrierChange(state, root, keyring))

    def seal(self) -> None:
        """Forget every key (best effort wipe of our buffers)."""
        if self._root is not None:
            wipe(self._root)
        if self._keyring is not None:
            self._keyring.wipe()
        self._root = None
        self._keyring = None

    def prepare_rotate(self) -> BarrierChange:
        keyring = self._require("rotate").rotated()
        if self._root is None or self._seal_config is None:
            raise SealedError("rotate")
        root = bytearray(self._root)
        return BarrierChange(BarrierState(seal=self._seal_config, keyring=_seal_keyring(root, keyring)), root, keyring)

    async def prepare_rekey(self, unlock: Unlock, kdf: Argon2idParams | ScryptParams) -> BarrierChange:
        """New root key wrapped by the new credentials; the keyring is re-wrapped under it."""
        current = self._require("rekey")
        keyring = Keyring({t: current.key(t) for t in current.terms}, current.active_term)
        root = new_key()
        seal = await asyncio.to_thread(_wrap_root, root, unlock, kdf)
        return BarrierChange(BarrierState(seal=seal, keyring=_seal_keyring(root, keyring)), root, keyring)

    def apply(self, change: BarrierChange) -> None:
        """Install a persisted change; the previous keys are wiped."""
        self.seal()
        self._root = change.root
        self._keyring = change.keyring
        self._seal_config = change.state.seal

    def encrypt(self, label: str, plaintext: bytes) -> bytes:
        """Seal `plaintext` under the active term, bound to `label` (the storage path)."""
        keyring = self._require("encrypt")
        term = keyring.active_term
        nonce = os.urandom(NONCE_LEN)
        ct = AESGCM(keyring.key(term)).encrypt(nonce, plaintext, _entry_aad(label, term))
        return _HEADER.pack(_FORMAT_VERSION, term) + nonce + ct

    def decrypt(self, label: str, blob: bytes) -> bytes:
        keyring = self._require("decrypt")
        bad = f"integrity check failed for '{label}': ciphertext was modified, moved from another path, or is corrupt"
        if len(blob) < _MIN_CIPHERTEXT:
            raise IntegrityError(bad)
        version, term = _HEADER.unpack_from(blob, 0)
        if version != _FORMAT_VERSION:
            raise IntegrityError(bad)
        try:
            key = keyring.key(term)
        except KeyError:
            raise IntegrityError(bad + f" (unknown key term {term})") from None
        nonce = blob[_HEADER.size : _HEADER.size + NONCE_LEN]
        try:
            return AESGCM(key).decrypt(nonce, blob[_HEADER.size + NONCE_LEN :], _entry_aad(label, term))
        except InvalidTag:
            raise IntegrityError(bad) from None
