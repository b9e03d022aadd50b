"""Which MADs exist, by name, and where their classes live.

The host imports MAD modules only through this table, so MAD modules never need
to import each other, and ``--mads marco,hopper`` can pick a subset by name.
Order matters at start-up: Rogers first (its wiretap must see every message),
McNamara before anything it audits, Grace last (she fronts the others).
"""

from __future__ import annotations

import importlib
import importlib.util

from mads.core.base import MAD

MADS: dict[str, str] = {
    "rogers": "mads.rogers:Rogers",
    "mcnamara": "mads.mcnamara:McNamara",
    "turing": "mads.turing:Turing",
    "fiedler": "mads.fiedler:Fiedler",
    "marco": "mads.marco:Marco",
    "horace": "mads.horace:Horace",
    "hopper": "mads.hopper:Hopper",
    "playfair": "mads.playfair:Playfair",
    "gates": "mads.gates:Gates",
    "grace": "mads.grace:Grace",
}


def load(name: str) -> type[MAD]:
    """The MAD class registered under ``name``."""
    try:
        target = MADS[name]
    except KeyError:
        raise KeyError(f"unknown MAD {name!r} (known: {', '.join(MADS)})") from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, MAD)):
        raise TypeError(f"{target} is not a MAD")
    return cls


def available() -> list[str]:
    """Registered MADs whose module is present in this build, in start-up order."""
    present = []
    for name, target in MADS.items():
        module_name = target.partition(":")[0]
        if importlib.util.find_spec(module_name) is not None:
            present.append(name)
    return present


def select(names: list[str]) -> list[str]:
    """Resolve ``["all"]`` or a list of names into start-up order; unknown names are errors."""
    if names == ["all"] or not names:
        return available()
    unknown = [n for n in names if n not in MADS]
    if unknown:
        raise KeyError(f"unknown MAD(s) {', '.join(unknown)} (known: {', '.join(MADS)})")
    return [n for n in MADS if n in names]
