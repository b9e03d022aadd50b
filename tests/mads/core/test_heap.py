"""Once every MAD is ready, the host moves the start-up heap out of the cycle collector's sight."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from tests.support.ecosystem import ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM
from tests.support.waiting import eventually


async def test_the_start_up_heap_is_frozen_once_litellm_is_loaded(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    gc.unfreeze()
    settings = ecosystem_settings(tmp_path, llm_server.base_url, ecosystem={"freeze_startup_heap": True})
    try:
        async with running(settings) as eco:
            await eventually(lambda: gc.get_freeze_count() > 0, what="the start-up heap frozen")
            assert "litellm" in sys.modules  # Fiedler's warm-up finished first
            cid = await eco.new_conversation()
            assert (await eco.say(cid, "/rogers list_conversations"))["reply"]["error"] is None
    finally:
        gc.unfreeze()
