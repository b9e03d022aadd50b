"""``kill -9`` of the ecosystem in the middle of a story, then a restart: the run finishes and no completed
step's side effect (commit, test run, LLM call) is repeated.

The ecosystem runs as a real child process (``python ecosystem.py --config``) against the test's scripted LLM.
The engineer's request for the second task is held unanswered; while it hangs the process is killed with
SIGKILL. The first task was complete by then (its LLM calls, commit, test run and merge recorded); after the
restart the story must finish with each of those done exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.deployment.support import Api, EcosystemProcess, create_token, poll
from tests.support.llm_server import ScriptedLLM
from tests.support.society import SocietyLLM, story
from tests.support.waiting import eventually
from tests.support.wasm_cache import CompiledCache

pytestmark = pytest.mark.slow
WAIT = 240.0


def write_society_config(path: Path, data_dir: Path, llm_url: str, cache_dir: Path) -> Path:
    path.write_text(
        "[ecosystem]\n"
        'bus = "memory"\n'
        'mads = ["rogers", "fiedler", "grace", "horace", "hopper"]\n'
        f'data_dir = "{data_dir}"\n'
        "drain_timeout = 2.0\n\n"
        "[gateway]\n"
        'host = "127.0.0.1"\n'
        "port = 0\n\n"
        "[sandbox]\n"
        f'cache_dir = "{cache_dir}"\n'
        "maxima = { timeout_s = 30 }\n\n"
        "[fiedler]\n"
        'roles = { imperator = "scripted" }\n'
        "retries = 0\n"
        "timeout = 60.0\n"
        "[[fiedler.models]]\n"
        'name = "scripted"\n'
        'model = "openai/scripted"\n'
        f'api_base = "{llm_url}"\n'
        'roles = ["imperator"]\n\n'
        "[hopper.society]\n"
        "role_timeout_s = 120\n",
        encoding="utf-8",
    )
    return path


def run_steps_committed(repo: Path) -> list[str]:
    """The ``Run-Step`` trailers of every commit in the repository (one per committed workflow step)."""
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--all", "--format=%(trailers:key=Run-Step,valueonly)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


async def say(api: Api, conversation: str, text: str) -> Any:
    status, body = await api.post(f"/api/conversations/{conversation}/messages", {"text": text})
    assert status == 200, body
    assert body["reply"]["error"] is None, body
    return body["reply"]["data"][0]


async def test_kill_9_mid_story_then_restart_repeats_no_completed_side_effect(
    tmp_path: Path, compiled_cache: CompiledCache, llm_server: ScriptedLLM
) -> None:
    data = tmp_path / "data"
    config = write_society_config(tmp_path / "ecosystem.toml", data, llm_server.base_url, compiled_cache.path)
    llm = SocietyLLM(hold=("engineer", "total"))
    llm_server.respond_with(llm)
    token = await create_token(config, tmp_path)
    eco = EcosystemProcess("society", ["--config", str(config)], tmp_path)
    async with aiohttp.ClientSession() as http:
        try:
            await eco.start()
            assert eco.url is not None
            api = Api(http, eco.url, token)
            status, created = await api.post("/api/conversations", {"title": "crash"})
            assert status == 201, created
            conversation = created["id"]
            filed = await say(api, conversation, "/hopper file_story " + json.dumps(story("calc")))
            await eventually(lambda: bool(llm.held), timeout=WAIT, what="the second task's engineer call")
            await eco.kill()
        finally:
            if eco.running:
                await eco.kill()

        before = dict(llm.calls)
        assert before[("engineer", "parse")] == 1 and before[("reviewer", "parse")] == 1

        await eco.start()
        assert eco.url is not None
        api = Api(http, eco.url, token)
        try:

            async def ended() -> dict[str, Any] | None:
                shown = await say(api, conversation, "/hopper show_story " + json.dumps({"story_id": filed["id"]}))
                return shown if shown["story"]["status"] != "open" else None

            shown = await poll(ended, WAIT, "the story to end after the restart", interval=0.5)
            claims = await say(api, conversation, "/horace claims {}")
        finally:
            await eco.terminate()

    assert shown["story"]["status"] == "done", shown
    assert claims["claims"] == []
    # LLM calls: the first task's completed calls were reused, not asked again; only the cut-off call was.
    assert llm.calls[("engineer", "parse")] == 1 and llm.calls[("reviewer", "parse")] == 1
    assert llm.calls[("engineer", "total")] == 2
    # Commits: one per task, each step key once.
    repo = data / "horace" / "projects" / "calc" / "main"
    log = run_steps_committed(repo)
    assert len(log) == 3 and len(set(log)) == 3, log
    # Test runs: one verdict per task.
    with sqlite3.connect(data / "hopper" / "board.db") as db:
        verdicts = db.execute("SELECT task_id, COUNT(*) FROM trail WHERE kind = 'verdict' GROUP BY task_id").fetchall()
    assert sorted(n for _, n in verdicts) == [1, 1, 1], verdicts
