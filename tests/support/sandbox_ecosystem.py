"""The real ecosystem with the sandbox: Marco and Hopper next to the core MADs, the session's compiled-runtime cache,
bus-level tool calls, event watchers and a /healthz prober that proves the gateway answers during a run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import JsonValue

from bus.base import Bus, Subscription
from bus.envelope import CommandPart, DataPart, Envelope, Kind, deadline_in
from mads.core.settings import SandboxSection, Settings
from tests.support.ecosystem import CORE_MADS, Running, ecosystem_settings, running
from tests.support.wasm_cache import CompiledCache

T = TypeVar("T")

SANDBOX_MADS = [*CORE_MADS, "marco", "hopper"]


def sandbox_settings(
    data_dir: Path,
    llm_base_url: str | None = None,
    *,
    mads: list[str] | None = None,
    sandbox: Mapping[str, Any] | None = None,
    marco: Mapping[str, Any] | None = None,
) -> Settings:
    """The harness's settings plus a ``[sandbox]`` section and ``[marco]`` (loopback allowlisted unless overridden)."""
    settings = ecosystem_settings(data_dir, llm_base_url, mads=mads or SANDBOX_MADS)
    section = SandboxSection.model_validate({"maxima": {"timeout_s": 10}, **(sandbox or {})})
    sections = {**settings.mad_sections, "marco": {"allow_hosts": ["127.0.0.1"], **(marco or {})}}
    return settings.model_copy(update={"sandbox": section, "mad_sections": sections})


@contextlib.asynccontextmanager
async def sandbox_ecosystem(
    data_dir: Path, compiled: CompiledCache | None, settings: Settings
) -> AsyncIterator[Running]:
    """Start the ecosystem on ``data_dir``; with ``compiled``, it uses the session's machine cache (no compile)."""
    if compiled is not None and settings.sandbox.cache_dir is None:
        section = settings.sandbox.model_copy(update={"cache_dir": compiled.path})
        settings = settings.model_copy(update={"sandbox": section})
    async with running(settings) as eco:
        if eco.host.sandbox is not None:
            await eco.host.sandbox.ready()  # until then run_python answers "sandbox still starting"
        yield eco


async def call_tool(
    bus: Bus,
    mad: str,
    tool: str,
    arguments: dict[str, JsonValue],
    *,
    conversation_id: str | None = None,
    timeout: float = 60.0,
) -> Envelope:
    """A command over the bus, as a user would send it (reply or error envelope)."""
    return await bus.request(
        Envelope(
            sender="user.tester",
            recipient=mad,
            kind=Kind.REQUEST,
            conversation_id=conversation_id,
            deadline=deadline_in(timeout),
            content=[CommandPart(tool=tool, arguments=arguments)],
        )
    )


def result_of(reply: Envelope) -> Any:
    assert reply.error is None, reply.error
    [value] = [p.value for p in reply.content if isinstance(p, DataPart)]
    return value


class EventWatch:
    """Collects the payloads published on one topic; wait for a condition instead of sleeping."""

    def __init__(self) -> None:
        self.values: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.subscription: Subscription | None = None

    @classmethod
    async def on(cls, bus: Bus, topic: str) -> EventWatch:
        watch = cls()
        watch.subscription = await bus.subscribe(topic, watch._handle)
        return watch

    async def _handle(self, envelope: Envelope) -> None:
        async with self.changed:
            self.values.extend(p.value for p in envelope.content if isinstance(p, DataPart))  # type: ignore[misc]
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: any(predicate(v) for v in self.values))
        return next(v for v in self.values if predicate(v))

    async def close(self) -> None:
        if self.subscription is not None:
            await self.subscription.cancel()


async def while_serving(
    eco: Running, work: Awaitable[T], busy: Callable[[], bool] | None = None, *, require_during: bool = True
) -> T:
    """Await ``work`` while polling GET /healthz, then check it once more. With ``require_during``, assert it
    answered while ``work`` was still running (and, with ``busy``, while ``busy()`` was true, e.g. a cell
    executing). Work that ends in microseconds (a refusal) cannot promise an answer mid-call."""
    task = asyncio.ensure_future(work)
    during = 0
    try:
        while not task.done():
            status, body = await eco.get("/healthz")
            assert status == 200, body
            if not task.done() and (busy is None or busy()):
                during += 1
        status, _ = await eco.get("/healthz")
        assert status == 200
    finally:
        if not task.done():
            task.cancel()
    result = await task
    assert during >= 1 or not require_during, "/healthz never answered while the work was in progress"
    return result
