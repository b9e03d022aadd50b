"""The architectural report of a regeneration's change, checked by code before a person sees it.

Given the ecosystem's source tree (a worktree on the run's branch) and the base it branched from:

* the files touched (``git diff --name-status``);
* the imports each Python file gained (AST, before and after);
* the principles broken, checked by code: a MAD importing another MAD (or the operator's
  commands), infrastructure (``bus``, ``sandbox``, ``mads.core``, ``regeneration``, ``gateway``)
  importing a MAD, a file outside the MAD's package, its tests and its requirements document
  touched without being declared;
* the MAD's public tool schemas added, removed or changed, with a JSON Schema diff. The schemas
  are read by importing the MAD class **in the confined process** (``regeneration.describe``),
  for the base and for the change alike: code written by an LLM never runs unconfined.

A report with a violation is *refused*: the change never reaches review.
"""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from regeneration.confinement import Confinement, ConfinementLimits
from regeneration.gitrepo import git

REGISTRY = "mads/registry.py"
INFRASTRUCTURE = ("bus", "sandbox", "gateway", "regeneration", "mads.core")

Rule = Literal["mad_imports_mad", "infrastructure_imports_mad", "undeclared_file", "protected_file"]

GOVERNANCE = (".ci/", "principles/", "regeneration/", "mads/registry.py")
"""Paths a regeneration may not change even when it declares them: the arbiter and the governance."""


class FileChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: str
    """``A`` added, ``M`` modified, ``D`` deleted, ``R`` renamed (``path`` is the new name)."""
    path: str


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: Rule
    path: str
    detail: str


class SchemaChange(BaseModel):
    """One difference between two JSON Schemas, at a JSON Pointer (RFC 6901)."""

    model_config = ConfigDict(frozen=True)

    pointer: str
    before: JsonValue = None
    after: JsonValue = None
    kind: Literal["added", "removed", "changed"]


class ToolChanges(BaseModel):
    model_config = ConfigDict(frozen=True)

    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: dict[str, list[SchemaChange]] = Field(default_factory=dict)


class ArchitecturalReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    mad: str
    base: str
    head: str
    files: list[FileChange]
    imports_added: dict[str, list[str]]
    violations: list[Violation]
    tools: ToolChanges
    schema_error: str | None = None
    """Why the tool descriptors could not be read (the MAD class failed to import in the sandbox)."""

    @property
    def refused(self) -> bool:
        """A change breaking a principle never reaches review."""
        return bool(self.violations)


# -- reading the tree ------------------------------------------------------------------------


