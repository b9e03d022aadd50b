"""Horace's boundary models: tool arguments (every field checked) and configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PROJECT = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="project name")
BRANCH = Field(min_length=1, max_length=200, description="a branch: main, or a task branch such as task/t1-a1")
PATH = Field(min_length=1, max_length=300, description="a path relative to the project root")
HOLDER = Field(min_length=1, max_length=200, description="who claims: an attempt id")
MAX_FILE_BYTES = 256 * 1024


class HoraceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    claim_ttl_s: float = Field(900.0, gt=0, le=86400, description="a claim's lifetime unless renewed")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectArgs(Strict):
    project: str = PROJECT


class ReadArgs(Strict):
    project: str = PROJECT
    path: str = PATH
    branch: str = Field("main", min_length=1, max_length=200)


class WriteArgs(Strict):
    project: str = PROJECT
    path: str = PATH
    branch: str = BRANCH
    holder: str = HOLDER
    content: str = Field(max_length=MAX_FILE_BYTES)


class ListArgs(Strict):
    project: str = PROJECT
    branch: str = Field("main", min_length=1, max_length=200)


class BranchArgs(Strict):
    project: str = PROJECT
    branch: str = BRANCH


class NewBranchArgs(BranchArgs):
    start: str = Field("main", min_length=1, max_length=200)


class CommitArgs(BranchArgs):
    message: str = Field(min_length=1, max_length=2000)
    step: str | None = Field(None, max_length=300, description="workflow step key: a repeat returns the first commit")


class MergeArgs(BranchArgs):
    message: str = Field(min_length=1, max_length=2000)


class ClaimArgs(Strict):
    project: str = PROJECT
    path: str = PATH
    holder: str = HOLDER
    group: str | None = Field(None, max_length=200, description="the task: holders of one group share files")
    ttl_s: float | None = Field(None, gt=0, le=86400)


class ReleaseArgs(Strict):
    holder: str | None = Field(None, max_length=200)
    group: str | None = Field(None, max_length=200)
    reason: Literal["completed", "failed", "cancelled", "discarded", "timeout"]


class ClaimsArgs(Strict):
    project: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
