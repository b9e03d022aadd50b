"""Architectural rules the code must keep, checked on every run.

These are the principles in ``principles/`` that a machine can check. The product is
built in floors, each importing only from the floors below it:

1. ``mad_ecosystem`` — the entry point: composes the host with the gateway;
2. ``gateway`` — the door (it reaches MADs over the bus only) — and ``mads.admin``, the
   operator's offline commands; ``mads.host`` and ``mads.registry`` — the only code that
   names every MAD;
3. ``mads.<name>`` — one package per MAD, which never imports another MAD;
4. ``mads.core`` — the runtime every MAD stands on, which imports no MAD;
5. ``bus`` and ``sandbox`` — infrastructure, which imports nothing above; ``regeneration`` —
   infrastructure on the runtime (``mads.core``), which never imports a MAD: a MAD under
   regeneration is imported only inside the confined process.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from mads import registry

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("bus", "sandbox", "mads", "gateway", "regeneration", "mad_ecosystem")
MADS = frozenset(registry.MADS)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "guest" in path.parts:  # runs inside the WASM cell, not in the host process
                continue
            found[_module_name(path)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:`` — annotations only, never executed, so not a dependency."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _imports(path: Path) -> set[str]:
    """Every product module ``path`` imports when it runs, at any depth (inside functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from a.b import c``: the module ``a.b.c`` if there is one, else ``a.b`` (see _owning_module).
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PRODUCT}


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        graph[module] = {_owning_module(name, sources) for name in _imports(path)} - {module, ""}
    return graph


def _owning_module(name: str, sources: dict[str, Path]) -> str:
    """``mads.core.base.MAD`` → ``mads.core.base`` (the longest prefix that is a module)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in sources:
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The architectural unit a module belongs to: ``mads.rogers``, ``mads.core``, ``gateway``, ``bus`` …"""
    parts = module.split(".")
    if parts[0] == "mads" and len(parts) > 1:
        return f"mads.{parts[1]}"
    return parts[0]


def _is_mad(unit: str) -> bool:
    return unit.startswith("mads.") and unit.removeprefix("mads.") in MADS


def _offences(rule: str, check: object) -> list[str]:
    assert callable(check)
    out = []
    for module, targets in sorted(_graph().items()):
        for target in sorted(targets):
            if check(_unit(module), _unit(target)):
                out.append(f"{module} imports {target}  ({rule})")
    return out


def test_mads_never_import_each_other_or_the_operator_commands() -> None:
    offences = _offences(
        "a MAD talks to other MADs over the bus",
        lambda src, dst: _is_mad(src) and src != dst and (_is_mad(dst) or dst == "mads.admin"),
    )
    assert offences == [], "\n".join(offences)


def test_the_runtime_imports_no_mad() -> None:
    offences = _offences(
        "mads.core is the runtime every MAD stands on",
        lambda src, dst: src == "mads.core" and dst not in ("mads.core", "bus", "sandbox"),
    )
    assert offences == [], "\n".join(offences)


def test_infrastructure_imports_nothing_above_it() -> None:
    offences = _offences(
        "bus/ and sandbox/ serve every MAD and depend on none",
        lambda src, dst: src in ("bus", "sandbox") and dst not in ("bus", "sandbox"),
    )
    assert offences == [], "\n".join(offences)


def test_regeneration_imports_only_the_runtime_and_infrastructure() -> None:
    offences = _offences(
        "regeneration never imports a MAD: LLM-written code is imported only inside the confined process",
        lambda src, dst: src == "regeneration" and dst not in ("regeneration", "mads.core", "bus", "sandbox"),
    )
    assert offences == [], "\n".join(offences)


def test_the_gateway_reaches_mads_only_over_the_bus() -> None:
    offences = _offences(
        "the gateway uses the runtime and the bus, never a MAD's code",
        lambda src, dst: src == "gateway" and (_is_mad(dst) or dst in ("mads.host", "mads.registry", "mad_ecosystem")),
    )
    assert offences == [], "\n".join(offences)


def test_only_the_entry_point_composes_host_and_gateway() -> None:
    offences = _offences(
        "nothing imports the entry point; the host does not import the gateway",
        lambda src, dst: (
            (dst == "mad_ecosystem" and src != "mad_ecosystem")
            or (src in ("mads.host", "mads.registry") and dst == "gateway")
        ),
    )
    assert offences == [], "\n".join(offences)


def test_no_import_cycle_between_units() -> None:
    """Between packages (a MAD, the runtime, the gateway, the bus …) imports go one way only."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        for target in targets:
            if _unit(module) != _unit(target):
                edges[_unit(module)].add(_unit(target))
    cycles = []
    for start in sorted(edges):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    cycles.append(" → ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == [], "\n".join(sorted(set(cycles)))


def test_no_import_cycle_between_modules() -> None:
    """Not even inside a package: a cycle is fixed by moving the shared part, not by a lazy import.

    A package's ``__init__`` re-exporting its own modules is not counted (``from mads.rogers.mad
    import Rogers`` in ``mads/rogers/__init__.py``): nothing is executed out of order by it.
    """
    graph = {module: {t for t in targets if not t.startswith(module + ".")} for module, targets in _graph().items()}
    cycles = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    cycles.append(" → ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == [], "\n".join(cycles)


def test_importing_the_runtime_loads_no_mad() -> None:
    """``python -X importtime -c 'import mads.core…'`` shows no MAD package: the runtime stands alone."""
    code = "import mads.core.base, mads.core.imperator, mads.core.settings, mads.core.telemetry, mads.core.quarantine"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    mads_loaded = sorted(m for m in loaded if _is_mad(_unit(m)) or m == "gateway" or m.startswith("gateway."))
    assert mads_loaded == []


def test_mad_names_are_constants_not_strings() -> None:
    """A MAD's name appears as a string literal only in ``mads/core/names.py`` (and the registry's table)."""
    allowed = {ROOT / "mads" / "core" / "names.py", ROOT / "mads" / "registry.py"}
    offences = []
    for module, path in _sources().items():
        if path in allowed:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MADS:
                offences.append(f"{module}:{node.lineno} {node.value!r}")
    assert offences == [], "use mads.core.names constants:\n" + "\n".join(offences)


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
