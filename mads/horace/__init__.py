"""Horace, the file keeper MAD: per-project git repositories, confined file tools, branches and claims."""

from mads.horace.mad import Horace

__all__ = ["Horace"]
