"""Hopper's society end to end, through the gateway: a story of three dependent tasks goes in, tested and
merged code comes out on the project's main, every role played by a scripted LLM."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mads.hopper.verdict import run_verdict
from tests.support.ecosystem import Running
from tests.support.llm_server import ScriptedLLM
from tests.support.sandbox_ecosystem import sandbox_ecosystem, sandbox_settings
from tests.support.society import CODE, TESTS, SocietyLLM, story
from tests.support.waiting import eventually_async
from tests.support.wasm_cache import CompiledCache

SOCIETY_MADS = ["rogers", "mcnamara", "fiedler", "grace", "horace", "hopper"]


def society_settings(data_dir: Path, llm: ScriptedLLM, **society: Any) -> Any:
    settings = sandbox_settings(data_dir, llm.base_url, mads=SOCIETY_MADS, sandbox={"maxima": {"timeout_s": 30}})
    sections = {**settings.mad_sections, "hopper": {"society": {"role_timeout_s": 20, **society}}}
    return settings.model_copy(update={"mad_sections": sections})


@pytest.fixture
async def society(tmp_path: Path, compiled_cache: CompiledCache, llm_server: ScriptedLLM) -> AsyncIterator[Running]:
    async with sandbox_ecosystem(
        tmp_path / "data", compiled_cache, society_settings(tmp_path / "data", llm_server)
    ) as eco:
        yield eco


async def command(eco: Running, conversation: str, mad: str, tool: str, arguments: dict[str, Any]) -> Any:
    """A slash command through the gateway (Grace runs it for the signed-in person); returns the tool's result."""
    body = await eco.say(conversation, f"/{mad} {tool} " + json.dumps(arguments))
    reply = body["reply"]
    assert reply["error"] is None, reply
    return reply["data"][0]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


async def until_story_ends(eco: Running, conversation: str, story_id: str, timeout: float = 240) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def ended() -> bool:
        seen.update(await command(eco, conversation, "hopper", "show_story", {"story_id": story_id}))
        return seen["story"]["status"] != "open"

    await eventually_async(ended, timeout=timeout, what=f"story {story_id} to end")
    return seen


async def test_a_story_of_three_dependent_tasks_ends_merged_and_green_on_main(
    society: Running, llm_server: ScriptedLLM
) -> None:
    llm = SocietyLLM()
    llm_server.respond_with(llm)
    conversation = await society.new_conversation("society")
    filed = await command(society, conversation, "hopper", "file_story", story("calc"))
    assert filed["principal"] == {"kind": "operator", "name": "tester"}
    ended = await until_story_ends(society, conversation, filed["id"])
    assert ended["story"]["status"] == "done", ended
    assert [t["column"] for t in ended["tasks"]] == ["done", "done", "done"]

    repo = society.host.data_dir / "horace" / "projects" / "calc" / "main"
    merges = git(repo, "log", "--first-parent", "--format=%s", "main").splitlines()
    assert [m for m in merges if m.startswith("merge")] == [
        f"merge {filed['id']}-report: report the total",
        f"merge {filed['id']}-total: total numbers",
        f"merge {filed['id']}-parse: parse numbers",
    ]
    files = {name: (repo / name).read_text() for name in git(repo, "ls-files").split()}
    assert {n: files[n] for n in ("parse.py", "total.py", "report.py")} == {f"{k}.py": v for k, v in CODE.items()}
    hopper = society.host.mads["hopper"]
    sources = {n: t for n, t in files.items() if not n.startswith("test_")}
    for key, tests in TESTS.items():
        verdict = await run_verdict(society.host.sandbox, hopper, None, solution=sources, tests=tests)
        assert verdict.green, (key, verdict)

    assert (await command(society, conversation, "horace", "claims", {}))["claims"] == []
    board = await command(society, conversation, "hopper", "show_board", {})
    assert board["columns"]["done"]["count"] == 3
    trail = await command(society, conversation, "hopper", "show_trail", {"task_id": f"{filed['id']}-total"})
    kinds = [e["kind"] for e in trail["trail"]]
    assert "verdict" in kinds and "merged" in kinds and "transition" in kinds
    assert llm.roles["engineer"] == 3 and llm.roles["reviewer"] == 3
    metrics = await command(society, conversation, "hopper", "society_metrics", {})
    assert metrics["per_story"][filed["id"]]["llm_calls"] == 6
    assert metrics["wip"]["done"] == 3 and filed["id"] in metrics["lead_time"]
