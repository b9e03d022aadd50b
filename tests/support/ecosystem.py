"""Start the real ecosystem in this process for tests: Host, bus, MADs and gateway on an ephemeral port.

Nothing is mocked: the gateway listens on 127.0.0.1, Rogers writes SQLite under
``tmp_path``, and Fiedler reaches a :class:`~tests.support.llm_server.ScriptedLLM`
over real HTTP. The gateway requires authentication, so :func:`running` creates a
real token (principal ``tester``, operator) in the gateway's auth store and the
HTTP client sends it as a bearer token on every request and socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import Gateway
from mad_ecosystem.app import Ecosystem
from mads import registry
from mads.core import names
from mads.core.settings import Settings, load_settings
from mads.fiedler import Fiedler
from mads.host import Host

CORE_MADS = ["rogers", "fiedler", "grace"]
"""The MADs a chat needs: storage, the LLM router, and Grace with the gateway."""
START_TIMEOUT = 10.0
TEST_PRINCIPAL = "tester"
"""The principal :func:`running` signs in as (``user.tester`` on the bus)."""


def fiedler_section(llm_base_url: str | None) -> dict[str, Any]:
    """Fiedler pointed at a scripted LLM (one model serving every role), or with no model at all."""
    if llm_base_url is None:
        return {"models": []}
    return {
        "models": [{"name": "scripted", "model": "openai/scripted", "api_base": llm_base_url, "roles": ["imperator"]}],
        "roles": {"imperator": "scripted"},
        "retries": 0,
        "timeout": 30.0,
    }


def ecosystem_settings(
    data_dir: Path,
    llm_base_url: str | None,
    *,
    mads: list[str] | None = None,
    gateway: Mapping[str, Any] | None = None,
    ecosystem: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    return load_settings(
        None,
        environ={},
        known_mads=set(registry.MADS),
        overrides={
            # One test process hosts many ecosystems in turn: freezing each one's heap would keep them all.
            "ecosystem": {
                "data_dir": str(data_dir),
                "mads": mads or CORE_MADS,
                "freeze_startup_heap": False,
                **(ecosystem or {}),
            },
            "gateway": {"host": "127.0.0.1", "port": 0, **(gateway or {})},
            "fiedler": fiedler_section(llm_base_url),
            **(sections or {}),
        },
    )


@dataclass
class Running:
    """A started ecosystem and an HTTP client for its gateway, authenticated as ``principal``."""

    ecosystem: Ecosystem
    url: str
    http: aiohttp.ClientSession
    token: str = ""
    principal: str = TEST_PRINCIPAL

    @property
    def host(self) -> Host:
        return self.ecosystem.host

    @property
    def gateway(self) -> Gateway:
        assert self.ecosystem.gateway is not None, "no gateway in this ecosystem (it runs where grace runs)"
        return self.ecosystem.gateway

    def at(self, path: str) -> str:
        return self.url.rstrip("/") + path

    @property
    def origin(self) -> str:
        """The gateway's own origin (what a browser on its page sends as ``Origin``)."""
        return self.url.rstrip("/")

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.get(self.at(path), **kwargs) as response:
            return response.status, await _body(response)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        if body is not None:
            kwargs["json"] = body
        async with self.http.post(self.at(path), **kwargs) as response:
            return response.status, await _body(response)

    async def new_conversation(self, title: str | None = None) -> str:
        status, body = await self.post("/api/conversations", {"title": title} if title else {})
        assert status == 201, body
        return body["id"]

    async def say(self, conversation_id: str, text: str) -> dict[str, Any]:
        """Post a message and return the 200 body (fails the test on any other status)."""
        status, body = await self.post(f"/api/conversations/{conversation_id}/messages", {"text": text})
        assert status == 200, body
        return body

    async def history(self, conversation_id: str, **query: Any) -> list[dict[str, Any]]:
        status, body = await self.get(f"/api/conversations/{conversation_id}/messages", params=query)
        assert status == 200, body
        return body["messages"]

    @contextlib.asynccontextmanager
    async def signed_in_as(self, name: str, role: str = "user") -> AsyncIterator[Running]:
        """Another person on the same ecosystem: a real token for ``name`` (``user`` or ``operator``)."""
        issued = await self.gateway.issue_token(name, "operator" if role == "operator" else "user")
        headers = {"Authorization": f"Bearer {issued.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            yield Running(ecosystem=self.ecosystem, url=self.url, http=http, token=issued.token, principal=name)

    def socket(self, conversation_id: str, **kwargs: Any) -> Any:
        kwargs.setdefault("origin", self.origin)
        return self.http.ws_connect(self.at(f"/api/conversations/{conversation_id}/stream"), **kwargs)


async def _body(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    if response.content_type == "application/json":
        return await response.json()
    return text


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, principal: str = TEST_PRINCIPAL, role: str = "operator", source: Path | None = None
) -> AsyncIterator[Running]:
    """Start the ecosystem with ``settings``, wait until every MAD is announced, sign in, stop it on exit.

    ``source`` is the tree regeneration approvals would merge into (default: this checkout)."""
    ecosystem = Ecosystem(settings) if source is None else Ecosystem(settings, source=source)
    await ecosystem.start()
    try:
        host = ecosystem.host
        addresses = set(host.names)
        await host.directory.wait_for(addresses, START_TIMEOUT)
        grace = host.mads.get(names.GRACE)
        if grace is not None:
            await grace.directory.wait_for(addresses, START_TIMEOUT)
        fiedler = host.mads.get(names.FIEDLER)
        if isinstance(fiedler, Fiedler):
            # litellm loads in the background from start-up (seconds); a test's first LLM call must not race it.
            await fiedler.ready()
        assert ecosystem.url is not None and ecosystem.gateway is not None
        issued = await ecosystem.gateway.issue_token(principal, "operator" if role == "operator" else "user")
        headers = {"Authorization": f"Bearer {issued.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            yield Running(ecosystem=ecosystem, url=ecosystem.url, http=http, token=issued.token, principal=principal)
    finally:
        await ecosystem.stop()
