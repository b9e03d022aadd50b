"""Configuration: an optional TOML file plus environment overrides, validated up front.

Layout of ``ecosystem.toml``::

    [ecosystem]            # where data lives, which bus, which MADs run here
    data_dir = "data"
    bus = "memory"         # or "redis://127.0.0.1:6379/0"
    mads = ["all"]

    [gateway]              # the web door
    port = 8765

    [telemetry]            # traces, metrics, log format (see mads.core.telemetry)
    otlp_endpoint = "http://127.0.0.1:4318"

    [sandbox]              # the WASM cell (see mads.core.sandbox_capability)
    grants = ["hopper"]    # MADs given the run_python tool
    cache_dir = "..."      # compiled runtime, one per machine (default ~/.cache/mad-ecosystem/wasm)
    pool_size = 2          # prepared cells kept ready
    allow_hosts = []       # Marco's SSRF allowlist: hosts, IPs, CIDRs, optional :port

    [fiedler]              # one section per MAD, validated by that MAD's config_model
    ...

Environment overrides use ``MAD_<SECTION>__<KEY>`` (``MAD_GATEWAY__PORT=9000``,
``MAD_ECOSYSTEM__BUS=redis://…``); values are parsed as JSON when they parse,
else taken as strings. A bad value stops start-up with a message naming the key
(and the variable it came from) and the reason.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mads.core import names

ENV_PREFIX = "MAD_"
DEFAULT_CONFIG = Path("ecosystem.toml")
DEFAULT_PORT = 8765


class ConfigError(Exception):
    """The configuration is unusable; the message names the key and the reason."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EcosystemSection(Section):
    data_dir: Path = Path("data")
    bus: str = Field(default="memory", description='"memory" or a redis:// URL')
    mads: list[str] = Field(default_factory=lambda: ["all"], description='MAD names to run here, or ["all"]')
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    drain_timeout: float = Field(default=10.0, gt=0, le=300)
    freeze_startup_heap: bool = Field(
        default=True,
        description="once every MAD is ready, keep the start-up heap out of the cycle collector (gc.freeze)",
    )

    @field_validator("bus")
    @classmethod
    def _bus_url(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError('must be "memory" or a redis:// URL')
        return value


class GatewaySection(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    reply_timeout: float = Field(default=120.0, gt=0, le=3600)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="settings for gateway hardening layers")
    trusted_origins: list[str] = Field(
        default_factory=list, description="extra browser origins (scheme://host:port) allowed to open the WebSocket"
    )
    session_idle_timeout: float = Field(default=1800.0, gt=0, le=86_400, description="seconds a session may idle")
    session_max_age: float = Field(default=43_200.0, gt=0, le=30 * 86_400, description="absolute session lifetime, s")
    max_sessions: int = Field(default=10_000, ge=1, le=1_000_000)
    rate_per_principal: float = Field(default=20.0, gt=0, description="requests per second refilled per principal")
    burst_per_principal: int = Field(default=120, ge=1, description="bucket size per principal")
    rate_per_ip: float = Field(default=50.0, gt=0, description="requests per second refilled per client IP")
    burst_per_ip: int = Field(default=300, ge=1, description="bucket size per client IP")
    login_rate_per_ip: float = Field(default=0.2, gt=0, description="login attempts per second refilled per IP")
    login_burst_per_ip: int = Field(default=10, ge=1, description="login attempts allowed in a burst per IP")
    token_use_event_interval: float = Field(
        default=900.0, ge=0, le=86_400, description="seconds between success events for the same token"
    )
    hsts_max_age: int = Field(default=31_536_000, ge=0, description="Strict-Transport-Security max-age when TLS is on")
    header_timeout: float = Field(
        default=10.0, gt=0, le=600, description="seconds a client has to finish a request's headers once it starts"
    )
    idle_timeout: float = Field(
        default=60.0, gt=0, le=3600, description="seconds a connection may sit without a request before it is closed"
    )
    body_timeout: float = Field(default=30.0, gt=0, le=3600, description="seconds a client has to send a request body")


class TelemetrySection(Section):
    """Traces, metrics and log format. Tracing is off unless an OTLP endpoint (or ``traces = true``) is set."""

    service_name: str = Field(default="mad-ecosystem", min_length=1, max_length=100)
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL (http://host:4318); default: $OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    traces: bool | None = Field(default=None, description="trace bus hops; default: on when an endpoint is set")
    metrics: bool = Field(default=True, description="record metrics (Prometheus text at the gateway, OTLP if set)")
    json_logs: bool | None = Field(default=None, description="JSON log lines; default: JSON unless stderr is a TTY")
    event_metrics: bool | None = Field(
        default=None,
        description="count LLM tokens/cost and validation failures here; default: in the gateway's process",
    )
    export_interval: float = Field(default=30.0, gt=0, le=3600, description="seconds between OTLP metric exports")

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
        return value


class SandboxSection(Section):
    """One WASM sandbox per process, created when a MAD here is granted it (or needs it, like Marco)."""

    max_concurrency: int = Field(default=2, ge=1, le=64, description="cells executing at once in this process")
    maxima: dict[str, Any] = Field(
        default_factory=dict, description="ceilings for per-run limits (sandbox.LimitMaxima fields)"
    )
    grants: list[str] = Field(default_factory=lambda: [names.HOPPER], description="MADs given the run_python tool")
    cache_dir: Path | None = Field(
        default=None,
        description="compiled-runtime cache, one per machine and user (default: $XDG_CACHE_HOME or ~/.cache, "
        "then mad-ecosystem/wasm); must be private (0700)",
    )
    pool_size: int = Field(default=2, ge=0, le=32, description="prepared cells kept ready for the next runs")
    pool_cpu_share: float = Field(
        default=0.5, gt=0, le=1, description="share of one core the pool may spend preparing cells"
    )

    @field_validator("maxima")
    @classmethod
    def _maxima(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Imported here: the sandbox pulls in wasmtime, which a process without a sandbox never needs.
        from sandbox.limits import LimitMaxima

        try:
            return LimitMaxima.model_validate(value).model_dump()
        except ValidationError as exc:
            raise ValueError(_nested(exc)) from None


def _nested(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


class Settings(BaseModel):
    """Everything the host needs; MAD sections stay raw until their MAD validates them."""

    model_config = ConfigDict(extra="forbid")

    ecosystem: EcosystemSection = Field(default_factory=EcosystemSection)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    telemetry: TelemetrySection = Field(default_factory=TelemetrySection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    mad_sections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str = "defaults"

    def section(self, name: str) -> dict[str, Any]:
        return self.mad_sections.get(name, {})


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], str]]:
    overrides: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], str] = {}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX) :].partition("__")
        if not section or not key:
            continue
        section, key = section.lower(), key.lower()
        overrides.setdefault(section, {})[key] = _parse_env_value(raw)
        origin[(section, key)] = var
    return overrides, origin


