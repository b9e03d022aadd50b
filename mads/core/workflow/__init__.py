"""Workflows as data: versioned definitions, an append-only SQLite run log, and the engine that drives runs."""

from mads.core.workflow.definition import OUTCOME, Budget, StateSpec, TransitionSpec, WorkflowDefinition
from mads.core.workflow.engine import (
    Engine,
    GuardVerdict,
    RoleReply,
    RoleRequest,
    RunOutcome,
    StepContext,
    WorkflowFailure,
    check_output,
)
from mads.core.workflow.log import Entry, RunLog, RunLogError, RunRecord

__all__ = [
    "OUTCOME",
    "Budget",
    "Engine",
    "Entry",
    "GuardVerdict",
    "RoleReply",
    "RoleRequest",
    "RunLog",
    "RunLogError",
    "RunOutcome",
    "RunRecord",
    "StateSpec",
    "StepContext",
    "TransitionSpec",
    "WorkflowDefinition",
    "WorkflowFailure",
    "check_output",
]
