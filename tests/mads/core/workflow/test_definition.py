"""Workflow definitions are data, checked when loaded: every reference resolves, every schema is valid."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mads.core.workflow import WorkflowDefinition
from tests.mads.core.workflow.flows import pipeline


def test_a_definition_round_trips_as_json_and_lists_outcomes_per_state() -> None:
    definition = pipeline()
    again = WorkflowDefinition.model_validate_json(definition.model_dump_json())
    assert again == definition
    assert definition.outcomes("code") == ["ready", "give_up"]
    schema = definition.step_schema("code")
    assert schema["properties"]["outcome"] == {"enum": ["ready", "give_up"]}
    assert set(schema["required"]) == {"code", "outcome"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"initial": "nowhere"}, "initial: unknown state 'nowhere'"),
        (
            {"transitions": [{"source": "plan", "target": "limbo", "on": "x"}]},
            "transitions.0.target: unknown state 'limbo'",
        ),
        (
            {
                "states": {
                    "plan": {"role": "planner", "output_schema": {"type": "nonsense"}},
                    "done": {"terminal": True},
                },
                "transitions": [{"source": "plan", "target": "done", "on": "x"}],
            },
            "states.plan.output_schema",
        ),
        (
            {
                "states": {"plan": {"role": "planner"}, "done": {"terminal": True, "role": "x"}},
                "transitions": [{"source": "plan", "target": "done", "on": "x"}],
            },
            "states.done: a state has a role exactly when it is not terminal",
        ),
        (
            {
                "states": {"plan": {"role": "planner"}, "done": {"terminal": True}},
                "transitions": [
                    {"source": "plan", "target": "done", "on": "x"},
                    {"source": "plan", "target": "plan", "on": "x"},
                ],
            },
            "transitions.1: a second transition from 'plan' on 'x'",
        ),
        (
            {
                "states": {"plan": {"role": "planner"}, "stuck": {"role": "x"}, "done": {"terminal": True}},
                "transitions": [{"source": "plan", "target": "done", "on": "x"}],
            },
            "states.stuck: no transition leaves this state",
        ),
        (
            {
                "states": {"plan": {"role": "planner"}, "done": {"terminal": True}},
                "transitions": [
                    {"source": "plan", "target": "done", "on": "x"},
                    {"source": "done", "target": "plan", "on": "y"},
                ],
            },
            "transitions.1.source: 'done' is terminal",
        ),
    ],
)
def test_an_inconsistent_definition_is_refused_naming_the_field(override: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipeline(**override)
