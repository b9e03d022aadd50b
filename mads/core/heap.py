"""The start-up heap leaves the cycle collector's sight once the ecosystem is up.

Modules, litellm's provider tables and every MAD's long-lived objects are made once and live as
long as the process. CPython's full collections walk all of them: with litellm loaded that is
about a million objects, most of a second per full collection on a loaded machine, and a busy
ecosystem allocates enough to run one every few seconds — a pause every turn in flight shares.
:func:`freeze_startup_heap` collects once, then moves every object alive to the permanent
generation (``gc.freeze``): reference counting still frees them, only the cycle collector stops
rescanning them, so later collections walk the work in flight, not the libraries.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect, then freeze what is alive; returns how many objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
