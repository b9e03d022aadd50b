"""Hopper's boundary models: the run_tests arguments and result."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, create_model

from mads.core.sandbox_capability import limits_model
from sandbox import LimitHit, LimitMaxima


def run_tests_args_model(maxima: LimitMaxima) -> type[BaseModel]:
    """``run_tests`` arguments, bounded by the sandbox maxima like ``run_python``'s."""
    return create_model(
        "RunTestsArgs",
        __config__=ConfigDict(extra="forbid"),
        solution=(
            str,
            Field(min_length=1, max_length=maxima.input_bytes, description="module source, importable as `solution`"),
        ),
        tests=(
            str,
            Field(
                min_length=1,
                max_length=maxima.input_bytes,
                description="unittest module source, importable as `test_solution` (use `from solution import ...`)",
            ),
        ),
        limits=(limits_model(maxima) | None, Field(None, description="budgets; omitted ones use the defaults")),
    )


class RunTestsResult(BaseModel):
    """Outcome of a unittest run in the sandbox. ``ok`` needs a clean exit, no limit hit and no failures."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    tests_run: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed_tests: list[str] = Field(default_factory=list)
    report: str = Field(description="unittest's verbose report (stderr), tail-truncated")
    stdout: str = Field(description="what the code printed, without the summary line")
    exit_code: int | None
    limit_hit: LimitHit | None
    duration_ms: float
