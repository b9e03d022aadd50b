"""A regeneration run end to end: the real ecosystem's Fiedler, a scripted LLM, real git, real bubblewrap.

The scripted LLM returns prepared changes to McNamara; the run applies each in its own
worktree, reports on it, runs the tests confined and waits for a person.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path

import pytest

from bus.envelope import Principal
from mads.core import names
from mads.core.workflow import Budget, RunLog
from regeneration.gitrepo import git
from regeneration.pinning import ModelNotPinned, PinnedModel, drift_reason
from regeneration.run import DecisionRefused, Regeneration
from tests.regeneration.support import GOOD, OPERATOR, PING, PING_TEST, proposal
from tests.support.llm_server import ScriptedLLM

pytestmark = pytest.mark.slow


async def _head(repo: Path) -> str:
    return (await git(repo, "rev-parse", "HEAD")).strip()


async def test_a_green_change_waits_for_approval_and_approve_merges_it(
    regeneration: tuple[Regeneration, RunLog], llm_server: ScriptedLLM, ecosystem_source: Path
) -> None:
    regen, log = regeneration
    llm_server.script(GOOD)
    before = await _head(ecosystem_source)

    run_id = await regen.start(names.MCNAMARA, OPERATOR)
    outcome = await regen.wait(run_id)

    assert outcome.status == "finished", outcome
    assert outcome.state == "awaiting_approval"
    summary = await regen.summary(run_id)
    assert summary.started_by == "operator:ops"
    assert summary.model["model_id"] == "openai/scripted"
    assert summary.model["temperature"] == 0.0
    assert summary.llm_calls == 1
    assert summary.report is not None
    assert sorted(f["path"] for f in summary.report["files"]) == [
        "mads/mcnamara/ping.py",
        "tests/mads/mcnamara/test_ping.py",
    ]
    assert summary.report["violations"] == []
    assert summary.tests is not None and summary.tests["returncode"] == 0
    assert summary.architecture_tests is not None and summary.architecture_tests["returncode"] == 0
    assert summary.architecture_tests["paths"] == ["tests/test_codebase.py"]
    assert "passed" in str(summary.tests["output"])
    assert summary.diff is not None and '+    return "pong"' in summary.diff
    assert summary.diff_hash is not None and len(summary.diff_hash) == 64
    # The prompt carried the requirements and the principles; its hash is audited.
    [request] = llm_server.requests
    assert "requirements/mcnamara.md" in request.prompt_text and "principles/architecture.md" in request.prompt_text
    prompts = [e.payload for e in await log.entries(run_id) if e.kind == "regen_prompt"]
    assert len(prompts) == 1 and len(str(prompts[0]["prompt_sha256"])) == 64
    # Nothing reached the running tree yet.
    assert await _head(ecosystem_source) == before
    assert not (ecosystem_source / "mads/mcnamara/ping.py").exists()

    with pytest.raises(DecisionRefused, match="not an operator"):
        await regen.approve(run_id, Principal(kind="user", name="mallory"))
    merged = await regen.approve(run_id, OPERATOR)

    assert await _head(ecosystem_source) == merged
    assert (ecosystem_source / "mads/mcnamara/ping.py").read_text() == PING
    decided = await regen.summary(run_id)
    assert decided.decision is not None and decided.decision["by"] == "operator:ops"
    with pytest.raises(DecisionRefused, match="already approved"):
        await regen.reject(run_id, OPERATOR)

    # --rollback returns McNamara to the version before.
    await regen.rollback(names.MCNAMARA, OPERATOR)
    assert not (ecosystem_source / "mads/mcnamara/ping.py").exists()


async def test_reject_leaves_the_tree_as_it_was(
    regeneration: tuple[Regeneration, RunLog], llm_server: ScriptedLLM, ecosystem_source: Path
) -> None:
    regen, _ = regeneration
    llm_server.script(GOOD)
    before = await _head(ecosystem_source)
    run_id = await regen.start(names.MCNAMARA, OPERATOR)
    assert (await regen.wait(run_id)).state == "awaiting_approval"

    await regen.reject(run_id, OPERATOR, "not now")

    assert await _head(ecosystem_source) == before
    assert (await git(ecosystem_source, "status", "--porcelain")).strip() == ""
    assert (await git(ecosystem_source, "branch", "--list", f"regen/mcnamara/{run_id}")).strip() == ""
    summary = await regen.summary(run_id)
    assert summary.decision == {"decision": "rejected", "by": "operator:ops", "reason": "not now"}


async def test_red_tests_and_broken_principles_go_back_to_the_llm_with_the_reason(
    regeneration: tuple[Regeneration, RunLog], llm_server: ScriptedLLM
) -> None:
    regen, _ = regeneration
    red = proposal(
        {"mads/mcnamara/ping.py": PING.replace('"pong"', '"pang"'), "tests/mads/mcnamara/test_ping.py": PING_TEST}
    )
    importing_rogers = proposal(
        {"mads/mcnamara/ping.py": "from mads.rogers import store  # noqa: F401\n\n" + PING,
         "tests/mads/mcnamara/test_ping.py": PING_TEST}
    )  # fmt: skip
    llm_server.script(red, importing_rogers, GOOD)

    run_id = await regen.start(names.MCNAMARA, OPERATOR)
    outcome = await regen.wait(run_id)

    assert outcome.state == "awaiting_approval", outcome
    summary = await regen.summary(run_id)
    assert [a["ok"] for a in summary.attempts] == [False, False, True]
    assert "tests failed" in str(summary.attempts[0]["reason"])
    assert "assert 'pang' == 'pong'" in str(summary.attempts[0]["reason"])
    assert "mad_imports_mad" in str(summary.attempts[1]["reason"])
    # Each failure went back to the LLM in the next prompt.
    first, second, third = llm_server.requests
    assert "Previous attempts failed" not in first.prompt_text
    assert "'pang' == 'pong'" in second.prompt_text
    assert "mad_imports_mad" in third.prompt_text


async def test_the_arbiter_cannot_be_edited_or_hidden_by_the_change(
    regeneration: tuple[Regeneration, RunLog], llm_server: ScriptedLLM
) -> None:
    regen, _ = regeneration
    weakened = proposal(
        {**json.loads(GOOD.text)["files"], "tests/test_codebase.py": "def test_nothing() -> None:\n    pass\n"},
        declared=["tests/test_codebase.py"],
    )
    hides_everything = "def pytest_collection_modifyitems(config, items):\n    items.clear()\n"
    hidden = proposal(
        {
            "mads/mcnamara/ping.py": "import os\n" + PING,  # an unused import: ruff, in the architecture tests, sees it
            "tests/mads/mcnamara/test_ping.py": PING_TEST,
            "tests/mads/mcnamara/conftest.py": hides_everything,
        }
    )
    llm_server.script(weakened, hidden, GOOD)

    run_id = await regen.start(names.MCNAMARA, OPERATOR)
    outcome = await regen.wait(run_id)

    assert outcome.state == "awaiting_approval", outcome
    summary = await regen.summary(run_id)
    assert [a["ok"] for a in summary.attempts] == [False, False, True]
    assert "protected_file tests/test_codebase.py" in str(summary.attempts[0]["reason"])
    assert "architecture tests failed" in str(summary.attempts[1]["reason"])
    assert "F401" in str(summary.attempts[1]["reason"])


async def test_network_and_writes_outside_during_the_tests_are_stopped_and_the_budget_ends_the_run(
    regeneration: tuple[Regeneration, RunLog], llm_server: ScriptedLLM, ecosystem_source: Path
) -> None:
    regen, _ = regeneration
    outside = Path("/var/tmp") / f"regen-escape-{uuid.uuid4().hex}"
    connects = (
        "import socket\n\n\ndef test_ping() -> None:\n"
        "    socket.create_connection(('127.0.0.1', 6379), timeout=5).close()\n"
    )
    writes = f"def test_ping() -> None:\n    with open({str(outside)!r}, 'w') as f:\n        f.write('escaped')\n"
    files = {"mads/mcnamara/ping.py": PING}
    llm_server.script(
        proposal({**files, "tests/mads/mcnamara/test_ping.py": connects}),
        proposal({**files, "tests/mads/mcnamara/test_ping.py": writes}),
        proposal({**files, "requirements/rogers.md": "mine now\n"}),
    )
    before = await _head(ecosystem_source)

    run_id = await regen.start(names.MCNAMARA, OPERATOR)
    outcome = await regen.wait(run_id)

    assert outcome.status == "failed"
    assert outcome.code == "budget_exceeded"
    summary = await regen.summary(run_id)
    assert [a["ok"] for a in summary.attempts] == [False, False, False]
    reasons = [str(a["reason"]) for a in summary.attempts]
    assert "tests failed" in reasons[0] and ("ConnectionRefusedError" in reasons[0] or "OSError" in reasons[0])
    assert "tests failed" in reasons[1] and ("PermissionError" in reasons[1] or "OSError" in reasons[1])
    assert "requirements/rogers.md" in reasons[2] and "not declared" in reasons[2]
    assert not await asyncio.to_thread(outside.exists)
    assert "budget_exceeded" in str(summary.failure) or "LLM calls" in str(summary.failure)
    # Nothing is left behind and nothing reached the tree.
    assert await _head(ecosystem_source) == before
    assert (await git(ecosystem_source, "worktree", "list")).count("\n") == 1
    with pytest.raises(DecisionRefused, match="not awaiting approval"):
        await regen.approve(run_id, OPERATOR)


async def test_a_model_that_is_not_exactly_the_pinned_one_is_refused(
    regeneration: tuple[Regeneration, RunLog], ecosystem_source: Path
) -> None:
    regen, _ = regeneration
    with pytest.raises(ValueError, match="unknown MAD 'nosuchmad'"):
        await regen.start("nosuchmad", OPERATOR)
    regen.ctx.model = PinnedModel(name="scripted", model_id="openai/scripted-v2")
    with pytest.raises(ModelNotPinned, match="not the pinned"):
        await regen.start(names.MCNAMARA, OPERATOR)
    assert (await git(ecosystem_source, "worktree", "list")).count("\n") == 1


@pytest.mark.parametrize(
    ("model_id", "api_base", "drifts"),
    [
        ("openai/gpt-4o", None, True),
        ("openai/gpt-4o-2024-08-06", None, False),
        ("anthropic/claude-3-5-sonnet-latest", None, True),
        ("anthropic/claude-3-5-sonnet-20241022", None, False),
        ("gemini/gemini-1.5-pro-002", None, False),
        ("openai/llama3.1:latest", "http://127.0.0.1:11434/v1", True),
        ("openai/llama3.1:8b", "http://127.0.0.1:11434/v1", False),
    ],
)
def test_aliases_that_drift_are_named(model_id: str, api_base: str | None, drifts: bool) -> None:
    assert (drift_reason(model_id, api_base) is not None) == drifts


async def test_all_runs_each_mad_in_dependency_order_and_a_failed_run_does_not_stop_the_next(
    regeneration: tuple[Regeneration, RunLog], llm_server: ScriptedLLM, ecosystem_source: Path
) -> None:
    regen, _ = regeneration
    one_call = Regeneration(dataclasses.replace(regen.ctx, budget=Budget(llm_calls=1, wall_s=600)))
    unchanged = (ecosystem_source / "mads/mcnamara/__init__.py").read_text()
    playfair_ping = PING.replace("McNamara", "Playfair")
    playfair_test = PING_TEST.replace("mcnamara", "playfair")
    llm_server.script(
        # McNamara: "no change" (the file as it is) is refused, and its one call is spent.
        proposal({"mads/mcnamara/__init__.py": unchanged}, message="nothing to change"),
        proposal({"mads/playfair/ping.py": playfair_ping, "tests/mads/playfair/test_ping.py": playfair_test}),
    )
    try:
        with pytest.raises(ValueError, match="unknown MAD"):
            await one_call.start_all(OPERATOR, only={"nosuchmad"})
        entries = await one_call.start_all(OPERATOR, only={names.PLAYFAIR, names.MCNAMARA})
    finally:
        await one_call.engine.close()

    assert [e.mad for e in entries] == [names.MCNAMARA, names.PLAYFAIR]
    failed, waiting = entries
    assert failed.status == "failed" and failed.code == "budget_exceeded"
    assert waiting.status == "finished" and waiting.state == "awaiting_approval", waiting
    refused = await one_call.summary(failed.run_id)
    assert "identical to the current tree" in str(refused.attempts[0]["reason"])
    first, second = llm_server.requests
    assert "## requirements/mcnamara.md" in first.prompt_text
    assert "## requirements/playfair.md" in second.prompt_text
    shown = await one_call.summary(waiting.run_id)
    assert shown.diff is not None and "mads/playfair/ping.py" in shown.diff
    # One worktree is left: the run awaiting approval.
    assert (await git(ecosystem_source, "worktree", "list")).count("\n") == 2
