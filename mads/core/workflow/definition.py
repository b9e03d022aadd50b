"""A workflow as data: a versioned definition of states, transitions, guards, hooks and budgets.

A definition is plain, serialisable data (it is stored with every run, so a run always
resumes under the version it started with). Guards and hooks are *named* here and bound
to code by the engine: an LLM's word never decides a transition, code does.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

OUTCOME = "outcome"
"""The field of a step's output that names the transition the role asks for."""


class Budget(BaseModel):
    """Ceilings for a state's steps or a whole run; ``None`` is unbounded."""

    model_config = ConfigDict(extra="forbid")

    llm_calls: int | None = Field(None, ge=1, description="LLM calls (corrective retries included)")
    cost_usd: float | None = Field(None, ge=0, description="cost booked by the roles")
    wall_s: float | None = Field(None, gt=0, description="wall-clock seconds")


class StateSpec(BaseModel):
    """One state: the role that works in it and the schema of what it must produce to leave it."""

    model_config = ConfigDict(extra="forbid")

    role: str | None = Field(None, description="the role that works in this state; None for a terminal state")
    output_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    max_corrections: int = Field(2, ge=0, le=10, description="corrective retries after an invalid output")
    budget: Budget = Field(default_factory=Budget)
    terminal: bool = False
    succeeded: bool = Field(False, description="for a terminal state: whether reaching it means success")


class TransitionSpec(BaseModel):
    """``source --on--> target``, taken when the step's output names ``on`` and the guard (code) agrees.

    ``before`` hooks run before the guard, ``after`` hooks once the transition is recorded. A guard's
    refusal takes ``refused_to`` instead (if set, running ``refused_hooks``); otherwise the step fails.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    on: str = Field(min_length=1)
    guard: str | None = None
    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    refused_to: str | None = None
    refused_hooks: list[str] = Field(default_factory=list)


class WorkflowDefinition(BaseModel):
    """A versioned workflow. Checked on construction: states referenced exist, schemas are valid JSON Schema."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_-]*$")
    version: int = Field(ge=1)
    initial: str
    states: dict[str, StateSpec]
    transitions: list[TransitionSpec]
    budget: Budget = Field(default_factory=Budget)
    on_end: list[str] = Field(
        default_factory=list, description="hooks run once when the run ends, however it ends (release claims)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> WorkflowDefinition:
        if self.initial not in self.states:
            raise ValueError(f"initial: unknown state {self.initial!r}")
        for name, state in self.states.items():
            if state.terminal == (state.role is not None):
                raise ValueError(f"states.{name}: a state has a role exactly when it is not terminal")
            try:
                jsonschema.Draft202012Validator.check_schema(state.output_schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"states.{name}.output_schema: {exc.message}") from None
        seen: set[tuple[str, str]] = set()
        for index, t in enumerate(self.transitions):
            for field in ("source", "target", "refused_to"):
                value = getattr(t, field)
                if value is not None and value not in self.states:
                    raise ValueError(f"transitions.{index}.{field}: unknown state {value!r}")
            if self.states[t.source].terminal:
                raise ValueError(f"transitions.{index}.source: {t.source!r} is terminal")
            if (t.source, t.on) in seen:
                raise ValueError(f"transitions.{index}: a second transition from {t.source!r} on {t.on!r}")
            seen.add((t.source, t.on))
        for name, state in self.states.items():
            if not state.terminal and not self.outcomes(name):
                raise ValueError(f"states.{name}: no transition leaves this state")
        return self

    def outcomes(self, state: str) -> list[str]:
        """The outcomes a step in ``state`` may name (one per transition leaving it)."""
        return [t.on for t in self.transitions if t.source == state]

    def transition(self, state: str, outcome: str) -> TransitionSpec | None:
        return next((t for t in self.transitions if t.source == state and t.on == outcome), None)

    def step_schema(self, state: str) -> dict[str, Any]:
        """The state's output schema, with ``outcome`` required and limited to the allowed outcomes."""
        schema = dict(self.states[state].output_schema)
        properties = dict(schema.get("properties", {}))
        properties[OUTCOME] = {"enum": self.outcomes(state)}
        schema["properties"] = properties
        schema["required"] = sorted({*schema.get("required", []), OUTCOME})
        schema["type"] = "object"
        return schema

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"
