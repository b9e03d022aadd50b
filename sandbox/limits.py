"""Request, maxima and result models for one sandbox run."""

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

KiB = 1024
MiB = 1024 * KiB

# The snapshot's linear memory after the warm-up turn is ~40 MiB; a smaller cap cannot even start a cell.
MODULE_MIN_MEMORY = 64 * MiB

LimitHit = Literal["timeout", "fuel", "memory", "output", "scratch"]

# Matched with fullmatch: `$` would also accept a name ending in a newline.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


class LimitMaxima(BaseModel):
    """Operator-configured ceilings; a request above one is rejected, never clamped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(30.0, gt=0, le=600)
    fuel: int = Field(100_000_000_000, gt=0)
    memory_bytes: int = Field(512 * MiB, ge=MODULE_MIN_MEMORY, le=4096 * MiB)
    output_bytes: int = Field(1 * MiB, gt=0)
    collect_bytes: int = Field(4 * MiB, ge=0)
    code_bytes: int = Field(256 * KiB, gt=0)
    input_bytes: int = Field(16 * MiB, ge=0)
    input_files: int = Field(32, ge=0)
    scratch_bytes: int = Field(256 * MiB, ge=0)
    scratch_files: int = Field(10_000, ge=0)
    open_files: int = Field(64, ge=8, le=4096, description="files a cell may hold open at once (EMFILE past it)")

    def default_limits(self) -> "RunLimits":
        """Defaults for a request that names no limits, lowered to fit these maxima."""
        defaults = RunLimits.model_construct()
        values = {name: min(getattr(defaults, name), getattr(self, name)) for name in RunLimits.model_fields}
        return RunLimits.model_validate(values, context={"maxima": self})


class RunLimits(BaseModel):
    """Per-run budgets. Validate with context={"maxima": LimitMaxima} to enforce the ceilings."""

    # Re-check instances too, so a RunLimits built elsewhere still meets the maxima in the context.
    model_config = ConfigDict(frozen=True, extra="forbid", revalidate_instances="always")

    timeout_s: float = Field(5.0, gt=0, description="wall clock, enforced by epoch interruption")
    fuel: int = Field(20_000_000_000, gt=0, description="wasm instructions (roughly); print(1) costs ~0.2e9")
    memory_bytes: int = Field(256 * MiB, ge=MODULE_MIN_MEMORY, description="linear memory cap")
    output_bytes: int = Field(64 * KiB, gt=0, description="cap per stream (stdout and stderr each)")
    collect_bytes: int = Field(1 * MiB, ge=0, description="total bytes returned from scratch files")
    scratch_bytes: int = Field(64 * MiB, ge=0, description="bytes the program may keep in scratch (EDQUOT past it)")
    scratch_files: int = Field(2_000, ge=0, description="files and directories the program may keep in scratch")

    @field_validator("*")
    @classmethod
    def _within_maxima(cls, value: float, info: ValidationInfo) -> float:
        maxima = (info.context or {}).get("maxima")
        if maxima is not None and info.field_name is not None:
            ceiling = getattr(maxima, info.field_name)
            if value > ceiling:
                raise ValueError(f"{value} exceeds the configured maximum {ceiling}")
        return value


class RunRequest(BaseModel):
    """Everything one run needs, checked against the maxima in the validation context."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    limits: RunLimits
    input_files: dict[str, bytes] = Field(default_factory=dict)
    collect_files: bool = False

    @field_validator("code")
    @classmethod
    def _code_size(cls, value: str, info: ValidationInfo) -> str:
        maxima: LimitMaxima = (info.context or {}).get("maxima") or LimitMaxima()
        size = len(value.encode())
        if size > maxima.code_bytes:
            raise ValueError(f"code is {size} bytes, above the maximum {maxima.code_bytes}")
        if "\x00" in value:
            raise ValueError("code contains a NUL byte")
        return value

    @field_validator("input_files", mode="before")
    @classmethod
    def _encode_text(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: v.encode() if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("input_files")
    @classmethod
    def _input_files(cls, value: dict[str, bytes], info: ValidationInfo) -> dict[str, bytes]:
        maxima: LimitMaxima = (info.context or {}).get("maxima") or LimitMaxima()
        if len(value) > maxima.input_files:
            raise ValueError(f"{len(value)} input files, above the maximum {maxima.input_files}")
        for name in value:
            if not _SAFE_NAME.fullmatch(name) or name in {".", ".."}:
                raise ValueError(f"input file name {name!r} must be a plain file name ([A-Za-z0-9._-], no '/')")
        total = sum(len(data) for data in value.values())
        if total > maxima.input_bytes:
            raise ValueError(f"input files total {total} bytes, above the maximum {maxima.input_bytes}")
        return value


class CollectedFile(BaseModel):
    """A regular file the guest left in scratch (symlinks and other types are never read)."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(description="relative to the scratch directory, '/'-separated")
    size: int
    encoding: Literal["utf-8", "base64"]
    content: str
    truncated: bool


class RunResult(BaseModel):
    """What a run produced; guest failures and limit hits are data here, never host exceptions."""

    model_config = ConfigDict(frozen=True)

    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    exit_code: int | None = Field(description="None when the run ended in a trap")
    limit_hit: LimitHit | None
    trap: str | None = Field(description="wasmtime trap code name when the run trapped")
    fuel_used: int | None = Field(description="instructions spent; None when the deadline stopped the run (uncounted)")
    duration_ms: float
    memory_bytes: int = Field(description="guest linear memory at the end of the run (it never shrinks)")
    files: list[CollectedFile] = Field(default_factory=list)
    files_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit_hit is None
