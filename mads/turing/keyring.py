"""Data-key keyring with terms, as in Vault's barrier keyring.

Each ciphertext records the term of the key that sealed it, so `rotate()` can add a new
term for new writes while every older term keeps decrypting what it wrote. Keys are held in
`bytearray`s so `wipe()` can overwrite them when the vault is sealed (best effort: Python
may have made copies we cannot reach).
"""

from __future__ import annotations

import os
import struct

KEY_LEN = 32
_MAGIC = b"TKR1"
_HEADER = struct.Struct(">4sII")
_ENTRY_TERM = struct.Struct(">I")


class KeyLengthError(ValueError):
    """A key of the wrong length was offered: AES-256 needs exactly 32 bytes."""


class KeyringFormatError(ValueError):
    """The serialised keyring is malformed (only reachable after a successful decrypt)."""


def check_key(key: bytes | bytearray, what: str) -> None:
    """Reject anything that is not exactly a 32-byte key, naming which key was wrong."""
    if not isinstance(key, bytes | bytearray):
        raise KeyLengthError(f"{what} must be bytes, got {type(key).__name__}")
    if len(key) != KEY_LEN:
        raise KeyLengthError(f"{what} must be exactly {KEY_LEN} bytes, got {len(key)}")


def new_key() -> bytearray:
    """A fresh random 256-bit key."""
    return bytearray(os.urandom(KEY_LEN))


def wipe(buf: bytearray) -> None:
    """Overwrite a key buffer in place."""
    for i in range(len(buf)):
        buf[i] = 0


class Keyring:
    """Terms -> data keys; the highest term is active for new encryptions."""

    def __init__(self, keys: dict[int, bytearray], active_term: int) -> None:
        if not keys:
            raise KeyringFormatError("keyring must hold at least one key")
        for term, key in keys.items():
            if term < 1:
                raise KeyringFormatError(f"keyring term must be >= 1, got {term}")
            check_key(key, f"data key for term {term}")
        if active_term not in keys:
            raise KeyringFormatError(f"active term {active_term} has no key")
        self._keys = {term: bytearray(key) for term, key in keys.items()}
        self._active = active_term

    @classmethod
    def generate(cls) -> Keyring:
        return cls({1: new_key()}, 1)

    @property
    def active_term(self) -> int:
        return self._active

    @property
    def terms(self) -> list[int]:
        return sorted(self._keys)

    def key(self, term: int) -> bytearray:
        """The data key for `term`; KeyError if this keyring never had it."""
        return self._keys[term]

    def rotated(self) -> Keyring:
        """A copy with one more term, which becomes active. The original is untouched."""
        keys = {term: bytearray(key) for term, key in self._keys.items()}
        term = max(keys) + 1
        keys[term] = new_key()
        return Keyring(keys, term)

    def to_bytes(self) -> bytes:
        out = bytearray(_HEADER.pack(_MAGIC, self._active, len(self._keys)))
        for term in sorted(self._keys):
            out += _ENTRY_TERM.pack(term)
            out += self._keys[term]
        data = bytes(out)
        wipe(out)
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Keyring:
        if len(data) < _HEADER.size:
            raise KeyringFormatError("keyring blob is truncated")
        magic, active, count = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC:
            raise KeyringFormatError("keyring blob has an unknown format")
        entry = _ENTRY_TERM.size + KEY_LEN
        if len(data) != _HEADER.size + count * entry:
            raise KeyringFormatError(f"keyring blob length does not match its {count} entries")
        keys: dict[int, bytearray] = {}
        for i in range(count):
            off = _HEADER.size + i * entry
            (term,) = _ENTRY_TERM.unpack_from(data, off)
            keys[term] = bytearray(data[off + _ENTRY_TERM.size : off + entry])
        return cls(keys, active)

    def wipe(self) -> None:
        for key in self._keys.values():
            wipe(key)
        self._keys.clear()
