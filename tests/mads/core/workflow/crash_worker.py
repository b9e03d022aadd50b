"""A process that drives one workflow run, for the kill -9 test: ``python -m ... <dir> start|resume``.

Every LLM call and hook appends a line to a file in ``<dir>`` (side effects a repeat would show).
In ``start`` mode the engineer's call writes ``blocked`` and waits forever, so the test can kill
the process there; in ``resume`` mode it answers and the run finishes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bus.envelope import Principal
from mads.core.workflow import Engine, GuardVerdict, RoleReply, RoleRequest, RunLog, StepContext
from tests.mads.core.workflow.flows import pipeline


def append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()


async def main(directory: Path, mode: str) -> None:
    log = await RunLog.open(directory / "runs.db")

    async def roles(request: RoleRequest) -> RoleReply:
        append(directory / "calls.txt", f"{request.state}:{request.attempt}")
        if request.state == "plan":
            return RoleReply(text=json.dumps({"outcome": "planned"}))
        if mode == "start":
            append(directory / "blocked", "yes")
            await asyncio.Event().wait()
        return RoleReply(text=json.dumps({"outcome": "ready", "code": "x"}))

    async def checked(ctx: StepContext) -> GuardVerdict:
        append(directory / "effects.txt", f"guard:{ctx.step}")
        return GuardVerdict(ok=True)

    async def record(ctx: StepContext) -> str:
        append(directory / "effects.txt", f"record:{ctx.state}:{ctx.step}")
        return "ok"

    async def release(ctx: StepContext) -> None:
        append(directory / "effects.txt", f"release:{ctx.ending}")

    engine = Engine(log, roles, guards={"checked": checked}, hooks={"record": record, "release": release})
    if mode == "start":
        run_id = await engine.start(pipeline(), principal=Principal(kind="user", name="alice"), subject="s")
        await engine.run(run_id)
    else:
        for run_id in await engine.resume_all():
            outcome = await engine.drive(run_id)
            append(directory / "outcome.json", outcome.model_dump_json())
    await log.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
