"""McNamara: security operations over the hash-chained audit trail.

Modules: rules (pure sliding-window thresholds), events (bus events → audit events),
store (alerts, blocks, quarantines in SQLite), schemas (boundary models), mad (the MAD).
The trail itself (``mads.core.audit_trail``) and the quarantine gate
(``mads.core.quarantine``) are runtime libraries: the operator CLI and every host use them too.
"""

from mads.mcnamara.mad import McNamara

__all__ = ["McNamara"]
