"""The vendored CPython WASI interpreter and its pinned checksum (see PROVENANCE.md)."""

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sandbox.errors import BinaryChecksumError

PYTHON_WASM_SHA256 = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
PYTHON_WASM_PATH = Path(__file__).with_name("python.wasm")


class RuntimeBinary(BaseModel):
    """A WASM interpreter on disk plus the digest it must have; tests point it at tampered copies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


BUNDLED_PYTHON = RuntimeBinary(path=PYTHON_WASM_PATH, sha256=PYTHON_WASM_SHA256)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_binary(binary: RuntimeBinary) -> None:
    """Refuse to compile or run an interpreter whose bytes differ from the pinned digest."""
    if not binary.path.is_file():
        raise BinaryChecksumError(f"WASM interpreter not found at {binary.path}")
    actual = file_sha256(binary.path)
    if actual != binary.sha256:
        raise BinaryChecksumError(
            f"WASM interpreter {binary.path} has sha256 {actual}, expected {binary.sha256}; refusing to load it"
        )
