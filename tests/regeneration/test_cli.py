"""``ecosystem.py regenerate`` end to end: the command line, Fiedler in-process, the scripted LLM, bubblewrap."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mad_ecosystem.cli import main
from regeneration.order import dependencies, dependency_order
from tests.regeneration.support import GOOD, proposal
from tests.support.llm_server import ScriptedLLM

pytestmark = pytest.mark.slow


@pytest.fixture
def cli_args(tmp_path: Path, llm_server: ScriptedLLM, ecosystem_source: Path) -> list[str]:
    config = tmp_path / "ecosystem.toml"
    config.write_text(
        '[fiedler]\nretries = 0\ntimeout = 30.0\nroles = { imperator = "scripted" }\n'
        f'[[fiedler.models]]\nname = "scripted"\nmodel = "openai/scripted"\napi_base = "{llm_server.base_url}"\n'
        'roles = ["imperator"]\n'
    )
    return ["--config", str(config), "--data-dir", str(tmp_path / "data"), "--source", str(ecosystem_source)]


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["regenerate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_regenerate_show_approve_and_rollback_from_the_command_line(
    cli_args: list[str], llm_server: ScriptedLLM, ecosystem_source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_server.script(GOOD)
    pin = ["--model", "scripted", "--model-id", "openai/scripted", "--by", "ops"]
    code, out, err = await _cli(capsys, "mcnamara", *pin, "--tests", "tests/mads/mcnamara/test_ping.py", *cli_args)
    assert code == 0, err
    started = json.loads(out)
    assert started["state"] == "awaiting_approval"
    assert started["started_by"] == "operator:ops"
    run_id = started["run_id"]

    code, out, _ = await _cli(capsys, "list", *cli_args)
    assert code == 0 and run_id in out and "awaiting_approval" in out

    code, out, _ = await _cli(capsys, "show", run_id, *cli_args)
    shown = json.loads(out)
    assert '+    return "pong"' in shown["diff"]
    assert shown["report"]["tools"] == {"added": [], "removed": [], "changed": {}}

    code, out, _ = await _cli(capsys, "approve", run_id, "--by", "ops", *cli_args)
    assert code == 0 and json.loads(out)["merged"]
    assert (ecosystem_source / "mads/mcnamara/ping.py").exists()

    code, out, _ = await _cli(capsys, "mcnamara", "--rollback", "--by", "ops", *cli_args)
    assert code == 0, out
    assert not (ecosystem_source / "mads/mcnamara/ping.py").exists()


async def test_all_runs_every_mad_in_dependency_order_from_the_command_line(
    cli_args: list[str], llm_server: ScriptedLLM, ecosystem_source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mads = dependency_order(dependencies(ecosystem_source))
    # Each MAD's one call proposes a file outside its paths, undeclared: refused before anything runs confined.
    llm_server.script(*[proposal({"README.md": "mine\n"}, message="out of bounds") for _ in mads])
    pin = ["--model", "scripted", "--model-id", "openai/scripted", "--by", "ops", "--max-calls", "1"]

    code, out, err = await _cli(capsys, "--all", *pin, *cli_args)

    assert code == 1, err
    entries = json.loads(out)
    assert [e["mad"] for e in entries] == mads
    assert all(e["status"] == "failed" and e["code"] == "budget_exceeded" for e in entries), entries
    assert len({e["run_id"] for e in entries}) == len(mads)
    prompts = [r.prompt_text for r in llm_server.requests]
    assert [next(m for m in mads if f"## requirements/{m}.md" in p) for p in prompts] == mads
    code, out, _ = await _cli(capsys, "list", *cli_args)
    assert code == 0 and all(e["run_id"] in out for e in entries)


async def test_a_drifting_alias_is_refused_before_anything_runs(
    cli_args: list[str], ecosystem_source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await _cli(capsys, "mcnamara", "--model", "scripted", "--model-id", "openai/gpt-4o", *cli_args)
    assert code == 2
    assert "not the pinned" in err or "alias" in err

    code, _, err = await _cli(capsys, "mcnamara", *cli_args)
    assert code == 2 and "--model" in err

    code, _, err = await _cli(capsys, "mcnamara", "--all", *cli_args)
    assert code == 2 and "--all" in err and "not both" in err
    code, _, err = await _cli(capsys, "--all", "--rollback", *cli_args)
    assert code == 2 and "--rollback" in err
