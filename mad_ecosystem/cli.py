"""The command line: ``run`` (the default) and the operator subcommands.

    python ecosystem.py                 # run everything on 127.0.0.1:8765
    python ecosystem.py --port 9000     # another port (also: run --port 9000)
    python ecosystem.py --help          # every subcommand

Subcommands live with the component they operate on (secrets with Turing, the
audit trail with McNamara, access tokens with the gateway); this file only wires
them into one command line.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mads import registry
from mads.core.settings import ConfigError, Settings, load_settings, validate_mad_section

if TYPE_CHECKING:
    from mad_ecosystem.app import Ecosystem

SUBCOMMAND_MODULES = [
    "mads.admin.secrets",
    "mads.admin.audit",
    "mads.admin.storage",
    "gateway.cli",
    "mad_ecosystem.regenerate",
]
"""Modules offering ``register(subparsers)``; each adds its own subcommands."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file (default: ./ecosystem.toml if present)")
    parser.add_argument("--data-dir", type=Path, help="directory for everything persistent (default: ./data)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="gateway port (default 8765; 0 picks a free one)")
    parser.add_argument("--host", help="gateway bind address (default 127.0.0.1)")
    parser.add_argument("--bus", help='"memory" (default) or redis://HOST:PORT/DB to spread MADs over processes')
    parser.add_argument("--mads", help="comma-separated MADs to run in this process (default: all)")


def _suppress_defaults(parser: argparse.ArgumentParser) -> None:
    """Options a subcommand repeats must not reset what was given before the subcommand."""
    for option in parser._actions:
        if option.option_strings and option.dest != "help":
            option.default = argparse.SUPPRESS


RUN_DESCRIPTION = (
    "Start the bus, the MADs and the gateway in this process and serve until Ctrl-C or SIGTERM "
    "(in-flight requests finish, storage closes cleanly). The default command."
)
CONFIG_DESCRIPTION = (
    "Validate the configuration exactly as start does (every section, including each MAD's own, for the MADs "
    "this process would run) and print it as JSON, without secrets. Exit code 2 names the bad key."
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that names an unknown option instead of mistaking its value for a command."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        self._refuse_unknown_options(argv)
        return super().parse_known_args(argv, namespace)

    def _refuse_unknown_options(self, argv: list[str]) -> None:
        commands = self._commands()
        if not commands:
            return
        known = {flag: action for action in self._actions for flag in action.option_strings}
        index = 0
        while index < len(argv):
            token = argv[index]
            if token == "--" or not token.startswith("-") or token == "-":
                return  # the command (or a positional): its own parser checks the rest
            flag = token.split("=", 1)[0]
            action = known.get(flag)
            if action is None:
                close = difflib.get_close_matches(flag, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(f"unrecognized option {flag}{hint}")
            takes_value = action.nargs != 0 and "=" not in token
            index += 2 if takes_value else 1

    def _commands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ecosystem.py",
        description="Run the MAD ecosystem: a society of LLM agents behind one web gateway.",
    )
    _add_common(parser)
    _add_run_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = subparsers.add_parser(
        "run", help="start the ecosystem (the default when no command is given)", description=RUN_DESCRIPTION
    )
    _add_common(run)
    _add_run_options(run)
    _suppress_defaults(run)
    run.set_defaults(handler=None)
    check = subparsers.add_parser(
        "config", help="validate the configuration and print it (no secrets)", description=CONFIG_DESCRIPTION
    )
    _add_common(check)
    _add_run_options(check)
    _suppress_defaults(check)
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


def validate_mads(settings: Settings) -> None:
    """Each MAD's own section, validated as the host does at start (ConfigError naming ``<mad>.<key>``)."""
    for name in registry.select(settings.ecosystem.mads):
        validate_mad_section(name, registry.load(name).config_model, settings.section(name))


def _config_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    validate_mads(settings)
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
