"""Marco's fixtures: local web servers on loopback (a legitimate one and a decoy that must never be reached),
and the real ecosystem with Marco, its sandbox cache pre-seeded from the session's compiled module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ecosystem import Running
from tests.support.sandbox_ecosystem import EventWatch, sandbox_ecosystem, sandbox_settings
from tests.support.wasm_cache import CompiledCache, shared_compiled_cache
from tests.support.web_pages import Pages, serve_pages


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    return shared_compiled_cache(tmp_path_factory)


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    """The legitimate server; the ecosystem allowlists exactly its host and port."""
    async with serve_pages() as served:
        yield served


@pytest.fixture
async def decoy() -> AsyncIterator[Pages]:
    """Another loopback server, NOT allowlisted: a hit here means the SSRF defence failed."""
    async with serve_pages() as served:
        yield served


@dataclass
class MarcoEco:
    eco: Running
    refused: EventWatch
    limits: EventWatch


MARCO_TEST_CONFIG: dict[str, Any] = {
    "total_timeout": 2.0,
    "read_timeout": 1.5,
    "connect_timeout": 2.0,
    "max_redirects": 3,
    "static_hosts": {
        "internal.test": ["10.0.0.1"],
        "metadata.test": ["169.254.169.254"],
        "mixed.test": ["127.0.0.1", "192.168.1.20"],
    },
}


@pytest.fixture
async def marco(tmp_path: Path, compiled_cache: CompiledCache, pages: Pages) -> AsyncIterator[MarcoEco]:
    """The real ecosystem (core MADs + Marco) with only ``127.0.0.1:<pages.port>`` allowlisted."""
    settings = sandbox_settings(
        tmp_path / "data",
        mads=["rogers", "fiedler", "grace", "marco"],
        sandbox={"grants": []},
        marco={**MARCO_TEST_CONFIG, "allow_hosts": [f"127.0.0.1:{pages.port}"]},
    )
    async with sandbox_ecosystem(tmp_path / "data", compiled_cache, settings) as eco:
        refused = await EventWatch.on(eco.host.bus, "events.url_refused")
        limits = await EventWatch.on(eco.host.bus, "events.sandbox_limit")
        try:
            yield MarcoEco(eco, refused, limits)
        finally:
            await refused.close()
            await limits.close()
