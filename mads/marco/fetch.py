"""Fetching a URL for Marco without becoming an SSRF proxy.

Every hop (the URL asked for and each redirect target) is parsed, resolved once, checked against
the :class:`~mads.marco.url_policy.UrlPolicy` and only then connected to, through a connector
pinned to the checked addresses. Redirects are followed here, never by aiohttp. The body is
streamed and cut at ``max_bytes`` (decompression too, so a gzip bomb stops at the cap), and one
deadline covers every hop and the body, so a server trickling bytes cannot hold Marco.
"""

from __future__ import annotations

import asyncio
import ipaddress
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from mads.marco.pinned_resolver import PinnedResolver, Resolve
from mads.marco.url_policy import IPAddress, Target, UrlPolicy, UrlRefused, parse_target

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


class FetchFailed(Exception):
    """The fetch did not produce a page; ``code`` for the tool error, ``limit`` when a cap was hit."""

    def __init__(self, code: str, message: str, *, limit: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.limit = limit
        self.retryable = retryable


class RefusedHop(Exception):
    """A hop's URL was refused by the policy; carries the URL and which hop it was."""

    def __init__(self, url: str, hop: int, refusal: UrlRefused) -> None:
        super().__init__(refusal.message)
        self.url = url
        self.hop = hop
        self.refusal = refusal


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    max_redirects: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    content_types: frozenset[str] = HTML_TYPES


@dataclass
class Fetched:
    url: str
    status: int
    content_type: str
    body: bytes
    charset: str | None
    truncated: bool
    redirects: list[str] = field(default_factory=list)

    def text(self) -> str:
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


class SafeFetcher:
    """Fetches http(s) pages hop by hop under a :class:`UrlPolicy`; see the module docstring."""

    def __init__(self, policy: UrlPolicy, resolve: Resolve, *, user_agent: str) -> None:
        self.policy = policy
        self.resolve = resolve
        self.user_agent = user_agent

    async def fetch(self, url: str, limits: FetchLimits) -> Fetched:
        """Raises :class:`RefusedHop` (policy) or :class:`FetchFailed` (network, caps, content)."""
        try:
            async with asyncio.timeout(limits.total_timeout):
                return await self._follow(url, limits)
        except TimeoutError:
            raise FetchFailed(
                "deadline_exceeded",
                f"the page did not arrive within the {limits.total_timeout:g} s deadline",
                limit="total_timeout",
                retryable=True,
            ) from None

    async def _follow(self, url: str, limits: FetchLimits) -> Fetched:
        redirects: list[str] = []
        current = url
        for hop in range(limits.max_redirects + 1):
            target, request_url = self._check_url(current, hop)
            addresses = await self._checked_addresses(target, current, hop)
            async with self._session(request_url.raw_host or target.host, addresses, limits) as session:
                try:
                    async with session.get(request_url, allow_redirects=False, headers=self._headers()) as response:
                        if response.status in REDIRECT_STATUSES:
                            redirects.append(current)
                            current = self._location(response, current)
                            continue
                        return await self._read(response, current, limits, redirects)
                except aiohttp.ClientConnectorError as exc:
                    raise FetchFailed(
                        "connect_failed",
                        f"cannot connect to {target.host}:{target.port}: {exc.strerror}",
                        retryable=True,
                    ) from None
                except (aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError) as exc:
                    raise FetchFailed(
                        "read_timeout", f"the server stopped answering: {exc}", limit="read_timeout", retryable=True
                    ) from None
                except aiohttp.ClientError as exc:
                    raise FetchFailed(
                        "fetch_failed", f"HTTP error: {type(exc).__name__}: {exc}"[:300], retryable=True
                    ) from None
        raise FetchFailed("too_many_redirects", f"more than {limits.max_redirects} redirects", limit="redirects")

    def _check_url(self, url: str, hop: int) -> tuple[Target, URL]:
        try:
            target = parse_target(url)
            request_url = URL(url)
            # Guard against parser differentials: aiohttp must connect to exactly the host checked here.
            if not _same_host(request_url.host or "", target):
                raise UrlRefused("malformed", "the URL's host is ambiguous")
        except ValueError as exc:
            raise RefusedHop(url, hop, UrlRefused("malformed", f"URL cannot be parsed: {exc}")) from None
        except UrlRefused as exc:
            raise RefusedHop(url, hop, exc) from None
        return target, request_url

    async def _checked_addresses(self, target: Target, url: str, hop: int) -> list[IPAddress]:
        if target.literal is not None:
            addresses = [target.literal]
        else:
            try:
                addresses = await self.resolve(target.host, target.port)
            except OSError as exc:
                raise FetchFailed("dns_failed", f"cannot resolve {target.host}: {exc}", retryable=True) from None
        try:
            # Every address must pass: a name that resolves to a public and a private address is refused.
            for address in addresses:
                self.policy.check_address(target.host, address, target.port)
        except UrlRefused as exc:
            raise RefusedHop(url, hop, exc) from None
        return addresses

    @asynccontextmanager
    async def _session(
        self, host: str, addresses: list[IPAddress], limits: FetchLimits
    ) -> AsyncIterator[aiohttp.ClientSession]:
        connector = aiohttp.TCPConnector(
            resolver=PinnedResolver(host, addresses), use_dns_cache=False, force_close=True, limit=1
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=limits.connect_timeout,
            sock_connect=limits.connect_timeout,
            sock_read=limits.read_timeout,
        )
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        ) as session:
            yield session

    def _headers(self) -> dict[str, str]:
        return {
            "User-Agent": self.user_agent,
            "Accept": "text/html, application/xhtml+xml;q=0.9, text/plain;q=0.5",
            "Accept-Encoding": "gzip, deflate",
        }

    @staticmethod
    def _location(response: aiohttp.ClientResponse, current: str) -> str:
        location = response.headers.get("Location", "").strip()
        if not location:
            raise FetchFailed("bad_redirect", f"HTTP {response.status} redirect without a Location header")
        return urljoin(current, location)

    async def _read(
        self, response: aiohttp.ClientResponse, url: str, limits: FetchLimits, redirects: list[str]
    ) -> Fetched:
        content_type = response.content_type.lower()
        if content_type not in limits.content_types:
            accepted = ", ".join(sorted(limits.content_types))
            raise FetchFailed(
                "unsupported_content_type", f"content type {content_type!r} is not accepted (accepted: {accepted})"
            )
        decode = _decoder(response.headers.get("Content-Encoding", "identity"))
        body = bytearray()
        truncated = False
        async for chunk in response.content.iter_any():
            body += decode(chunk, limits.max_bytes + 1 - len(body))
            if len(body) > limits.max_bytes:
                del body[limits.max_bytes :]
                truncated = True
                break
        return Fetched(
            url=url,
            status=response.status,
            content_type=content_type,
            body=bytes(body),
            charset=response.charset,
            truncated=truncated,
            redirects=redirects,
        )


def _same_host(host: str, target: Target) -> bool:
    if target.literal is not None:
        try:
            return ipaddress.ip_address(host) == target.literal
        except ValueError:
            return False
    return host.lower().rstrip(".") == target.host.lower()


def _decoder(encoding: str) -> Callable[[bytes, int], bytes]:
    """Incremental decoder that never produces more than ``room`` bytes per call (bomb-proof)."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return lambda chunk, room: chunk[:room]
    if name not in ("gzip", "x-gzip", "deflate"):
        raise FetchFailed("unsupported_content_encoding", f"content encoding {name!r} is not supported")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: zlib or gzip header, detected

    def inflate(chunk: bytes, room: int) -> bytes:
        try:
            return inflater.decompress(chunk, max(room, 1))
        except zlib.error as exc:
            raise FetchFailed("bad_encoding", f"the {name} body is corrupt: {exc}") from None

    return inflate
