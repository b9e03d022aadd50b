"""Horace on a real in-memory bus, called by command as a MAD (hopper) or as a person would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import JsonValue

from bus.envelope import CommandPart, DataPart, Envelope, ErrorInfo, Kind, deadline_in
from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.horace import Horace
from mads.horace.schemas import HoraceConfig


@dataclass
class HoraceClient:
    bus: InMemoryBus
    horace: Horace

    async def reply(self, tool: str, sender: str = "hopper", **arguments: JsonValue) -> Envelope:
        return await self.bus.request(
            Envelope(
                sender=sender,
                recipient="horace",
                kind=Kind.REQUEST,
                deadline=deadline_in(30),
                content=[CommandPart(tool=tool, arguments=arguments)],
            )
        )

    async def call(self, tool: str, **arguments: JsonValue) -> Any:
        reply = await self.reply(tool, **arguments)
        assert reply.error is None, reply.error
        [value] = [p.value for p in reply.content if isinstance(p, DataPart)]
        return value

    async def error(self, tool: str, sender: str = "hopper", **arguments: JsonValue) -> ErrorInfo:
        reply = await self.reply(tool, sender, **arguments)
        assert reply.error is not None, reply.content
        return reply.error


async def start_horace(data_dir: Path, **config: Any) -> tuple[InMemoryBus, Horace]:
    bus = InMemoryBus()
    await bus.start()
    horace = Horace(MadContext(bus=bus, data_dir=data_dir, config=HoraceConfig.model_validate(config)))
    await horace.start()
    return bus, horace


@pytest.fixture
async def horace(tmp_path: Path) -> AsyncIterator[HoraceClient]:
    bus, mad = await start_horace(tmp_path / "data")
    try:
        yield HoraceClient(bus, mad)
    finally:
        await mad.stop()
        await bus.close()
