"""Marco, the web explorer: fetches public pages and reads them, parsing inside the WASM sandbox."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from bus.topics import URL_REFUSED
from mads.core import names
from mads.core.base import MAD, MadContext, ToolFailure
from mads.core.sandbox_capability import publish_limit
from mads.core.tools import Call, Tool
from mads.marco.fetch import HTML_TYPES, FetchFailed, FetchLimits, RefusedHop, SafeFetcher
from mads.marco.pinned_resolver import Resolve, system_resolver
from mads.marco.schemas import BrowseResult, MarcoConfig, UrlRefusedEvent, browse_args_model
from mads.marco.url_policy import UrlPolicy, redact
from sandbox import HtmlExtractionError, PageExtract

if TYPE_CHECKING:
    from mads.core.sandbox_capability import SandboxCapability

BROWSE_DESCRIPTION = (
    "Fetch a public http(s) web page and read it: returns the final URL after redirects, the HTTP status, "
    "title, visible text, links and, with a CSS selector (full CSS: combinators, attributes, :not()...), the "
    "matching elements. Private, loopback and metadata addresses are refused."
)
_LIMIT_IN_MESSAGE = re.compile(r"limit_hit=(timeout|fuel|memory|output|scratch)\b")


class Marco(MAD[MarcoConfig]):
    name = names.MARCO
    description = "The web explorer: fetches public web pages safely and reads them (parsing runs in the sandbox)."
    role_prompt = (
        "Use browse to read web pages the person mentions or that you need; follow links with further browse "
        "calls. Cite the final URL you read. If a URL is refused, say why; never try to work around a refusal."
    )
    config_model = MarcoConfig
    uses_sandbox: ClassVar[bool] = True
    """The host creates the process's sandbox for Marco: every page is parsed inside a cell."""

    def __init__(self, ctx: MadContext, *, instance: str | None = None, resolve: Resolve | None = None) -> None:
        super().__init__(ctx, instance=instance)
        policy = UrlPolicy.from_config(self.config.allow_hosts, self.config.allow_private)
        self.fetcher = SafeFetcher(
            policy, resolve or system_resolver(self.config.static_hosts), user_agent=self.config.user_agent
        )
        args_model = browse_args_model(self.config)

        async def browse(args: BaseModel, call: Call) -> BrowseResult:
            return await self.browse(call, **args.model_dump())

        self.add_tool(Tool.from_model("browse", BROWSE_DESCRIPTION, args_model, browse))

    @property
    def capability(self) -> SandboxCapability | None:
        return self.ctx.capabilities.get("sandbox")

    def _limits(self, max_bytes: int | None) -> FetchLimits:
        types = HTML_TYPES | {"text/plain"} if self.config.allow_text_plain else HTML_TYPES
        return FetchLimits(
            max_bytes=max_bytes or self.config.default_max_bytes,
            max_redirects=self.config.max_redirects,
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            total_timeout=self.config.total_timeout,
            content_types=frozenset(types),
        )

    async def browse(self, call: Call, *, url: str, selector: str | None, max_bytes: int | None) -> BrowseResult:
        """Fetch ``url`` under the SSRF rules and caps, then extract its content inside the sandbox."""
        capability = self.capability
        if capability is None:
            raise ToolFailure("sandbox_unavailable", "Marco needs the sandbox and this process has none")
        try:
            fetched = await self.fetcher.fetch(url, self._limits(max_bytes))
        except RefusedHop as exc:
            await self._refused(call, exc)
            where = "" if exc.hop == 0 else f" (redirect {exc.hop} from {redact(url)})"
            raise ToolFailure(
                "url_refused", f"refused {redact(exc.url)}{where}: {exc.refusal.message} [{exc.refusal.reason}]"
            ) from None
        except FetchFailed as exc:
            if exc.limit is not None:
                await publish_limit(self, call, tool="browse", limit=exc.limit, detail=f"{redact(url)}: {exc.message}")
            raise ToolFailure(exc.code, exc.message, retryable=exc.retryable) from None
        if fetched.truncated:
            await publish_limit(
                self, call, tool="browse", limit="max_bytes", detail=f"{redact(fetched.url)}: body cut at max_bytes"
            )
        page = await self._extract(call, capability, fetched.text(), fetched.url, fetched.content_type, selector)
        return BrowseResult(
            url=fetched.url,
            status=fetched.status,
            content_type=fetched.content_type,
            title=page.title,
            text=page.text,
            links=page.links,
            selected=page.selected,
            truncated=fetched.truncated,
            redirects=fetched.redirects,
        )

    async def _extract(
        self,
        call: Call,
        capability: SandboxCapability,
        text: str,
        url: str,
        content_type: str,
        selector: str | None,
    ) -> PageExtract:
        if content_type == "text/plain":
            return PageExtract(title="", text=text, links=[], selected=None if selector is None else [])
        sandbox = await capability.ready()
        # The extract (up to 100,000 chars of text plus links, as JSON) outgrows the default 64 KiB output cap.
        limits = capability.maxima.default_limits().model_copy(update={"output_bytes": capability.maxima.output_bytes})
        try:
            return await sandbox.extract_html(text, url, selector, limits)
        except HtmlExtractionError as exc:
            found = _LIMIT_IN_MESSAGE.search(str(exc))
            if found is not None:
                await publish_limit(
                    self, call, tool="browse", limit=found[1], detail=f"{redact(url)}: extraction cell: {exc}"
                )
            raise ToolFailure("extraction_failed", f"could not read the page: {exc}") from None

    async def _refused(self, call: Call, exc: RefusedHop) -> None:
        event = UrlRefusedEvent(
            mad=self.name,
            url=redact(exc.url),
            reason=exc.refusal.reason,
            detail=exc.refusal.message,
            hop=exc.hop,
            conversation_id=call.conversation_id,
        )
        await self.emit(URL_REFUSED, event.model_dump(mode="json"), conversation_id=call.conversation_id)
