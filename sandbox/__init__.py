"""WASM cells for untrusted Python: CPython 3.12 (WASI) under wasmtime with time, fuel, memory and output
budgets, a private scratch directory and nothing else. See requirements/sandbox.md."""

from sandbox.errors import (
    BinaryChecksumError,
    HtmlExtractionError,
    InsecureCacheError,
    SandboxError,
    SandboxStateError,
)
from sandbox.html_extract import Link, PageExtract, SelectedElement
from sandbox.limits import CollectedFile, LimitHit, LimitMaxima, RunLimits, RunResult
from sandbox.runner import Sandbox
from sandbox.runtime import BUNDLED_PYTHON, PYTHON_WASM_SHA256, RuntimeBinary

__all__ = [
    "BUNDLED_PYTHON",
    "PYTHON_WASM_SHA256",
    "BinaryChecksumError",
    "CollectedFile",
    "HtmlExtractionError",
    "InsecureCacheError",
    "LimitHit",
    "LimitMaxima",
    "Link",
    "PageExtract",
    "RunLimits",
    "RunResult",
    "RuntimeBinary",
    "Sandbox",
    "SandboxError",
    "SandboxStateError",
    "SelectedElement",
]
