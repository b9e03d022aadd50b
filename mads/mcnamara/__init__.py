"""McNamara: security operations over the hash-chained audit trail.

Modules: audit_trail (the append-only, hash-chained log), rules (pure sliding-window
thresholds), events (bus events → audit events), quarantine (the delivery gate),
store (alerts, blocks, quarantines in SQLite), schemas (boundary models), mad (the MAD).
"""

from mads.mcnamara.mad import McNamara

__all__ = ["McNamara"]
