"""Marco, the web explorer MAD: SSRF-safe fetching in core, HTML parsing inside the WASM sandbox.

Modules: url_policy (which URLs and addresses may be fetched, with the operator's ``[marco]
allow_hosts`` exceptions), pinned_resolver (resolve once, connect only to what was checked), fetch
(hops, caps, deadline), schemas (config, arguments, results, events), mad (the MAD on the bus).
"""

from mads.marco.mad import Marco

__all__ = ["Marco"]