def registered_mads(registry_source: str) -> dict[str, str]:
    """The ``MADS`` table of ``mads/registry.py`` (name → ``module:Class``), read by parsing, never importing."""
    tree = ast.parse(registry_source)
    for node in ast.walk(tree):
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(node, ast.AnnAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id == "MADS":
            value = ast.literal_eval(node.value)  # type: ignore[union-attr, arg-type]
            if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                return value
    raise ValueError(f"{REGISTRY}: no MADS table of name → 'module:Class'")


def module_of(path: str) -> str | None:
    """``mads/rogers/store.py`` → ``mads.rogers.store``; ``None`` for a file that is not Python."""
    pure = PurePosixPath(path)
    if pure.suffix != ".py":
        return None
    parts = list(pure.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Every module ``source`` imports, at any depth, relative imports resolved against ``module``."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
    return {name for name in found if name}


def unit_of(module: str) -> str:
    """The architectural unit: ``mads.rogers.store`` → ``mads.rogers``, ``bus.redis`` → ``bus``."""
    parts = module.split(".")
    if parts[0] == "mads" and len(parts) > 1:
        return f"mads.{parts[1]}"
    return parts[0]


# -- the report ------------------------------------------------------------------------------


async def build_report(
    worktree: Path,
    base: str,
    mad: str,
    confinement: Confinement,
    *,
    declared: Sequence[str] = (),
    limits: ConfinementLimits | None = None,
) -> ArchitecturalReport:
    """The report of ``worktree``'s HEAD against ``base`` for a regeneration of ``mad``."""
    head = (await git(worktree, "rev-parse", "HEAD")).strip()
    base_commit = (await git(worktree, "rev-parse", base)).strip()
    files = _parse_name_status(await git(worktree, "diff", "--name-status", "-M", base_commit, head))
    mads = list(registered_mads(await _show(worktree, head, REGISTRY) or ""))

    imports_added: dict[str, list[str]] = {}
    violations: list[Violation] = []
    for change in files:
        module = module_of(change.path)
        if module is not None and change.status != "D":
            is_package = change.path.endswith("__init__.py")
            after = imports_of(await _show(worktree, head, change.path) or "", module, is_package)
            old_path = change.path
            before_source = await _show(worktree, base_commit, old_path)
            before = imports_of(before_source, module, is_package) if before_source else set()
            added = sorted(after - before)
            if added:
                imports_added[change.path] = added
            violations += _import_violations(change.path, module, after, mads)
        if is_protected(change.path):
            violations.append(
                Violation(
                    rule="protected_file",
                    path=change.path,
                    detail="the tests' arbiter, the principles and the regeneration are not the change's to edit",
                )
            )
        elif not _allowed(change.path, mad, declared):
            violations.append(
                Violation(
                    rule="undeclared_file",
                    path=change.path,
                    detail=f"outside mads/{mad}/, tests/mads/{mad}/ and requirements/{mad}.md, and not declared",
                )
            )

    target = registered_mads(await _show(worktree, head, REGISTRY) or "").get(mad)
    tools = ToolChanges()
    schema_error = None
    if target is None:
        schema_error = f"{mad} is not in {REGISTRY}"
    else:
        before_tools, before_error = await _descriptors(worktree, base_commit, target, confinement, limits)
        after_tools, after_error = await _descriptors(worktree, head, target, confinement, limits)
        schema_error = after_error or (f"base: {before_error}" if before_error else None)
        tools = diff_tools(before_tools, after_tools)
    return ArchitecturalReport(
        mad=mad,
        base=base_commit,
        head=head,
        files=files,
        imports_added=imports_added,
        violations=violations,
        tools=tools,
        schema_error=schema_error,
    )


def _parse_name_status(output: str) -> list[FileChange]:
    changes = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            changes.append(FileChange(status=fields[0][0], path=fields[-1]))
    return changes


def is_protected(path: str) -> bool:
    """Top-level files (``sitecustomize.py``, ``pytest.ini``, ``pyproject.toml`` …), the test harness outside
    ``tests/mads/<mad>/`` (the architecture tests, ``conftest.py``, ``support/``), CI, principles, regeneration."""
    parts = path.split("/")
    if len(parts) == 1:
        return True
    if parts[0] == "tests":
        return not (len(parts) >= 4 and parts[1] == "mads")
    return path.startswith(GOVERNANCE)


def _allowed(path: str, mad: str, declared: Sequence[str]) -> bool:
    own = (f"mads/{mad}/", f"tests/mads/{mad}/")
    return path.startswith(own) or path == f"requirements/{mad}.md" or path in declared


def _import_violations(path: str, module: str, imports: set[str], mads: Sequence[str]) -> list[Violation]:
    """Imports of ``module`` that break a layering principle, one per imported unit."""
    source_unit = unit_of(module)
    mad_units = {f"mads.{name}" for name in mads}
    found: dict[tuple[str, str], Violation] = {}
    for name in sorted(imports):  # shortest first: ``from a.b import c`` names a.b before a.b.c
        target_unit = unit_of(name)
        if target_unit == source_unit:
            continue
        if source_unit in mad_units and (target_unit in mad_units or target_unit == "mads.admin"):
            rule: Rule = "mad_imports_mad"
            detail = f"{module} imports {name}: MADs talk to each other over the bus"
        elif source_unit in INFRASTRUCTURE and target_unit in mad_units:
            rule = "infrastructure_imports_mad"
            detail = f"{module} imports {name}: infrastructure serves every MAD and imports none"
        else:
            continue
        found.setdefault((rule, target_unit), Violation(rule=rule, path=path, detail=detail))
    return list(found.values())


async def _show(worktree: Path, commit: str, path: str) -> str | None:
    try:
        return await git(worktree, "show", f"{commit}:{path}")
    except RuntimeError:
        return None


async def _descriptors(
    worktree: Path, commit: str, target: str, confinement: Confinement, limits: ConfinementLimits | None
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The tool descriptors of ``target`` at ``commit``, read in the confined process from an export of the tree."""
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="regen-describe-"))
    try:
        exclude_wasm = ":(exclude)*.wasm"  # the WASM runtime is not needed to import a MAD
        archive = await asyncio.create_subprocess_exec(
            *("git", "-c", "safe.directory=*", "-C", str(worktree), "archive", "--format=tar", commit),
            *("--", ".", exclude_wasm),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        tar_bytes, err = await archive.communicate()
        if archive.returncode != 0:
            raise RuntimeError(f"git archive {commit}: {err.decode(errors='replace').strip()}")
        untar = await asyncio.create_subprocess_exec(
            "tar", "-x", "-C", str(scratch), stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await untar.communicate(tar_bytes)
        if untar.returncode != 0:
            raise RuntimeError(f"tar: {err.decode(errors='replace').strip()}")
        result = await confinement.run(
            [sys.executable, "-m", "regeneration.describe", target],
            scratch,
            limits or ConfinementLimits(wall_seconds=120),
            {"PYTHONPATH": str(scratch)},
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    if not result.ok:
        reason = "timed out" if result.timed_out else (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, f"{target} could not be described: {reason}"
    try:
        described = json.loads(result.stdout)
        return {t["name"]: t for t in described["tools"]}, None
    except (ValueError, KeyError, TypeError) as e:
        return {}, f"{target}: unreadable descriptors ({e})"


# -- JSON Schema diff ------------------------------------------------------------------------


def diff_tools(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> ToolChanges:
    changed = {}
    for name in sorted(set(before) & set(after)):
        differences = schema_diff(before[name], after[name])
        if differences:
            changed[name] = differences
    return ToolChanges(
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        changed=changed,
    )


def schema_diff(before: JsonValue, after: JsonValue, pointer: str = "") -> list[SchemaChange]:
    """Every difference between two JSON documents, by JSON Pointer (lists compared as sets when of scalars)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[SchemaChange] = []
        for key in sorted(set(before) | set(after)):
            child = f"{pointer}/{_escape(key)}"
            if key not in after:
                out.append(SchemaChange(pointer=child, before=before[key], kind="removed"))
            elif key not in before:
                out.append(SchemaChange(pointer=child, after=after[key], kind="added"))
            else:
                out += schema_diff(before[key], after[key], child)
        return out
    if before == after:
        return []
    return [SchemaChange(pointer=pointer or "/", before=before, after=after, kind="changed")]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
