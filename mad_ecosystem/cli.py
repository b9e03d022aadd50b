"""The command line: ``run`` (the default) and the operator subcommands.

    python ecosystem.py                 # run everything on 127.0.0.1:8765
    python ecosystem.py --port 9000     # another port
    python ecosystem.py --help          # every subcommand

Subcommands live with the component they operate on (secrets with Turing, the
audit trail with McNamara, access tokens with the gateway); this file only wires
them into one command line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mads import registry
from mads.core.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from mad_ecosystem.app import Ecosystem

SUBCOMMAND_MODULES = ["mads.admin.secrets", "mads.admin.audit", "mads.admin.storage", "gateway.cli"]
"""Modules offering ``register(subparsers)``; each adds its own subcommands."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file (default: ./ecosystem.toml if present)")
    parser.add_argument("--data-dir", type=Path, help="directory for everything persistent (default: ./data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecosystem.py",
        description="Run the MAD ecosystem: a society of LLM agents behind one web gateway.",
    )
    _add_common(parser)
    parser.add_argument("--port", type=int, help="gateway port (default 8765; 0 picks a free one)")
    parser.add_argument("--host", help="gateway bind address (default 127.0.0.1)")
    parser.add_argument("--bus", help='"memory" (default) or redis://HOST:PORT/DB to spread MADs over processes')
    parser.add_argument("--mads", help="comma-separated MADs to run in this process (default: all)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = subparsers.add_parser("run", help="start the ecosystem (the default when no command is given)")
    run.set_defaults(handler=None)
    check = subparsers.add_parser("config", help="validate the configuration and print it (no secrets)")
    check.set_defaults(handler=_config_command)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers, _add_common)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, Any]] = {"ecosystem": {}, "gateway": {}}
    if getattr(args, "data_dir", None) is not None:
        overrides["ecosystem"]["data_dir"] = str(args.data_dir)
    if getattr(args, "bus", None):
        overrides["ecosystem"]["bus"] = args.bus
    if getattr(args, "mads", None):
        overrides["ecosystem"]["mads"] = [m.strip() for m in args.mads.split(",") if m.strip()]
    if getattr(args, "port", None) is not None:
        overrides["gateway"]["port"] = args.port
    if getattr(args, "host", None):
        overrides["gateway"]["host"] = args.host
    return load_settings(
        getattr(args, "config", None),
        known_mads=set(registry.MADS),
        overrides={k: v for k, v in overrides.items() if v},
    )


def _config_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


async def serve(settings: Settings, *, ready: Callable[[Ecosystem], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then shut down cleanly."""
    # Imported here: ``--help`` and the offline subcommands need none of the runtime.
    from mad_ecosystem.app import Ecosystem

    ecosystem = Ecosystem(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await ecosystem.start()
    try:
        if ready is not None:
            ready(ecosystem)
        await stop.wait()
    finally:
        logging.getLogger("ecosystem").info("shutting down")
        await ecosystem.stop()


def _announce(ecosystem: Ecosystem) -> None:
    if ecosystem.url:
        print(f"mad-ecosystem is running at {ecosystem.url}  (Ctrl-C to stop)", flush=True)
    else:
        print("mad-ecosystem MADs are running (no gateway in this process)  (Ctrl-C to stop)", flush=True)
    print(ecosystem.describe(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args) or 0)
        settings = settings_from_args(args)
        from mads.core.telemetry import configure_logging

        configure_logging(settings.ecosystem.log_level, settings.telemetry.json_logs)
        asyncio.run(serve(settings, ready=_announce))
        return 0
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from mads.core.sqlite import storage_failure

        line = storage_failure(exc, Path(getattr(args, "data_dir", None) or "data"))
        if line is None:
            raise
        print(f"storage error: {line}", file=sys.stderr)
        return 3
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
