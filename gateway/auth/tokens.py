"""The bearer-token format and how tokens are hashed at rest.

A token is ``mad_`` + 32 random bytes (urlsafe base64, no padding): enough entropy that
a single keyed hash is the right storage (no slow KDF needed), and a prefix secret
scanners can look for. Stored is HMAC-SHA256 under a per-install pepper kept in a
0600 file beside the database, so a copy of ``auth.db`` alone cannot even confirm a
guessed token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

TOKEN_PREFIX = "mad_"
TOKEN_BYTES = 32
TOKEN_PATTERN = re.compile(r"^mad_[A-Za-z0-9_\-]{43}$")
PEPPER_BYTES = 32


def new_token() -> str:
    """A fresh bearer token (shown once, never stored)."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode("ascii")
    return TOKEN_PREFIX + raw


def well_formed(token: str) -> bool:
    return TOKEN_PATTERN.fullmatch(token) is not None


def load_pepper(path: Path) -> bytes:
    """The install's pepper, created 0600 on first use; refuses a file others can read."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _existing_pepper(path)
    pepper = secrets.token_bytes(PEPPER_BYTES)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pepper)
    return pepper


def _existing_pepper(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} must be readable by its owner only (mode {mode:o}); chmod 600 it")
    pepper = path.read_bytes()
    if len(pepper) != PEPPER_BYTES:
        raise ValueError(f"{path} is not a {PEPPER_BYTES}-byte pepper file")
    return pepper


def token_hash(pepper: bytes, token: str) -> str:
    """The stored form of a token (hex HMAC-SHA256)."""
    return hmac.new(pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()
