"""Which URLs and addresses Marco may fetch: the SSRF rules, with no I/O (stdlib only).

A URL must be http(s), carry no credentials, and every address its host resolves to must be
public, unless the operator allowlisted it (``[marco] allow_hosts``). Loopback, private,
link-local, CGNAT, multicast, reserved, unspecified and cloud-metadata ranges are refused,
also when they hide inside IPv6 (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_CHARS = 2048

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
"""Cloud instance-metadata endpoints (AWS, ECS, AWS IPv6, Alibaba): refused even with allow_private."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RANGES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("169.254.0.0/16", "link_local"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link_local"),
    ("fec0::/10", "link_local"),
    ("ff00::/8", "multicast"),
    ("2001:db8::/32", "reserved"),
    ("100::/64", "reserved"),
)
_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), r) for n, r in _RANGES)
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d{1,5}))?$")


class UrlRefused(Exception):
    """Marco will not fetch this URL; ``reason`` is a short code, ``message`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a host name, an address or a network, optionally for one port only."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def matches(self, host: str, address: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host.lower().rstrip(".")
        assert self.network is not None
        return unwrap(address) in self.network or address in self.network


def parse_allow_entry(entry: str) -> AllowEntry:
    """``"127.0.0.1"``, ``"10.0.0.0/8"``, ``"intranet.example"``, ``"127.0.0.1:8080"``, ``"[::1]:8080"``."""
    text = entry.strip()
    if "/" in text:
        try:
            return AllowEntry(network=ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"allow_hosts entry {entry!r} is not a valid CIDR network") from None
    try:
        return AllowEntry(network=ipaddress.ip_network(text))
    except ValueError:
        pass
    match = _HOST_PORT.match(text)
    if match is None:
        raise ValueError(f"allow_hosts entry {entry!r} must be a host, IP or CIDR, optionally with :port")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"allow_hosts entry {entry!r} has an invalid port")
    name = match["v6"] or match["host"]
    try:
        return AllowEntry(network=ipaddress.ip_network(name), port=port)
    except ValueError:
        pass
    if match["v6"] or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name):
        raise ValueError(f"allow_hosts entry {entry!r} is not a valid host name or address")
    return AllowEntry(host=name.lower().rstrip("."), port=port)


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address embeds (mapped, compatible, 6to4, Teredo, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))  # deprecated IPv4-compatible ::a.b.c.d
    return address


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (``"loopback"``, ``"private"``, ...), or None."""
    if address in METADATA_ADDRESSES:
        return "metadata"
    candidate = unwrap(address)  # an embedded IPv4 address is where the packets really go
    if candidate in METADATA_ADDRESSES:
        return "metadata"
    for network, reason in _NETWORKS:
        if candidate.version == network.version and candidate in network:
            return reason
    return None if candidate.is_global else "reserved"


@dataclass(frozen=True)
class UrlPolicy:
    """The operator's exceptions to the SSRF rules (``[marco] allow_hosts`` / ``allow_private``)."""

    allow: tuple[AllowEntry, ...] = ()
    allow_private: bool = False

    @classmethod
    def from_config(cls, allow_hosts: list[str], allow_private: bool) -> UrlPolicy:
        return cls(tuple(parse_allow_entry(e) for e in allow_hosts), allow_private)

    def check_address(self, host: str, address: IPAddress, port: int) -> None:
        """Raise :class:`UrlRefused` unless connecting to ``address`` for ``host:port`` is allowed."""
        reason = classify(address)
        if reason is None or any(e.matches(host, address, port) for e in self.allow):
            return
        if self.allow_private and reason != "metadata":
            return
        kind = f"a {reason.replace('_', '-')} address"
        raise UrlRefused(
            reason, f"{address} is {kind}" if host == str(address) else f"{host} resolves to {address}, {kind}"
        )


@dataclass(frozen=True)
class Target:
    """A URL that passed the syntactic checks: scheme, host and port to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    literal: IPAddress | None


def parse_target(url: str) -> Target:
    """Check scheme, credentials, host and port of ``url`` (no DNS); raise :class:`UrlRefused`."""
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused("too_long", f"URL is longer than {MAX_URL_CHARS} characters")
    if any(c in url for c in "\r\n\t\x00 ") or not url.isprintable():
        raise UrlRefused("malformed", "URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("malformed", f"URL cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UrlRefused("scheme", f"scheme {scheme or '(none)'!r} is not allowed (only http and https)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UrlRefused("credentials", "URLs with credentials (user:password@) are not fetched")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("malformed", "URL has no host")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", host):
            raise UrlRefused("malformed", "host name contains characters that are not allowed") from None
    return Target(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), literal=literal)


def redact(url: str) -> str:
    """``url`` without credentials, query or fragment: safe to publish in an event or an error."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1][:200]
    return SplitResult(parts.scheme, netloc, parts.path, "", "").geturl()[:MAX_URL_CHARS]
