"""Marco's boundary models: configuration, the browse arguments and result, the URL-refusal event."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, ValidationError, create_model, field_validator

from mads.marco.url_policy import parse_allow_entry
from sandbox.html_extract import ExtractRequest, Link, SelectedElement

KiB = 1024
MiB = 1024 * KiB


class MarcoConfig(BaseModel):
    """``[marco]``: fetch budgets, and the operator's exceptions to the SSRF rules (``allow_hosts``,
    ``allow_private``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_max_bytes: int = Field(default=1 * MiB, gt=0, description="body cap when a call names none")
    max_bytes_limit: int = Field(default=8 * MiB, gt=0, le=64 * MiB, description="largest max_bytes a call may ask")
    max_redirects: int = Field(default=5, ge=0, le=20)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    read_timeout: float = Field(default=10.0, gt=0, le=300, description="longest silence between two reads")
    total_timeout: float = Field(default=20.0, gt=0, le=600, description="deadline for all hops and the body")
    allow_text_plain: bool = Field(default=True, description="also accept text/plain (returned as text)")
    user_agent: str = Field(default="mad-ecosystem-marco/0.1 (+loopback tests)", min_length=1, max_length=200)
    static_hosts: dict[str, list[IPvAnyAddress]] = Field(
        default_factory=dict,
        description="names resolved without DNS, like /etc/hosts; the addresses still face the SSRF rules",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="hosts, IPs or CIDRs (optionally :port) Marco may fetch although they are not public",
    )
    allow_private: bool = Field(
        default=False, description="let Marco fetch any non-public address except cloud metadata (dev only)"
    )

    @field_validator("allow_hosts")
    @classmethod
    def _allow_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_allow_entry(entry)
        return value

    @field_validator("static_hosts")
    @classmethod
    def _lower(cls, value: dict[str, list[IPvAnyAddress]]) -> dict[str, list[IPvAnyAddress]]:
        for name, addresses in value.items():
            if not addresses:
                raise ValueError(f"static_hosts[{name!r}] needs at least one address")
        return {name.lower().rstrip("."): addresses for name, addresses in value.items()}


def _supported_selector(value: str | None) -> str | None:
    if value is not None:
        try:
            ExtractRequest(html="", base_url="http://selector.check/", selector=value)
        except ValidationError as exc:
            raise ValueError(exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")) from None
    return value


def browse_args_model(config: MarcoConfig) -> type[BaseModel]:
    """``browse`` arguments; ``max_bytes`` is bounded by the configured limit (also shown in the schema)."""
    return create_model(
        "BrowseArgs",
        __config__=ConfigDict(extra="forbid"),
        __validators__={"selector_ok": field_validator("selector")(_supported_selector)},
        url=(str, Field(min_length=1, max_length=2048, description="http(s) URL of a public page")),
        selector=(
            str | None,
            Field(
                None, max_length=512, description="a CSS selector (soupsieve: combinators, attributes, pseudo-classes)"
            ),
        ),
        max_bytes=(
            int | None,
            Field(None, gt=0, le=config.max_bytes_limit, description=f"body cap (default {config.default_max_bytes})"),
        ),
    )


class BrowseResult(BaseModel):
    """What ``browse`` returns: the final URL after redirects and the page's readable content."""

    url: str = Field(description="final URL, after redirects")
    status: int
    content_type: str
    title: str
    text: str
    links: list[Link]
    selected: list[SelectedElement] | None = None
    truncated: bool = Field(description="the body was cut at max_bytes")
    redirects: list[str] = Field(default_factory=list, description="URLs that redirected, in order")


class UrlRefusedEvent(BaseModel):
    """Payload of ``events.url_refused``: the URL (no credentials, query or fragment) and why."""

    model_config = ConfigDict(extra="forbid")

    mad: str
    url: str
    reason: str
    detail: str = ""
    hop: int = Field(default=0, description="0 for the requested URL, n for the n-th redirect target")
    conversation_id: str | None = None
