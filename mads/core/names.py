"""The well-known bus addresses of the ecosystem's MADs, in one place.

A MAD never imports another MAD, but it does talk to one by name (Fiedler reads
keys from Turing, every Imperator recalls history from Rogers, the gateway fronts
Grace). Those names are these constants, never strings repeated across packages;
``mads/registry.py`` maps each to its class.
"""

from __future__ import annotations

from typing import Final

ROGERS: Final = "rogers"
MCNAMARA: Final = "mcnamara"
TURING: Final = "turing"
FIEDLER: Final = "fiedler"
MARCO: Final = "marco"
HORACE: Final = "horace"
HOPPER: Final = "hopper"
PLAYFAIR: Final = "playfair"
GATES: Final = "gates"
GRACE: Final = "grace"

HOST: Final = "host"
"""The sender of what a host itself publishes (configuration changes)."""
GATEWAY: Final = "gateway"
"""The sender of what the gateway publishes on a person's behalf (their messages, logins)."""
DIRECTORY: Final = "directory"
"""The sender of a host's presence queries."""
BUS: Final = "bus"
"""The sender of errors the bus itself produces (no route, dead letters)."""


def mad_of(address: str) -> str:
    """The MAD an address belongs to: ``hopper.01J…`` (an ephemeral instance) is ``hopper``."""
    return address.split(".", 1)[0]
