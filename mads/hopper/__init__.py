"""Hopper, the software-engineering MAD: runs code in the WASM sandbox (``run_python`` by grant, ``run_tests``)."""

from mads.hopper.mad import Hopper

__all__ = ["Hopper"]
