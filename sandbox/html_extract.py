"""Untrusted HTML is parsed inside a WASM cell; the host only validates the JSON that comes back.

The guest program (sandbox/guest/extract_html.py) parses with lxml (libxml2's HTML parser, inside the
cell) and selects with soupsieve, beautifulsoup4's CSS engine: selectors are full CSS (combinators,
attributes, pseudo-classes). The host compiles the selector with the same soupsieve before any cell
starts, so a malformed one is refused naming ``selector``.
"""

import json
from collections.abc import Awaitable, Callable
from importlib.resources import files

import soupsieve
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sandbox.errors import HtmlExtractionError
from sandbox.limits import LimitMaxima, RunLimits, RunRequest, RunResult

GUEST_PROGRAM = files("sandbox.guest").joinpath("extract_html.py").read_text(encoding="utf-8")

RunFn = Callable[[RunRequest], Awaitable[RunResult]]


class ExtractRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    html: str
    base_url: str = Field(pattern=r"^https?://\S+$", max_length=2048)
    selector: str | None = Field(default=None, max_length=512)
    max_text_chars: int = Field(default=100_000, gt=0)
    max_links: int = Field(default=500, gt=0)
    max_selected: int = Field(default=200, gt=0)

    @field_validator("selector")
    @classmethod
    def _supported_selector(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("an empty selector selects nothing: omit it or give a CSS selector")
        try:
            soupsieve.compile(value)
        except Exception as exc:  # SelectorSyntaxError, or a selector soupsieve cannot use
            raise ValueError(f"not a CSS selector: {str(exc).splitlines()[0][:200]}") from None
        return value


class Link(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    text: str


class SelectedElement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str
    id: str | None
    classes: list[str]
    text: str


class PageExtract(BaseModel):
    """Readable content of a page; `selected` is None when no selector was given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str
    text: str
    links: list[Link]
    selected: list[SelectedElement] | None


async def extract_html_in_cell(
    run: RunFn,
    maxima: LimitMaxima,
    html: str,
    base_url: str,
    selector: str | None,
    limits: RunLimits | None,
) -> PageExtract:
    """Run the guest extractor on `html`; raises HtmlExtractionError (never returns garbage) on failure."""
    request = ExtractRequest(html=html, base_url=base_url, selector=selector)
    params = request.model_dump(exclude={"html"})
    run_request = RunRequest.model_validate(
        {
            "code": GUEST_PROGRAM,
            "limits": maxima.default_limits() if limits is None else limits,
            "input_files": {"page.html": html.encode("utf-8", errors="replace"), "params.json": json.dumps(params)},
        },
        context={"maxima": maxima},
    )
    result = await run(run_request)
    if result.limit_hit is not None or result.exit_code != 0:
        tail = result.stderr.strip().splitlines()[-1:] or [""]
        raise HtmlExtractionError(
            f"extraction failed (exit_code={result.exit_code}, limit_hit={result.limit_hit}): {tail[0][:300]}"
        )
    try:
        payload = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise HtmlExtractionError(f"extractor output is not JSON: {exc}") from exc
    if isinstance(payload, dict) and "error" in payload:
        raise HtmlExtractionError(str(payload["error"])[:300])
    try:
        return PageExtract.model_validate(payload)
    except ValidationError as exc:
        raise HtmlExtractionError(f"extractor output failed validation: {exc}") from exc
