"""Architectural rules the code must keep, checked on every run.

These are the principles in ``principles/`` that a machine can check: MADs
never import each other (they speak over the bus), and the code is lint-clean.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from mads import registry

ROOT = Path(__file__).resolve().parent.parent


def _mad_package(path: Path) -> str | None:
    """The MAD a source file belongs to (``mads/rogers/store.py`` → ``rogers``)."""
    rel = path.relative_to(ROOT / "mads")
    name = rel.parts[0].removesuffix(".py")
    return name if name in registry.MADS else None


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_mads_never_import_each_other() -> None:
    offences = []
    for path in sorted((ROOT / "mads").rglob("*.py")):
        owner = _mad_package(path)
        if owner is None:
            continue
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[0] == "mads" and len(parts) > 1 and parts[1] in registry.MADS and parts[1] != owner:
                offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offences == [], "MADs must talk over the bus, not import each other:\n" + "\n".join(offences)


def test_infrastructure_does_not_import_mads() -> None:
    offences = []
    for package in ("bus", "sandbox"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imported_modules(path):
                if module.split(".")[0] == "mads":
                    offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offences == [], "bus/ and sandbox/ serve every MAD and must not depend on one:\n" + "\n".join(offences)


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
