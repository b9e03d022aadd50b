"""Each MAD's requirements document names what a regeneration needs: tools with argument and result schemas,
events and storage — checked against the code, so drift between the two fails here.

For every MAD of ``mads/registry.py``, ``requirements/<mad>.md`` must name:

- every tool the MAD's own classes declare (``@tool``) or build at run time (``Tool.from_model("name", …)``), as
  `` `name`…`` in code type;
- every argument of each tool (the argument model's JSON Schema ``properties``);
- its result: each field of the result model (the tool's return annotation) when it is a pydantic model; otherwise
  (a plain ``dict``) a bullet that names the tool and describes its result after ``→``, or a table row naming the
  tool with a result column;
- every bus topic the MAD emits (``emit(TOPIC, …)``, resolved through ``bus.topics`` and the runtime) or imports
  from ``bus.topics`` (what it subscribes to), as the topic string (``events.claim``);
- a ``## Storage`` section, naming every SQLite file (``"<name>.db"``) the MAD's code mentions.

The documents are the source of truth: when this fails, either the code drifted from its requirements or the
requirements must be updated on purpose (say what the tool takes and returns, in prose or a table).
"""

from __future__ import annotations

import ast
import importlib
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from mads import registry
from mads.core.tools import declared_tools

ROOT = Path(__file__).resolve().parent.parent
SAFE_TO_IMPORT = ("bus.", "mads.core.")
"""Modules imported to resolve a topic constant; a MAD's own modules are only parsed (some run code at import)."""


def _doc(mad: str) -> str:
    return (ROOT / "requirements" / f"{mad}.md").read_text(encoding="utf-8")


def _sources(mad: str) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted((ROOT / "mads" / mad).rglob("*.py"))]


def _named(doc: str, word: str) -> bool:
    return re.search(r"(?<![\w.])" + re.escape(word) + r"(?!\w)", doc) is not None


def blocks(doc: str) -> list[str]:
    """The doc's bullets (with their indented continuation lines), table rows and paragraphs."""
    found: list[str] = []
    for line in doc.splitlines():
        if found and line.startswith(" ") and line.strip():
            found[-1] += "\n" + line
        else:
            found.append(line)
    return found


def describes_result(doc: str, tool: str) -> bool:
    """A bullet or paragraph naming the tool with ``→`` and its result, or a table row naming it with a result cell."""
    for block in blocks(doc):
        if f"`{tool}" not in block:
            continue
        if "→" in block or (block.startswith(f"| `{tool}") and block.count("|") >= 4):
            return True
    return False


def own_tools(mad: str) -> dict[str, typing.Any]:
    """Tool name → the function of every ``@tool`` declared on the MAD's own classes (not the runtime's)."""
    cls = registry.load(mad)
    own_classes = [k for k in cls.__mro__ if k.__module__.startswith(f"mads.{mad}")]
    tools = declared_tools(cls)
    found = {}
    for name, tool in tools.items():
        if any(tool.func in vars(k).values() for k in own_classes):
            found[name] = tool
    return found


def runtime_tools(mad: str) -> set[str]:
    """Names of tools built at run time: ``Tool.from_model("name", …)`` with a literal name."""
    found = set()
    for _, tree in _sources(mad):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_model"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def _resolve(node: ast.expr, imported: dict[str, str], local: dict[str, str]) -> str | None:
    """A topic expression's value: a literal, a module constant, or a constant of an importable runtime module."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in local:
            return local[node.id]
        source = imported.get(node.id)
        if source is not None and source.startswith(SAFE_TO_IMPORT):
            module, _, attr = source.rpartition(".")
            value = getattr(importlib.import_module(module), attr, None)
            return value if isinstance(value, str) else None
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = imported.get(node.value.id)
        if module is not None and module.startswith(SAFE_TO_IMPORT):
            value = getattr(importlib.import_module(module), node.attr, None)
            return value if isinstance(value, str) else None
    return None


def topics(mad: str) -> set[str]:
    """Every topic the MAD emits (resolved) or imports from ``bus.topics``."""
    found: set[str] = set()
    for _, tree in _sources(mad):
        imported: dict[str, str] = {}
        local: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    imported[alias.asname or alias.name] = alias.name
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = _resolve(node.value, imported, {})
                for target in targets:
                    if isinstance(target, ast.Name) and value is not None:
                        local[target.id] = value
        for name, source in imported.items():
            if source.startswith("bus.topics.") and name.isupper():
                value = _resolve(ast.Name(id=name), imported, {})
                if value is not None and value.startswith("events."):
                    found.add(value)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
                and node.args
            ):
                value = _resolve(node.args[0], imported, local)
                if value is not None:
                    found.add(value)
    return found


def databases(mad: str) -> set[str]:
    """Every ``"<name>.db"`` literal in the MAD's code."""
    found = set()
    for _, tree in _sources(mad):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"[\w-]+\.db", node.value)
            ):
                found.add(node.value)
    return found


MADS = list(registry.MADS)


@pytest.mark.parametrize("mad", MADS)
def test_every_tool_and_argument_is_named(mad: str) -> None:
    doc = _doc(mad)
    tools = own_tools(mad)
    missing = [f"tool {name}" for name in sorted({*tools, *runtime_tools(mad)}) if not _named(doc, f"`{name}")]
    for name, tool in tools.items():
        properties = tool.input_schema().get("properties", {})
        missing += [f"argument {name}.{p}" for p in properties if not _named(doc, p)]
    assert missing == [], f"requirements/{mad}.md does not name: {', '.join(missing)}"


@pytest.mark.parametrize("mad", MADS)
def test_every_result_is_described(mad: str) -> None:
    doc = _doc(mad)
    missing = []
    for name, tool in own_tools(mad).items():
        returned = typing.get_type_hints(tool.func).get("return")
        models = [
            t for t in (typing.get_args(returned) or (returned,)) if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if models:
            missing += [f"result {name}.{f}" for m in models for f in m.model_fields if not _named(doc, f)]
        elif not describes_result(doc, name):
            missing.append(f"result of {name} (a bullet naming `{name}` with → and what it returns, or a table row)")
    assert missing == [], f"requirements/{mad}.md does not name: {', '.join(missing)}"


@pytest.mark.parametrize("mad", MADS)
def test_every_event_and_store_is_named(mad: str) -> None:
    doc = _doc(mad)
    missing = [f"topic {t}" for t in sorted(topics(mad)) if t not in doc]
    if not re.search(r"^## Storage\b", doc, re.M):
        missing.append("a '## Storage' section")
    missing += [f"database {db}" for db in sorted(databases(mad)) if db not in doc]
    assert missing == [], f"requirements/{mad}.md does not name: {', '.join(missing)}"


def test_the_checks_see_what_the_code_has() -> None:
    """The readers above find real tools, topics and stores (a reader that finds nothing checks nothing)."""
    assert {"record", "verify"} <= set(own_tools("mcnamara"))
    assert "browse" in runtime_tools("marco")
    assert {"events.claim"} <= topics("horace")
    assert {"events.storage", "events.storage_ledger"} <= topics("rogers")
    assert {"conversations.db", "artifacts.db"} <= databases("rogers")
