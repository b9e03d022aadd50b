"""Errors raised by the sandbox host (guest failures are reported in RunResult, not raised)."""


class SandboxError(Exception):
    """Base class for host-side sandbox failures."""


class BinaryChecksumError(SandboxError):
    """The interpreter binary is missing or does not match its pinned SHA-256."""


class InsecureCacheError(SandboxError):
    """The compiled-module cache is writable by others or not ours; native code must not load from it."""


class SandboxStateError(SandboxError):
    """The sandbox was used before start() or after close()."""


class HtmlExtractionError(SandboxError):
    """The in-cell HTML extraction did not produce a valid result."""


class SandboxStarting(SandboxStateError):
    """The sandbox is still loading or compiling its runtime; the same call will work shortly (retryable)."""

    retryable = True
