"""Marco, the web explorer MAD: SSRF-safe fetching in core, HTML parsing inside the WASM sandbox.

Modules: url_policy (which URLs and addresses may be fetched; stdlib only, also used to validate
``[sandbox] allow_hosts``), pinned_resolver (resolve once, connect only to what was checked), fetch
(hops, caps, deadline), schemas (config, arguments, results, events), mad (the MAD on the bus).

``Marco`` is imported lazily so that validating configuration does not pull in the sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mads.marco.mad import Marco

__all__ = ["Marco"]


def __getattr__(name: str) -> Any:
    if name == "Marco":
        from mads.marco.mad import Marco

        return Marco
    raise AttributeError(f"module 'mads.marco' has no attribute {name!r}")
