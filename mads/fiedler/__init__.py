"""Fiedler: the LLM router MAD (registry, retries and fallbacks, accounting, tracing).

Modules: schemas (config and tool models), keys (where API keys come from), registry
(configured or discovered models), llm (litellm calls), accounting (usage ledger),
mad (the MAD and its tools).
"""

from mads.fiedler.mad import Fiedler

__all__ = ["Fiedler"]
