"""Turing: the ecosystem's secret keeper, modelled on HashiCorp Vault's barrier and KV v2.

Modules: barrier (AES-256-GCM barrier, root-key wrapping, seal state), keyring (data-key
terms), store (the Vault: versioned secrets in SQLite with policy checks), policy
(deny-by-default access rules), schemas (config, tool arguments and results), unsealing
(open + unseal from config), mad (the MAD on the bus). The redactor it feeds is the
runtime's (``mads.core.redaction``), handed to it through its context.
"""

from mads.turing.mad import Turing

__all__ = ["Turing"]
