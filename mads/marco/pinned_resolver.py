"""Name resolution for Marco: resolve once, check, then connect only to the checked addresses.

The aiohttp connector gets a :class:`PinnedResolver` that knows only the addresses Marco has
already validated, so there is no second DNS lookup a rebinding attacker could answer differently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult

from mads.marco.url_policy import IPAddress

Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]
"""``(host, port) -> addresses``; raises OSError when the name does not resolve."""


def system_resolver(static_hosts: Mapping[str, Sequence[IPAddress]] | None = None) -> Resolve:
    """``static_hosts`` first (like /etc/hosts), then the OS resolver through the event loop (non-blocking)."""
    pinned = {name: list(addresses) for name, addresses in (static_hosts or {}).items()}

    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host.lower() in pinned:
            return pinned[host.lower()]
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise OSError(f"{host} has no addresses")
        return list(dict.fromkeys(addresses))

    return resolve


class PinnedResolver(AbstractResolver):
    """Answers only for the host it was built for, with the addresses already checked; never does DNS."""

    def __init__(self, host: str, addresses: Sequence[IPAddress]) -> None:
        self._host = host
        self._addresses = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"{host} was not resolved and checked for this request")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self._addresses
        ]

    async def close(self) -> None:
        """Nothing to release: no sockets or threads are held."""
