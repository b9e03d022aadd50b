"""The slash-command syntax people type to Grace, and how results are shown to them.

Syntax (one line; the JSON may span lines)::

    /help                         list the MADs that are up and their tools
    /help <mad>                   one MAD's tools with their arguments
    /<mad> <tool>                 run a tool that needs no arguments
    /<mad> <tool> <json-object>   run a tool, e.g. /rogers search {"query": "budget"}

Commands go straight to the MAD's tool: no LLM, zero tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

SYNTAX = '/<mad> <tool> [<json-object>]   e.g. /rogers search {"query": "budget"}   (or /help, /help <mad>)'
_HEAD = re.compile(r"^/(?P<mad>\S+)(?:\s+(?P<tool>\S+))?(?:\s+(?P<rest>.*))?$", re.DOTALL)
_NAME = re.compile(r"^[a-z_][a-z0-9_\-]*$")
_TOOL = re.compile(r"^[a-z][a-z0-9_]*$")


class CommandSyntaxError(ValueError):
    """The text starts with ``/`` but is not a command; the message says why and shows the syntax."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{reason}\nSyntax: {SYNTAX}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class HelpCommand:
    mad: str | None = None


@dataclass(frozen=True)
class ToolCommand:
    mad: str
    tool: str
    arguments: dict[str, JsonValue] = field(default_factory=dict)


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


def parse(text: str) -> HelpCommand | ToolCommand:
    """Parse one command, or raise :class:`CommandSyntaxError` naming the part that is wrong."""
    match = _HEAD.match(text.strip())
    if match is None:
        raise CommandSyntaxError("mad", "a command needs a MAD name right after the slash")
    mad, tool, rest = match["mad"], match["tool"], (match["rest"] or "").strip()
    if mad == "help":
        if rest:
            raise CommandSyntaxError("mad", "/help takes at most one MAD name")
        if tool is not None and not _NAME.match(tool):
            raise CommandSyntaxError("mad", f"{tool!r} is not a MAD name")
        return HelpCommand(tool)
    if not _NAME.match(mad):
        raise CommandSyntaxError("mad", f"{mad!r} is not a MAD name (lowercase letters, digits, _ or -)")
    if tool is None:
        raise CommandSyntaxError("tool", f"say which tool of {mad} to run (try /help {mad})")
    if tool.startswith("{"):
        raise CommandSyntaxError("tool", f"the tool name comes before the JSON arguments (try /help {mad})")
    if not _TOOL.match(tool):
        raise CommandSyntaxError("tool", f"{tool!r} is not a tool name (lowercase letters, digits and _)")
    if not rest:
        return ToolCommand(mad, tool)
    try:
        arguments = json.loads(rest)
    except json.JSONDecodeError as exc:
        raise CommandSyntaxError(
            "arguments", f"the arguments are not valid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    if not isinstance(arguments, dict):
        raise CommandSyntaxError("arguments", f"the arguments must be a JSON object, not {type(arguments).__name__}")
    return ToolCommand(mad, tool, arguments)


def describe_arguments(schema: dict[str, Any]) -> str:
    """A one-line summary of a tool's arguments: ``{"query": string, "limit"?: integer}``."""
    properties: dict[str, Any] = schema.get("properties") or {}
    if not properties:
        return "(no arguments)"
    required = set(schema.get("required") or [])
    parts = []
    for name, spec in properties.items():
        kind = spec.get("type") or "/".join(str(o.get("type")) for o in spec.get("anyOf", []) if o.get("type"))
        parts.append(f'"{name}"{"" if name in required else "?"}: {kind or "any"}')
    return "{" + ", ".join(parts) + "}"


def format_help(cards: list[dict[str, Any]], only: str | None = None) -> str:
    """The text of ``/help``: every MAD with its tools, or one MAD in detail."""
    if only is not None:
        card = next((c for c in cards if c.get("name") == only), None)
        if card is None:
            known = ", ".join(sorted(str(c.get("name")) for c in cards)) or "none"
            return f"No MAD named {only!r} is running (running: {known})."
        lines = [f"{only} — {card.get('description', '')}", ""]
        for tool in card.get("tools", []):
            lines.append(f"/{only} {tool['name']} {describe_arguments(tool.get('inputSchema') or {})}")
            lines.append(f"    {tool.get('description', '')}")
        return "\n".join(lines).rstrip()
    lines = ["Commands go straight to a MAD's tool (no LLM, zero tokens).", f"Syntax: {SYNTAX}", ""]
    for card in sorted(cards, key=lambda c: str(c.get("name"))):
        tools = ", ".join(t["name"] for t in card.get("tools", [])) or "no tools"
        lines.append(f"{card.get('name')} — {card.get('description', '')}")
        lines.append(f"    tools: {tools}")
    lines.append("")
    lines.append("Anything that does not start with / goes to Grace, who may hand it to another MAD.")
    return "\n".join(lines)


def format_result(mad: str, tool: str, value: JsonValue, limit: int) -> str:
    """A command's result as text: the value as indented JSON, cut at ``limit`` characters."""
    body = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(body) > limit:
        body = body[:limit] + f"\n… ({len(body) - limit} more characters; the full result is in the reply data)"
    return f"/{mad} {tool}:\n{body}"
