"""The development society's roles, as ephemeral MADs, and the master of ceremonies that routes to them.

Each role is a MAD class with its own role prompt and no tools: an instance is created for one
step of one run (its own bus address, ``hopper.<id>``), asked in prose through its Imperator
(so its LLM calls go through Fiedler, for the story's principal and within their budget), and
discarded. The master of ceremonies picks the role for a state by the capability the state
names, among the roles' declared capabilities.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from mads.core import names
from mads.core.base import MAD
from mads.core.workflow import RoleRequest

JSON_ONLY = (
    "Answer with exactly one JSON object and nothing else (no prose, no code fences), valid against the JSON "
    "Schema you are given; its `outcome` field names what happens next."
)


class RoleMAD(MAD):
    """A role of the society: ephemeral, prose only, no tools."""

    name = names.HOPPER
    persistent = False
    accepts_prose = True
    concurrency = 1
    capabilities: ClassVar[frozenset[str]] = frozenset()


class Planner(RoleMAD):
    description = "The planner: breaks a story into small tasks with dependencies and acceptance tests."
    role_prompt = "You plan work into small, testable tasks. " + JSON_ONLY
    capabilities = frozenset({"plan"})


class Engineer(RoleMAD):
    description = "The engineer: writes the Python modules a task needs so that its tests pass."
    role_prompt = (
        "You write Python 3.12 (stdlib only). Put every module in `files` (flat names such as `parse.py`); "
        "the task's tests import them. Read the earlier attempts' test output and fix what failed. " + JSON_ONLY
    )
    capabilities = frozenset({"implement"})


class Tester(RoleMAD):
    description = "The tester: writes unittest tests for a task's acceptance criteria."
    role_prompt = "You write unittest tests that check acceptance criteria exactly. " + JSON_ONLY
    capabilities = frozenset({"test"})


class Reviewer(RoleMAD):
    description = "The reviewer: reads a green attempt's diff and approves it or rejects it with remarks."
    role_prompt = "You review diffs for correctness and clarity; tests already pass. " + JSON_ONLY
    capabilities = frozenset({"review"})


ROLES: tuple[type[RoleMAD], ...] = (Planner, Engineer, Tester, Reviewer)


class NoRole(LookupError):
    pass


def route(capability: str) -> type[RoleMAD]:
    """The role that declares ``capability`` (the master of ceremonies' routing rule)."""
    for role in ROLES:
        if capability in role.capabilities:
            return role
    raise NoRole(f"no role declares the capability {capability!r}")


def prompt(request: RoleRequest, task: dict[str, Any], trail: list[dict[str, Any]]) -> str:
    """The prose a role is asked for one step: the task, what earlier steps and attempts showed, the schema."""
    lines = [f"Task: {task.get('title', '')}", task.get("description", "")]
    if task.get("acceptance"):
        lines.append("Acceptance criteria:\n" + "\n".join(f"- {a}" for a in task["acceptance"]))
    if task.get("tests"):
        lines.append("The work must pass these tests (module test_solution):\n" + task["tests"])
    if task.get("files"):
        lines.append("Files already on the project's main: " + ", ".join(task["files"]))
    if request.outputs:
        lines.append("Outputs of earlier steps of this attempt: " + json.dumps(request.outputs)[:6000])
    if trail:
        lines.append("Earlier attempts and checks (newest last):\n" + "\n".join(json.dumps(t)[:1500] for t in trail))
    if request.correction:
        lines.append(f"Your previous answer was refused: {request.correction}")
    lines.append("JSON Schema of your answer: " + json.dumps(request.output_schema))
    return "\n\n".join(line for line in lines if line)
