"""Reloading one MAD in a running ecosystem: its code imported again, the others untouched."""

from __future__ import annotations

import sys

import pytest

from mads import registry
from mads.core import names
from tests.support.ecosystem import Running
from tests.support.llm_server import Reply, ScriptedLLM


async def test_reload_replaces_one_mad_and_leaves_the_others_running(
    ecosystem: Running, llm_server: ScriptedLLM
) -> None:
    host = ecosystem.host
    llm_server.script(Reply(text="before the reload"))
    conversation = await ecosystem.new_conversation()
    await ecosystem.say(conversation, "hello")
    old_rogers, old_module = host.mads[names.ROGERS], sys.modules["mads.rogers.mad"]
    others = {name: mad for name, mad in host.mads.items() if name != names.ROGERS}

    new_rogers = await host.reload(names.ROGERS)

    assert new_rogers is host.mads[names.ROGERS] and new_rogers is not old_rogers
    assert sys.modules["mads.rogers.mad"] is not old_module  # imported again from disk
    assert type(new_rogers) is not type(old_rogers)
    assert {name: mad for name, mad in host.mads.items() if name != names.ROGERS} == others
    # The new Rogers serves the conversation stored before, and the rest of the ecosystem works with it.
    texts = [m.get("text") for m in await ecosystem.history(conversation)]
    assert "hello" in texts and "before the reload" in texts
    llm_server.script(Reply(text="after the reload"))
    await ecosystem.say(conversation, "again")
    assert "after the reload" in [m.get("text") for m in await ecosystem.history(conversation)]


async def test_a_reload_that_fails_puts_the_old_mad_back(
    ecosystem: Running, llm_server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = ecosystem.host
    old_class = type(host.mads[names.ROGERS])
    monkeypatch.setitem(registry.MADS, names.ROGERS, "mads.rogers.no_such_module:Rogers")

    with pytest.raises(ModuleNotFoundError):
        await host.reload(names.ROGERS)

    assert type(host.mads[names.ROGERS]) is old_class
    llm_server.script(Reply(text="still here"))
    conversation = await ecosystem.new_conversation()
    await ecosystem.say(conversation, "hello")
    assert "still here" in [m.get("text") for m in await ecosystem.history(conversation)]
