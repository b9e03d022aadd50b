"""Issue 11, the first "done when": a requirement edited, a regeneration run through the running ecosystem's
gateway, rejected (nothing changes), run again and approved from the command line in another process — and
the running ecosystem serves McNamara's new tool without restarting the other MADs; then rolled back from the
command line, and the running ecosystem serves the code before, again restarting McNamara alone.

Everything is real: ``python ecosystem.py`` started from a clone of the source, its gateway on loopback,
Fiedler reaching the scripted LLM over HTTP, git, and the tests run confined by bubblewrap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.llm_server import ScriptedLLM
from tests.support.regeneration import (
    PING_REQUIREMENT,
    PING_TESTS,
    REFUSAL,
    change_that_cannot_start,
    ecosystem_child,
    edit_requirement,
    head,
    ping_change,
    reloaded,
    run_ended,
    write_config,
)

pytestmark = pytest.mark.slow

START = {"mad": "mcnamara", "model": "scripted", "model_id": "openai/scripted", "tests": PING_TESTS, "max_calls": 2}


async def test_reject_changes_nothing_and_approval_from_the_cli_reloads_only_that_mad(
    tmp_path: Path, llm_server: ScriptedLLM, ecosystem_source: Path
) -> None:
    edit_requirement(ecosystem_source)
    config = write_config(tmp_path / "ecosystem.toml", llm_server.base_url)
    async with ecosystem_child(ecosystem_source, config, tmp_path / "data", tmp_path / "ecosystem.log") as eco:
        before = head(ecosystem_source)
        instances = await eco.instances()
        assert set(instances) == {"rogers", "fiedler", "grace", "mcnamara"} and all(instances.values())
        assert "ping" not in await eco.tools("mcnamara")

        # A first run: the change, its report and its confined tests, waiting for a person.
        llm_server.script(ping_change(ecosystem_source))
        status, started = await eco.post("/api/regeneration/runs", START)
        assert status == 202, started
        first = await run_ended(eco, started["run_id"])
        assert (first["status"], first["state"]) == ("finished", "awaiting_approval"), first
        assert first["started_by"] == "operator:admin"
        assert "+    async def ping(self, args: NoArgs)" in first["diff"]
        assert first["report"]["tools"]["added"] == ["ping"]
        assert first["report"]["violations"] == []
        assert first["tests"]["returncode"] == 0 and first["tests"]["paths"] == PING_TESTS
        assert first["architecture_tests"]["returncode"] == 0
        assert first["llm_calls"] == 1
        assert PING_REQUIREMENT.strip() in llm_server.requests[0].prompt_text  # the edited requirement was read
        status, listed = await eco.get("/api/regeneration/runs")
        assert [(r["run_id"], r["awaiting_approval"]) for r in listed["runs"]] == [(started["run_id"], True)]

        # Reject: the tree and the running McNamara stay as they were.
        status, decided = await eco.post(f"/api/regeneration/runs/{started['run_id']}/reject", {"reason": "not yet"})
        assert status == 200 and decided["decision"] == "rejected", decided
        assert head(ecosystem_source) == before
        assert "async def ping" not in (ecosystem_source / "mads/mcnamara/mad.py").read_text()
        assert await eco.instances() == instances
        assert "ping" not in await eco.tools("mcnamara")
        refused = await eco.command("/mcnamara ping {}")
        assert refused["error"] is not None and "ping" in refused["error"]["message"], refused
        status, again = await eco.post(f"/api/regeneration/runs/{started['run_id']}/approve")
        assert status == 409 and again["error"]["code"] == "not_awaiting_approval", again

        # A second run, approved from the command line in another process: the running ecosystem notices.
        llm_server.script(ping_change(ecosystem_source))
        status, started = await eco.post("/api/regeneration/runs", START)
        assert status == 202, started
        second = await run_ended(eco, started["run_id"])
        assert second["state"] == "awaiting_approval", second
        code, out, err = await eco.cli("regenerate", "approve", started["run_id"], "--by", "ops")
        assert code == 0, err
        merged = json.loads(out)["merged"]
        assert head(ecosystem_source) == merged
        reload = await reloaded(eco, started["run_id"])
        assert reload["outcome"] == "reloaded" and reload["mad"] == "mcnamara", reload

        # The new tool is served through the gateway; only McNamara was restarted.
        assert "ping" in await eco.tools("mcnamara")
        answered = await eco.command("/mcnamara ping {}")
        assert answered["error"] is None and answered["data"] == [{"answer": "pong"}], answered
        now = await eco.instances()
        assert now["mcnamara"] != instances["mcnamara"]
        assert {m: now[m] for m in ("rogers", "fiedler", "grace")} == {
            m: instances[m] for m in ("rogers", "fiedler", "grace")
        }
        status, shown = await eco.get(f"/api/regeneration/runs/{started['run_id']}")
        assert shown["decision"]["decision"] == "approved" and shown["decision"]["by"] == "operator:ops"

        # Rolled back from the command line: the running ecosystem reloads McNamara with the code before.
        code, out, err = await eco.cli("regenerate", "mcnamara", "--rollback", "--by", "ops")
        assert code == 0, err
        assert head(ecosystem_source) == json.loads(out)["rolled_back"]
        assert "async def ping" not in (ecosystem_source / "mads/mcnamara/mad.py").read_text()
        reload = await reloaded(eco, started["run_id"], nth=1)
        assert reload["outcome"] == "reloaded" and reload["after"] == "rollback", reload
        assert "ping" not in await eco.tools("mcnamara")
        refused = await eco.command("/mcnamara ping {}")
        assert refused["error"] is not None and "ping" in refused["error"]["message"], refused
        after = await eco.instances()
        assert after["mcnamara"] not in (instances["mcnamara"], now["mcnamara"])
        assert {m: after[m] for m in ("rogers", "fiedler", "grace")} == {
            m: instances[m] for m in ("rogers", "fiedler", "grace")
        }
        status, shown = await eco.get(f"/api/regeneration/runs/{started['run_id']}")
        assert shown["rolled_back"]["by"] == "operator:ops", shown


async def test_an_approved_change_that_cannot_start_leaves_the_old_mad_running_and_says_why(
    tmp_path: Path, llm_server: ScriptedLLM, ecosystem_source: Path
) -> None:
    edit_requirement(ecosystem_source)
    config = write_config(tmp_path / "ecosystem.toml", llm_server.base_url)
    async with ecosystem_child(ecosystem_source, config, tmp_path / "data", tmp_path / "ecosystem.log") as eco:
        instances = await eco.instances()
        llm_server.script(change_that_cannot_start(ecosystem_source))
        status, started = await eco.post("/api/regeneration/runs", START)
        assert status == 202, started
        assert (await run_ended(eco, started["run_id"]))["state"] == "awaiting_approval"

        # Approved through the gateway: merged, but the reload fails and the old McNamara is put back.
        status, decided = await eco.post(f"/api/regeneration/runs/{started['run_id']}/approve")
        assert status == 200, decided
        assert decided["decision"] == "approved" and decided["reloaded"] == [], decided
        assert head(ecosystem_source) == decided["merged"]
        status, shown = await eco.get(f"/api/regeneration/runs/{started['run_id']}")
        [failed] = shown["reloads"]
        assert failed["outcome"] == "reload_failed" and REFUSAL in failed["error"], failed

        assert "ping" not in await eco.tools("mcnamara")
        audit = await eco.command('/mcnamara tail {"n": 1}')  # the old McNamara answers
        assert audit["error"] is None and len(audit["data"][0]) == 1, audit
        now = await eco.instances()
        assert {m: now[m] for m in ("rogers", "fiedler", "grace")} == {
            m: instances[m] for m in ("rogers", "fiedler", "grace")
        }
