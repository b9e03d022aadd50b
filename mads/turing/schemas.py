"""Turing's boundary models: its configuration section, tool arguments and tool results.

Argument models validate paths with the vault's own rules, so a bad path is refused by
the bus contract with the field named, before Turing (or the vault) sees it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mads.core import names
from mads.turing.policy import Capability, Policy, PolicyRule
from mads.turing.store import MAX_VALUE_BYTES, validate_path, validate_prefix

OPERATOR = "operator"
"""The principal of the operator CLI (``python ecosystem.py secrets``). Reserved: never accepted from the bus."""

ROTATE_PATH = "sys/rotate"
"""Pseudo-path checked for ``write`` before a key rotation (as Vault's ``sys/rotate``)."""

DEFAULT_POLICY: tuple[PolicyRule, ...] = (
    PolicyRule(principal=names.FIEDLER, paths=("providers/**",), capabilities=frozenset({Capability.READ})),
    PolicyRule(principal=names.GRACE, paths=("**",), capabilities=frozenset(Capability)),
    PolicyRule(principal=OPERATOR, paths=("**",), capabilities=frozenset(Capability)),
)
"""Deny by default. A request is allowed only if both its sending MAD and the person it serves (if any)
are: Fiedler reads provider API keys for itself (as the system); Grace relays people's ``/turing``
commands, so she may do what the person may — and no person is granted anything by default (add rules
for ``user:<name>`` or ``operator:*`` to let people keep secrets); the operator CLI (``operator``, never
accepted from the bus) may do everything."""


class TuringConfig(BaseModel):
    """The ``[turing]`` section. Setting ``policy`` replaces the default rules entirely."""

    model_config = ConfigDict(extra="forbid")

    unseal: Literal["key_file", "passphrase"] = Field(
        default="key_file",
        description="key_file: unseal from a 0600 key file (created on first run); "
        "passphrase: unseal from the environment variable named by passphrase_env",
    )
    key_file: Path | None = Field(default=None, description="default <data_dir>/turing/root.key")
    passphrase_env: str = Field(default="MAD_TURING_PASSPHRASE", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    max_versions: int = Field(default=10, ge=1, le=1000, description="versions kept per secret")
    audit_timeout: float = Field(default=5.0, gt=0, le=60, description="seconds to wait for McNamara's record")
    watch_interval: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="seconds between looks at the vault for values another process (the CLI) wrote, to redact them",
    )
    policy: list[PolicyRule] = Field(default_factory=lambda: list(DEFAULT_POLICY))

    def key_file_path(self, data_dir: Path) -> Path:
        return self.key_file if self.key_file is not None else data_dir / names.TURING / "root.key"

    def policy_model(self) -> Policy:
        return Policy(rules=tuple(self.policy))


def vault_path(data_dir: Path) -> Path:
    return data_dir / names.TURING / "vault.db"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _path(value: str) -> str:
    return validate_path(value)


class GetArgs(_Args):
    path: str = Field(max_length=512, description="secret path, e.g. providers/openai")
    version: int | None = Field(default=None, ge=1, description="a specific version; default the latest")

    _check_path = field_validator("path")(_path)


class PutArgs(_Args):
    path: str = Field(max_length=512)
    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES)
    cas: int | None = Field(
        default=None, ge=0, description="check-and-set: 0 = must not exist, N = current version must be N"
    )

    _check_path = field_validator("path")(_path)


class ListArgs(_Args):
    prefix: str = Field(default="", max_length=513, description="e.g. 'providers/'; empty lists everything allowed")

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return validate_prefix(value)


class PathArgs(_Args):
    path: str = Field(max_length=512)

    _check_path = field_validator("path")(_path)


class DeleteArgs(_Args):
    path: str = Field(max_length=512)
    versions: list[int] | None = Field(default=None, min_length=1, description="default: the latest version")

    _check_path = field_validator("path")(_path)

    @field_validator("versions")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 1 for v in value):
            raise ValueError("version numbers must be >= 1")
        return value


class VersionsArgs(_Args):
    path: str = Field(max_length=512)
    versions: list[int] = Field(min_length=1)

    _check_path = field_validator("path")(_path)

    @field_validator("versions")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("version numbers must be >= 1")
        return value


class NoArgs(_Args):
    pass


class SecretReply(BaseModel):
    """The only result that carries a value; always sent as a secret-typed data part."""

    path: str
    version: int
    value: str


class PutResult(BaseModel):
    path: str
    version: int


class ListResult(BaseModel):
    prefix: str
    paths: list[str]


class VersionInfo(BaseModel):
    version: int
    created_time: datetime
    deletion_time: datetime | None
    destroyed: bool


class VersionsResult(BaseModel):
    path: str
    current_version: int
    oldest_version: int
    max_versions: int
    created_time: datetime
    updated_time: datetime
    versions: list[VersionInfo]


class ChangedResult(BaseModel):
    path: str
    changed: list[int] = Field(description="versions whose state this call changed")


class RotateResult(BaseModel):
    key_term: int


class StatusResult(BaseModel):
    """Seal state for operators; never a key, passphrase or value."""

    sealed: bool
    initialized: bool
    key_term: int | None
    unseal_method: Literal["passphrase", "key_file"] | None
    configured_unseal: Literal["key_file", "passphrase"]
    kdf: str | None
    how_to_unseal: str | None = None
