"""The MADs' tools as one principal may run them over MCP: names, descriptions, JSON Schemas.

Read from the live directory (every MAD's card): a tool marked internal is never listed
(it is for the ecosystem's components), an operator action only for operators. A tool is
named ``<mad>_<tool>``, a name every MCP client accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bus.envelope import Principal
from gateway.state import GatewayState

IDENTITY_SCOPE_KEY = "mad_ecosystem.principal"
"""ASGI scope key under which the route hands the authenticated principal to the MCP handlers."""


@dataclass(frozen=True)
class McpTool:
    """One MAD tool as a principal sees it over MCP."""

    mad: str
    tool: str
    description: str
    input_schema: dict[str, Any]
    operator: bool

    @property
    def name(self) -> str:
        return f"{self.mad}_{self.tool}"


def tools_for(state: GatewayState, principal: Principal) -> dict[str, McpTool]:
    """The tools ``principal`` may run by command, by MCP name, from the live directory."""
    found: dict[str, McpTool] = {}
    for entry in sorted(state.directory.entries(), key=lambda e: e.mad):
        if not entry.alive or entry.address != entry.mad:
            continue
        for card in entry.card.get("tools", []):
            if not isinstance(card, dict) or card.get("internal"):
                continue
            operator = bool(card.get("operator"))
            if operator and not principal.is_operator:
                continue
            described = str(card.get("description", ""))
            tool = McpTool(
                mad=entry.mad,
                tool=str(card.get("name")),
                description=f"[{entry.mad}{', operators only' if operator else ''}] {described}",
                input_schema=dict(card.get("inputSchema") or {"type": "object"}),
                operator=operator,
            )
            found[tool.name] = tool
    return found