def _describe(exc: ValidationError, section: str, origin: Mapping[tuple[str, str], str]) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(x) for x in err["loc"]]
        key = ".".join([section, *loc]) if section else ".".join(loc)
        var = origin.get((section, loc[0])) if section and loc else None
        lines.append(f"{key}: {err['msg']}" + (f" (from environment variable {var})" if var else ""))
    return "; ".join(lines)


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    known_mads: set[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Read the TOML file (if any), apply environment then explicit overrides, validate."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or "MAD_CONFIG" in environ
    path = Path(path or environ.get("MAD_CONFIG", DEFAULT_CONFIG))
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"configuration file {path}: cannot read: {exc.strerror}") from None
    elif explicit:
        raise ConfigError(f"configuration file {path}: does not exist")
    env, origin = _env_overrides(environ)
    for layer in (env, overrides or {}):
        for section, values in layer.items():
            target = raw.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{section}: must be a table")
            target.update(values)
    sections: dict[str, Any] = {}
    mad_sections: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        if name in ("ecosystem", "gateway", "telemetry", "sandbox"):
            sections[name] = value
        elif known_mads is None or name in known_mads:
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: must be a table")
            mad_sections[name] = value
        else:
            allowed = ", ".join(sorted({"ecosystem", "gateway", "telemetry", "sandbox", *(known_mads or ())}))
            raise ConfigError(f"{name}: unknown section (known sections: {allowed})")
    for name, model in (
        ("ecosystem", EcosystemSection),
        ("gateway", GatewaySection),
        ("telemetry", TelemetrySection),
        ("sandbox", SandboxSection),
    ):
        if name in sections:
            if not isinstance(sections[name], dict):
                raise ConfigError(f"{name}: must be a table")
            try:
                sections[name] = model.model_validate(sections[name])
            except ValidationError as exc:
                raise ConfigError(_describe(exc, name, origin)) from None
    return Settings(**sections, mad_sections=mad_sections, source=str(path) if path.exists() else "defaults")


def validate_mad_section(name: str, model: type[BaseModel], values: Mapping[str, Any]) -> BaseModel:
    """Validate one MAD's section with its own model, naming ``<mad>.<key>`` on failure."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, name, {})) from None
