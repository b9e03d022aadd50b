"""The society's workflow definitions, as data (the engine in mads/core/workflow runs them)."""

from __future__ import annotations

from mads.core.workflow import WorkflowDefinition

FILE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*\.py$"

TASK = WorkflowDefinition.model_validate(
    {
        "name": "task",
        "version": 1,
        "initial": "implement",
        "states": {
            "implement": {
                "role": "implement",
                "output_schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 20,
                            "propertyNames": {"pattern": FILE_NAME},
                            "additionalProperties": {"type": "string", "maxLength": 100_000},
                        },
                        "notes": {"type": "string", "maxLength": 4000},
                    },
                    "required": ["files"],
                },
                "max_corrections": 2,
                "budget": {"llm_calls": 12},
            },
            "review": {
                "role": "review",
                "output_schema": {
                    "type": "object",
                    "properties": {"remarks": {"type": "string", "maxLength": 4000}},
                    "required": ["remarks"],
                },
                "max_corrections": 2,
                "budget": {"llm_calls": 6},
            },
            "done": {"terminal": True, "succeeded": True},
            "failed": {"terminal": True},
        },
        "transitions": [
            {
                "source": "implement",
                "target": "review",
                "on": "submit",
                "before": ["write_files"],
                "guard": "tests_green",
                "after": ["to_review"],
                "refused_to": "implement",
            },
            {"source": "implement", "target": "failed", "on": "give_up"},
            {"source": "review", "target": "done", "on": "approve", "before": ["merge"]},
            {"source": "review", "target": "implement", "on": "reject", "after": ["to_in_progress"]},
        ],
        "budget": {"llm_calls": 30, "wall_s": 900},
        "on_end": ["release_claims", "settle"],
    }
)
"""One attempt at one task: the engineer writes files (committed on the attempt's branch), the tests guard
the way to review, the reviewer approves (the branch is merged into main first) or sends it back."""
