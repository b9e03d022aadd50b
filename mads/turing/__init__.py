"""Turing: the ecosystem's secret keeper, modelled on HashiCorp Vault's barrier and KV v2.

Modules: barrier (AES-256-GCM barrier, root-key wrapping, seal state), keyring (data-key
terms), store (the Vault: versioned secrets in SQLite with policy checks), policy
(deny-by-default access rules), redactor (scrubbing known secret values from output),
schemas (config, tool arguments and results), unsealing (open + unseal from config),
mad (the MAD on the bus).

``Turing`` is imported lazily so that importing a library module (the redactor, say)
does not pull in the MAD and the bus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mads.turing.mad import Turing

__all__ = ["Turing"]


def __getattr__(name: str) -> Any:
    if name == "Turing":
        from mads.turing.mad import Turing

        return Turing
    raise AttributeError(f"module 'mads.turing' has no attribute {name!r}")
