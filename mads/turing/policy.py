"""Deny-by-default access policy: who may do what to which secret paths.

Path patterns are globs over '/'-separated paths:
  ``*``  matches any run of characters inside one segment (never a '/'),
  ``?``  matches one character inside a segment,
  ``**`` matches anything, across segments (e.g. ``providers/**``).
So ``providers/*`` grants ``providers/openai`` but not ``providers/openai/org``. Principal
patterns use the same syntax (``gateway:*``). A request is allowed only if some rule names
the principal, the capability and the path; there are no deny rules to reason about.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mads.turing.barrier import TuringError

_PATTERN_CHARS = re.compile(r"^[A-Za-z0-9._:@*?/-]+$")


class Capability(StrEnum):
    READ = "read"
    WRITE = "write"
    LIST = "list"
    DELETE = "delete"


class AccessDenied(TuringError):
    """A principal lacks a capability on a path. Carries no secret value."""

    def __init__(self, principal: str, capability: Capability, path: str) -> None:
        self.principal = principal
        self.capability = capability
        self.path = path
        super().__init__(f"access denied: principal '{principal}' lacks '{capability.value}' on '{path}'")


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(pattern: str, value: str) -> bool:
    """True if `value` matches the whole glob `pattern` (see module docstring)."""
    return _compile(pattern).fullmatch(value) is not None


def _check_pattern(value: str, field: str) -> str:
    if not value or not _PATTERN_CHARS.match(value):
        raise ValueError(f"{field} pattern {value!r} must be non-empty and use only A-Z a-z 0-9 . _ : @ - / * ?")
    if ".." in value.split("/"):
        raise ValueError(f"{field} pattern {value!r} must not contain '..' segments")
    return value


class PolicyRule(BaseModel):
    """Grant `capabilities` on paths matching any of `paths` to principals matching `principal`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    principal: str = Field(description="MAD name or gateway principal; glob allowed")
    paths: tuple[str, ...] = Field(min_length=1)
    capabilities: frozenset[Capability] = Field(min_length=1)

    @field_validator("principal")
    @classmethod
    def _principal(cls, v: str) -> str:
        return _check_pattern(v, "principal")

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_pattern(p, "path") for p in v)

    def grants(self, principal: str, capability: Capability, path: str) -> bool:
        return (
            capability in self.capabilities
            and glob_match(self.principal, principal)
            and any(glob_match(p, path) for p in self.paths)
        )


class Policy(BaseModel):
    """The whole access policy; an empty policy denies everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: tuple[PolicyRule, ...] = ()

    def allows(self, principal: str, capability: Capability, path: str) -> bool:
        return any(rule.grants(principal, capability, path) for rule in self.rules)

    def check(self, principal: str, capability: Capability, path: str) -> None:
        """Raise AccessDenied unless some rule grants the request."""
        if not self.allows(principal, capability, path):
            raise AccessDenied(principal, capability, path)
