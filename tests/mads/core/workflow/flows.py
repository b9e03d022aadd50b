"""Workflow definitions and role bindings shared by the engine tests (plain data and plain code)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mads.core.workflow import RoleReply, RoleRequest, WorkflowDefinition

CODE_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string", "minLength": 1}},
    "required": ["code"],
}


def pipeline(**overrides: Any) -> WorkflowDefinition:
    """plan -> code -> (guard: checked) -> done; code may be refused back to code; review can reject."""
    spec: dict[str, Any] = {
        "name": "pipeline",
        "version": 1,
        "initial": "plan",
        "states": {
            "plan": {"role": "planner", "output_schema": {"type": "object"}},
            "code": {"role": "engineer", "output_schema": CODE_SCHEMA},
            "done": {"terminal": True, "succeeded": True},
            "failed": {"terminal": True},
        },
        "transitions": [
            {"source": "plan", "target": "code", "on": "planned", "after": ["record"]},
            {
                "source": "code",
                "target": "done",
                "on": "ready",
                "guard": "checked",
                "before": ["record"],
                "after": ["record"],
                "refused_to": "code",
            },
            {"source": "code", "target": "failed", "on": "give_up"},
        ],
        "on_end": ["release"],
    }
    spec.update(overrides)
    return WorkflowDefinition.model_validate(spec)


class Script:
    """A role binding answering from a list of texts (or callables of the request), recording every request."""

    def __init__(self, *answers: str | dict[str, Any] | Callable[[RoleRequest], str]) -> None:
        self.answers = list(answers)
        self.requests: list[RoleRequest] = []

    async def __call__(self, request: RoleRequest) -> RoleReply:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if callable(answer):
            answer = answer(request)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return RoleReply(text=text, cost_usd=0.01)
