"""Hopper's development society: stories per minute, LLM calls per story, engine overhead per transition.

Run: ``uv run python bench/society.py`` (``--stories`` per run, ``--transitions`` for the engine column).

Two measurements, in one process:

* **engine overhead per transition**: a three-state workflow driven by the engine with a role that answers
  instantly and no-op hooks and guard, against its peer, the floor of the same number of bare ``RunLog.append``
  calls (the durable writes a transition needs at minimum). Printed in ms per transition (LLM latency excluded:
  there is none) and as a ratio to the floor.
* **the society end to end**: the real ecosystem in-process (Rogers, Fiedler, Grace, Horace, Hopper, the WASM
  sandbox) with a scripted LLM playing every role and answering instantly; ``--stories`` stories of three
  dependent tasks each, filed at once on distinct projects. Printed: stories per minute (filing to the last
  story done, wall clock), LLM calls per story, test runs per story. The sandbox's first compile (if the cache
  is cold) happens before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bus.envelope import Principal
from mads.core.workflow import Engine, GuardVerdict, RoleReply, RoleRequest, RunLog, StepContext, WorkflowDefinition

BENCH = Principal(kind="user", name="bench")
FLOW = WorkflowDefinition.model_validate(
    {
        "name": "bench",
        "version": 1,
        "initial": "a",
        "states": {
            "a": {"role": "x", "output_schema": {"type": "object"}},
            "b": {"role": "x", "output_schema": {"type": "object"}},
            "c": {"role": "x", "output_schema": {"type": "object"}},
            "done": {"terminal": True, "succeeded": True},
        },
        "transitions": [
            {"source": "a", "target": "b", "on": "next", "after": ["noop"]},
            {"source": "b", "target": "c", "on": "next", "guard": "yes"},
            {"source": "c", "target": "done", "on": "next", "before": ["noop"]},
        ],
        "on_end": ["noop"],
    }
)


async def instant(request: RoleRequest) -> RoleReply:
    return RoleReply(text='{"outcome": "next"}')


async def noop(ctx: StepContext) -> None:
    return None


async def yes(ctx: StepContext) -> GuardVerdict:
    return GuardVerdict(ok=True)


async def engine_column(directory: Path, runs: int) -> tuple[float, float, int]:
    """(ms per transition through the engine, ms per bare append, transitions)."""
    log = await RunLog.open(directory / "engine.db")
    engine = Engine(log, instant, guards={"yes": yes}, hooks={"noop": noop})
    try:
        started = time.perf_counter()
        for _ in range(runs):
            await engine.run(await engine.start(FLOW, principal=BENCH, subject="bench"))
        engine_s = time.perf_counter() - started
        transitions = runs * 3
        floor_run = await log.create("floor", FLOW, BENCH, "floor", {})
        started = time.perf_counter()
        for i in range(transitions):
            await log.append(floor_run.id, "transition", {"n": i}, key=f"t{i}")
        floor_s = time.perf_counter() - started
    finally:
        await log.close()
    return engine_s * 1000 / transitions, floor_s * 1000 / transitions, transitions


async def society_column(directory: Path, stories: int) -> dict[str, float]:
    from tests.support.ecosystem import running
    from tests.support.llm_server import ScriptedLLM
    from tests.support.sandbox_ecosystem import sandbox_settings
    from tests.support.society import SocietyLLM, story

    async with ScriptedLLM() as llm_server:
        llm = SocietyLLM()
        llm_server.respond_with(llm)
        data = directory / "data"
        settings = sandbox_settings(
            data,
            llm_server.base_url,
            mads=["rogers", "fiedler", "grace", "horace", "hopper"],
            sandbox={"maxima": {"timeout_s": 30}},
        )
        sections = {**settings.mad_sections, "hopper": {"society": {"wip_limits": {"in_progress": 8, "review": 8}}}}
        settings = settings.model_copy(update={"mad_sections": sections})
        async with running(settings) as eco:
            await eco.host.sandbox.ready()
            conversation = await eco.new_conversation("bench")
            started = time.perf_counter()
            ids = []
            for n in range(stories):
                body = await eco.say(conversation, "/hopper file_story " + json.dumps(story(f"bench-{n}")))
                ids.append(body["reply"]["data"][0]["id"])
            hopper = eco.host.mads["hopper"]
            board = hopper.society.board
            while True:
                states = [(await board.story(i)).status for i in ids]
                if all(s != "open" for s in states):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            metrics = await hopper.society.metrics()
    calls = [metrics["per_story"][i]["llm_calls"] for i in ids]
    return {
        "stories": stories,
        "done": sum(1 for s in states if s == "done"),
        "seconds": elapsed,
        "stories_per_minute": stories * 60 / elapsed,
        "llm_calls_per_story": statistics.mean(calls),
        "test_runs_per_story": metrics["counters"].get("test_runs", 0) / stories,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, default=3)
    parser.add_argument("--transitions", type=int, default=600, help="engine transitions (3 per run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-society-") as tmp:
        engine_ms, floor_ms, transitions = await engine_column(Path(tmp), max(1, args.transitions // 3))
        print(
            f"engine overhead per transition: {engine_ms:.3f} ms over {transitions} transitions "
            f"(floor, bare durable append: {floor_ms:.3f} ms; ratio {engine_ms / floor_ms:.1f}x)"
        )
        result = await society_column(Path(tmp), args.stories)
        print(
            f"society: {result['done']}/{result['stories']} stories done in {result['seconds']:.1f} s = "
            f"{result['stories_per_minute']:.2f} stories/min; {result['llm_calls_per_story']:.1f} LLM calls per "
            f"story; {result['test_runs_per_story']:.1f} test runs per story (scripted LLM answering instantly)"
        )


if __name__ == "__main__":
    asyncio.run(main())
