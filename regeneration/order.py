"""The order ``regenerate --all`` takes: a MAD after the MADs it calls, derived from the code.

Read by **parsing** the source, never importing it:

- the MADs are the ``MADS`` table of ``mads/registry.py`` (its order is the tie-break);
- the bus addresses are the constants of ``mads/core/names.py`` (``FIEDLER: Final = "fiedler"``);
- MAD ``a`` depends on MAD ``b`` when a module of ``mads/a/`` calls ``b``: a call ``….call(X, …)``
  (any method whose name starts with ``call``) whose first argument is ``names.B`` or a
  module-level alias of it (``AUDIT_MAD = names.MCNAMARA``);
- every MAD runs on the runtime, whose Imperator calls the addresses that are ``Field`` defaults
  in ``mads/core/imperator.py`` (Fiedler, Rogers): every MAD depends on those too.

MADs that call each other (Turing reads keys through Fiedler's callers and audits to McNamara,
Fiedler reads keys from Turing …) form a cycle; a cycle is one group (a strongly connected
component), groups are ordered so that a group comes after every group it calls, and inside a
group, and between independent groups, the registry's order decides.
"""

from __future__ import annotations

import ast
from pathlib import Path

from regeneration.report import REGISTRY, registered_mads

NAMES = "mads/core/names.py"
IMPERATOR = "mads/core/imperator.py"


def address_constants(names_source: str) -> dict[str, str]:
    """``FIEDLER`` → ``"fiedler"`` for every string constant of ``mads/core/names.py``."""
    found: dict[str, str] = {}
    for node in ast.parse(names_source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target.id] = value.value
    return found


def _address(node: ast.expr, constants: dict[str, str], aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "names":
        return constants.get(node.attr)
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    return None


def called_addresses(source: str, constants: dict[str, str]) -> set[str]:
    """The addresses one module calls: ``….call*(names.X | alias, …)``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            address = _address(node.value, constants, {})
            for target in targets:
                if address is not None and isinstance(target, ast.Name):
                    aliases[target.id] = address
    called: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name.startswith("call"):
            address = _address(node.args[0], constants, aliases)
            if address is not None:
                called.add(address)
    return called


def default_addresses(source: str, constants: dict[str, str]) -> set[str]:
    """The addresses that are ``Field(default=names.X)`` in one module (the Imperator's Fiedler and Rogers)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Field":
            for keyword in node.keywords:
                if keyword.arg == "default":
                    address = _address(keyword.value, constants, {})
                    if address is not None:
                        found.add(address)
    return found


def dependencies(source: Path) -> dict[str, set[str]]:
    """Each registered MAD → the registered MADs it calls (itself excluded). Blocking: call in a thread."""
    mads = list(registered_mads((source / REGISTRY).read_text(encoding="utf-8")))
    constants = address_constants((source / NAMES).read_text(encoding="utf-8"))
    runtime = default_addresses((source / IMPERATOR).read_text(encoding="utf-8"), constants)
    graph: dict[str, set[str]] = {}
    for mad in mads:
        called = set(runtime)
        for path in sorted((source / "mads" / mad).rglob("*.py")):
            called |= called_addresses(path.read_text(encoding="utf-8"), constants)
        graph[mad] = {m for m in called if m in mads and m != mad}
    return graph


def dependency_order(graph: dict[str, set[str]]) -> list[str]:
    """Every MAD after the MADs it calls; a cycle is one group, ordered inside by ``graph``'s order."""
    rank = {mad: i for i, mad in enumerate(graph)}
    groups = _components(graph)
    group_of = {mad: i for i, group in enumerate(groups) for mad in group}
    needs = {i: {group_of[d] for m in group for d in graph[m]} - {i} for i, group in enumerate(groups)}
    order: list[str] = []
    done: set[int] = set()
    while len(done) < len(groups):
        ready = [i for i in needs if i not in done and needs[i] <= done]
        first = min(ready, key=lambda i: min(rank[m] for m in groups[i]))
        order += sorted(groups[first], key=rank.__getitem__)
        done.add(first)
    return order


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups
