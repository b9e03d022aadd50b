"""What every operator subcommand (``secrets``, ``audit``, ``tokens``) does the same way.

Each adds a command with actions to ``ecosystem.py``'s parser, reads the same
configuration and data directory, and turns expected failures into one line on stderr
and an exit code (1 refused or failed, 2 usage or configuration), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mads import registry
from mads.core import names
from mads.core.settings import ConfigError, Settings, load_settings

AddCommon = Callable[[argparse.ArgumentParser], None]
"""``ecosystem.py``'s adder of the options every command accepts (``--config``, ``--data-dir``)."""

Handler = Callable[[argparse.Namespace], int]
_COMMON_DESTS = ("config", "data_dir")


class CliError(Exception):
    """An expected failure: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_command(
    subparsers: Any, add_common: AddCommon, name: str, *, summary: str, description: str, handler: Handler
) -> Callable[[str, str], argparse.ArgumentParser]:
    """Add command ``name`` (its action lands in ``args.<name>_action``); returns ``action(name, help)``.

    Each action parser takes the common options too, so they work before or after the
    action, and runs ``handler``.
    """
    top = subparsers.add_parser(name, help=summary, description=description)
    actions = top.add_subparsers(dest=f"{name}_action", metavar="ACTION", required=True)

    def action(action_name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(action_name, help=help_text, description=help_text)
        add_common(parser)
        # Absent leaf options must not hide the same options given before the command.
        for option in parser._actions:
            if option.dest in _COMMON_DESTS:
                option.default = argparse.SUPPRESS
        parser.set_defaults(handler=handler)
        return parser

    return action


def exit_code(body: Callable[[], int]) -> int:
    """Run an action's ``body`` and return its exit code, reporting an expected error in one line."""
    try:
        return body()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1


def settings_from(args: argparse.Namespace) -> Settings:
    """The ecosystem's settings as ``--config`` and ``--data-dir`` say (ConfigError if invalid)."""
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["ecosystem"] = {"data_dir": str(args.data_dir)}
    return load_settings(getattr(args, "config", None), known_mads=set(registry.MADS), overrides=overrides)


def data_dir_of(settings: Settings) -> Path:
    """The absolute data directory, so messages name the real place whatever the working directory."""
    return settings.ecosystem.data_dir.expanduser().resolve()


def audit_db_path(data_dir: Path) -> Path:
    """Where McNamara keeps its trail (the same default the McNamara MAD uses)."""
    return data_dir / names.MCNAMARA / "audit.db"
