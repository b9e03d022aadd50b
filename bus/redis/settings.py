"""Tuning of the Redis bus, validated once at construction, and the key layout it implies.

Every key lives under one prefix, so several deployments (or tests) can share a
Redis database without seeing each other's traffic.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_URL = "redis://127.0.0.1:6379/0"

SEP = "\x1f"
"""Separates the parts of registry members (never valid in an address, a group or a prefix)."""

INBOX_NAMESPACE = "_inbox"
"""Replies are addressed to ``_inbox.<instance>``: a valid address nobody can subscribe to usefully."""


class RedisBusSettings(BaseModel):
    """Bounds and timings. Defaults suit production; tests shrink the timings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(default="mad", pattern=r"^[A-Za-z0-9_\-.:]{1,64}$")
    max_len: int = Field(default=10_000, ge=1, description="entries per work stream before publishers wait")
    tap_max_len: int = Field(default=100_000, ge=1, description="hard cap of the wiretap stream (observation only)")
    dead_max_len: int = Field(default=10_000, ge=1, description="hard cap of the dead-letter stream")
    reclaim_idle: float = Field(default=30.0, gt=0, description="s a pending entry may sit unrenewed before reclaim")
    max_deliveries: int = Field(default=5, ge=1, description="deliveries without ack before dead-lettering")
    dedup_window: float = Field(default=600.0, gt=0, description="s a 'done' marker suppresses duplicates")
    presence_ttl: float = Field(default=10.0, gt=0, description="s a subscription or inbox outlives its last heartbeat")
    orphan_grace: float = Field(default=3600.0, ge=0, description="s a named group survives with no live member")
    janitor_interval: float = Field(default=5.0, gt=0)
    block: float = Field(default=2.0, gt=0, description="s one blocking read waits before looping")
    retry_timeout: float = Field(default=30.0, gt=0, description="s publish keeps retrying a full stream or lost Redis")
    backoff_max: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _lease_fits(self) -> RedisBusSettings:
        if self.presence_ttl < 3 * 0.01 or self.reclaim_idle < 3 * 0.01:
            raise ValueError("presence_ttl and reclaim_idle must be at least 0.03 s (heartbeats run 3x faster)")
        return self

    @property
    def heartbeat(self) -> float:
        """Registrations, inbox TTL and handler leases are renewed three times per lifetime."""
        return min(self.presence_ttl, self.reclaim_idle) / 3


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Separate bus settings given in the URL query (``redis://h:6379/0?prefix=prod&reclaim_idle=5``).

    One string then configures a whole deployment (``--bus``, ``[ecosystem] bus``), so
    deployments sharing a Redis can be kept apart by prefix. Query keys that are not
    :class:`RedisBusSettings` fields stay in the URL for redis-py (``socket_timeout``…).
    Returns the URL for redis-py and the raw settings, which the caller validates.
    """
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in RedisBusSettings.model_fields:
            ours[key] = value
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def redacted(url: str) -> str:
    """The URL without its password, fit for logs and start-up banners."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class Keys:
    """Every Redis key the bus uses, in one place (the Lua scripts mirror these names)."""

    __slots__ = ("dead", "groups", "patterns", "prefix", "streams", "tap", "taps")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.streams = f"{prefix}:streams"
        self.patterns = f"{prefix}:pat"
        self.taps = f"{prefix}:taps"
        self.tap = f"{prefix}:tap"
        self.groups = f"{prefix}:groups"
        self.dead = f"{prefix}:dead"

    def address_stream(self, address: str) -> str:
        return f"{self.prefix}:s:{address}"

    def pattern_stream(self, pattern: str) -> str:
        return f"{self.prefix}:p:{pattern}"

    def routes(self, address: str) -> str:
        return f"{self.prefix}:r:{address}"

    def inbox(self, instance: str) -> str:
        return f"{self.prefix}:inbox:{instance}"

    def dedup(self, group: str, envelope_id: str) -> str:
        return f"{self.prefix}:d:{group}:{envelope_id}"
