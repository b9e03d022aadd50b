"""Grace's configuration and tool argument models (unknown fields are errors)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAD_NAME_PATTERN = r"^[a-z_][a-z0-9_\-]*$"


class GraceConfig(BaseModel):
    """The ``[grace]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_timeout: float = Field(default=60.0, gt=0, le=3600, description="Seconds a slash command may take.")
    handoff_timeout: float = Field(default=300.0, gt=0, le=3600, description="Seconds a handed-off MAD may take.")
    max_result_chars: int = Field(
        default=20_000, ge=200, le=1_000_000, description="Longest command result shown as text (data stays whole)."
    )


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HandoffArgs(Args):
    mad: str = Field(pattern=MAD_NAME_PATTERN, max_length=64, description="Name of the MAD to hand over to.")
    request: str = Field(min_length=1, max_length=20_000, description="What to ask it, in plain language.")


class ListMadsArgs(Args):
    pass


class MadSummary(BaseModel):
    name: str
    description: str
    alive: bool
    accepts_prose: bool
    tools: list[str]


class MadList(BaseModel):
    mads: list[MadSummary]
