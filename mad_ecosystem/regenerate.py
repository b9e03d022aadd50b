"""``ecosystem.py regenerate``: governed regeneration from the command line.

    ecosystem.py regenerate MAD --model NAME --model-id ID [--max-calls N --max-cost USD --max-seconds S]
    ecosystem.py regenerate --all --model NAME --model-id ID [...]   (every MAD, dependency order)
    ecosystem.py regenerate list
    ecosystem.py regenerate show RUN
    ecosystem.py regenerate approve RUN
    ecosystem.py regenerate reject RUN [--reason TEXT]
    ecosystem.py regenerate MAD --rollback

Starting a run brings up Turing and Fiedler in this process (the LLM is always reached through
Fiedler), drives the run to its end and prints its summary; the run waits for ``approve`` or
``reject``. Runs are kept in ``<data_dir>/regeneration/runs.db``; worktrees in
``<data_dir>/regeneration/worktrees``. The person deciding is the operator named by ``--by``
(default: the login name).

``approve`` needs no connection to a running ecosystem: every running ecosystem on the same data
directory follows the run log and reloads the approved MAD (only that one) within a second; ``show``
lists each reload (``reloads``) with the process that made it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus.envelope import Principal
from mads.core import names
from mads.core.settings import Settings
from mads.core.workflow import Budget, RunLog
from regeneration.confinement import Confinement
from regeneration.pinning import PinnedModel
from regeneration.run import Regeneration, RegenerationContext, default_tests

ACTIONS = ("list", "show", "approve", "reject")
SOURCE = Path(__file__).resolve().parent.parent


def register(subparsers: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subparsers.add_parser(
        "regenerate",
        help="regenerate a MAD from its requirements (governed: confined tests, a person approves)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("target", nargs="?", help="a MAD name, or list / show / approve / reject")
    p.add_argument(
        "--all",
        action="store_true",
        help="regenerate every MAD in dependency order, one run each (each with the budget given)",
    )
    p.add_argument("run", nargs="?", help="the run id (show / approve / reject)")
    p.add_argument("--rollback", action="store_true", help="return MAD to its previous approved version")
    p.add_argument("--model", help="Fiedler registry name of the pinned model")
    p.add_argument("--model-id", help="the exact model id that name must be bound to (aliases are refused)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=16000)
    p.add_argument("--max-calls", type=int, default=5, help="LLM calls the run may make (default 5)")
    p.add_argument("--max-cost", type=float, default=None, help="USD the run may spend")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="wall-clock seconds (default 1800)")
    p.add_argument("--tests", nargs="*", help="test paths run confined (default: the MAD's tests + architecture)")
    p.add_argument("--reason", default="", help="why a run is rejected")
    p.add_argument("--by", default=None, help="the operator deciding (default: the login name)")
    p.add_argument("--source", type=Path, default=SOURCE, help="the ecosystem's git source (default: this one)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mad_ecosystem.cli import settings_from_args

    try:
        settings = settings_from_args(args)
        return asyncio.run(_dispatch(args, settings))
    except (ValueError, KeyError, RuntimeError) as exc:
        print(f"regenerate: {exc}", file=sys.stderr)
        return 2


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    operator = Principal(kind="operator", name=args.by or getpass.getuser())
    home = settings.ecosystem.data_dir / "regeneration"
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
    log = await RunLog.open(home / "runs.db")
    try:
        if args.all == (args.target is not None):
            raise ValueError("target: name one MAD or list / show / approve / reject, or give --all (not both)")
        if args.all and args.rollback:
            raise ValueError("--rollback: returns one MAD to its previous version; name it (not --all)")
        if args.target in ACTIONS:
            return await _decide(args, _regeneration(args, log, home, _no_llm), operator)
        if args.rollback:
            commit = await _regeneration(args, log, home, _no_llm).rollback(args.target, operator)
            print(json.dumps({"mad": args.target, "rolled_back": commit}))
            return 0
        if not args.model or not args.model_id:
            raise ValueError("--model and --model-id: a run needs a pinned model (registry name and exact id)")
        return await _start(args, settings, log, home, operator)
    finally:
        await log.close()


async def _no_llm(tool: str, arguments: dict[str, Any]) -> Any:
    raise RuntimeError("this action does not call an LLM")


def _regeneration(
    args: argparse.Namespace, log: RunLog, home: Path, fiedler: Any, data_dir: Path | None = None
) -> Regeneration:
    from regeneration.worktree import WorktreeManager

    tests = (lambda mad: list(args.tests)) if args.tests else default_tests
    return Regeneration(
        RegenerationContext(
            source=args.source,
            worktrees=WorktreeManager(args.source, home / "worktrees"),
            confinement=Confinement(),
            log=log,
            fiedler=fiedler,
            model=PinnedModel(
                name=args.model or "unset",
                model_id=args.model_id or "unset",
                temperature=args.temperature,
                max_tokens=args.max_tokens,
            ),
            budget=Budget(llm_calls=args.max_calls, cost_usd=args.max_cost, wall_s=args.max_seconds),
            python=sys.executable,
            tests=tests,
            data_dir=data_dir,
        )
    )


async def _decide(args: argparse.Namespace, regen: Regeneration, operator: Principal) -> int:
    if args.target == "list":
        for run_id in await regen.list_runs():
            s = await regen.summary(run_id)
            decided = s.decision["decision"] if s.decision else "-"
            print(f"{run_id}  {s.mad:10} {s.status:9} {s.state:18} {decided:9} calls={s.llm_calls} ${s.cost_usd:.4f}")
        return 0
    if not args.run:
        raise ValueError(f"{args.target}: which run? (regenerate list)")
    if args.target == "show":
        print((await regen.summary(args.run)).model_dump_json(indent=2))
    elif args.target == "approve":
        print(json.dumps({"run": args.run, "merged": await regen.approve(args.run, operator)}))
    else:
        await regen.reject(args.run, operator, args.reason)
        print(json.dumps({"run": args.run, "rejected": True}))
    return 0


async def _start(args: argparse.Namespace, settings: Settings, log: RunLog, home: Path, operator: Principal) -> int:
    from mads.host import Host

    here = settings.model_copy(
        update={"ecosystem": settings.ecosystem.model_copy(update={"mads": [names.TURING, names.FIEDLER]})}
    )
    host = Host(here)
    await host.start()
    try:
        fiedler_mad = host.mads[names.FIEDLER]
        await host.directory.wait_for(set(host.names), 10.0)
        ready = getattr(fiedler_mad, "ready", None)
        if ready is not None:
            await ready()

        async def fiedler(tool: str, arguments: dict[str, Any]) -> Any:
            return await fiedler_mad.call(names.FIEDLER, tool, arguments, timeout=args.max_seconds)

        regen = _regeneration(args, log, home, fiedler, settings.ecosystem.data_dir)
        if args.all:
            entries = await regen.start_all(operator)
            print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
            return 0 if all(e.state == "awaiting_approval" for e in entries) else 1
        run_id = await regen.start(args.target, operator)
        await regen.wait(run_id)
        summary = await regen.summary(run_id)
        print(summary.model_dump_json(indent=2))
        return 0 if summary.state == "awaiting_approval" else 1
    finally:
        await host.stop()
