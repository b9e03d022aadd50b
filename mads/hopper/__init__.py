"""Hopper, the software-engineering MAD: runs code in the WASM sandbox (``run_python`` by grant, ``run_tests``).

``Hopper`` is imported lazily so that importing this package does not pull in the sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mads.hopper.mad import Hopper

__all__ = ["Hopper"]


def __getattr__(name: str) -> Any:
    if name == "Hopper":
        from mads.hopper.mad import Hopper

        return Hopper
    raise AttributeError(f"module 'mads.hopper' has no attribute {name!r}")
