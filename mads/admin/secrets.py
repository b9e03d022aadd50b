"""``python ecosystem.py secrets …``: the operator's hands on Turing's vault.

The CLI opens the vault file directly (SQLite WAL lets it sit next to a running
ecosystem) as principal ``operator`` and unseals it exactly as the ``[turing]``
configuration says. Every action is recorded in McNamara's audit trail first-hand; if
the record cannot be written the action fails (and ``get`` prints nothing). Values are
never taken from argv by default (argv is visible in ``ps``): they come from stdin or a
prompt without echo.

Exit codes: 0 ok, 1 the operation failed (message on stderr), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from mads.admin.cli import AddCommon, CliError, add_command, audit_db_path, data_dir_of, exit_code, settings_from
from mads.core import names
from mads.core.audit_trail import AuditError, AuditEvent, AuditOutcome, AuditTrail
from mads.core.settings import validate_mad_section
from mads.turing.barrier import MIN_PASSPHRASE_LEN, TuringError
from mads.turing.policy import AccessDenied, Capability
from mads.turing.schemas import OPERATOR, ROTATE_PATH, TuringConfig
from mads.turing.store import SecretNotFoundError, Vault
from mads.turing.unsealing import make_vault, unseal_from_config

REDACTION_CONFIRM_TIMEOUT = 5.0
"""Seconds ``secrets set`` waits for running ecosystems to confirm they redact the new value."""
REDACTION_POLL = 0.05
WATCHER_STALE = 10.0
"""A running ecosystem notes every 2 s that it watches the vault; an older note is a process that is gone."""

ARGV_WARNING = (
    "warning: --value puts the secret in the process list and shell history; prefer --value-stdin or the prompt"
)


# ---- argument parsing --------------------------------------------------------------------


def _versions(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated version numbers like 1,2, got {text!r}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected version numbers >= 1 like 1,2, got {text!r}")
    return out


def _version(text: str) -> int:
    value = _positive(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a version number >= 1, got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _credentials(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-env", metavar="VAR", help="environment variable holding the passphrase")
    group.add_argument("--key-file", type=Path, metavar="PATH", help="32-byte key file (created 0600 if missing)")


def register(subparsers: Any, add_common: AddCommon) -> None:
    """Add ``secrets`` and its actions to the ecosystem command line."""
    action = add_command(
        subparsers,
        add_common,
        "secrets",
        summary="manage Turing's secrets (set/get/list/versions/delete/undelete/destroy/rotate/rekey/status/init)",
        description="Operate on Turing's vault directly, as principal 'operator'. Every action is audited.",
        handler=run,
    )
    p = action("set", "store a new version of a secret (value from stdin or a prompt without echo)")
    p.add_argument("path")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--value-stdin", action="store_true", help="read the value from stdin (one trailing newline dropped)"
    )
    source.add_argument("--value", help="the value on the command line (visible in ps: avoid)")
    p.add_argument("--cas", type=_positive, help="check-and-set: 0 = must not exist, N = current version must be N")
    p = action("get", "print a secret's value")
    p.add_argument("path")
    p.add_argument("--version", type=_version, help="a specific version (default: the latest)")
    p = action("list", "list secret paths under a prefix")
    p.add_argument("prefix", nargs="?", default="")
    p = action("versions", "show a secret's versions and their state (no values)")
    p.add_argument("path")
    p = action("delete", "soft-delete versions (default: the latest)")
    p.add_argument("path")
    p.add_argument("--versions", type=_versions, help="comma-separated, e.g. 1,2")
    for name, text in (("undelete", "restore soft-deleted versions"), ("destroy", "erase versions permanently")):
        p = action(name, text)
        p.add_argument("path")
        p.add_argument("--versions", type=_versions, required=True, help="comma-separated, e.g. 1,2")
    action("rotate", "start a new data-key term for new writes (old versions stay readable)")
    p = action("rekey", "replace the root key and its wrapping; the old passphrase/key file stops working")
    _credentials(p)
    action("status", "show the seal status (never a secret)")
    p = action("init", "initialize a new vault (default: as [turing] configures it)")
    _credentials(p)


# ---- running ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Entry point for every ``secrets`` action: never a traceback for an expected error."""
    return exit_code(lambda: asyncio.run(_run(args)))


def _load(args: argparse.Namespace) -> tuple[TuringConfig, Path]:
    settings = settings_from(args)
    config = validate_mad_section(names.TURING, TuringConfig, settings.section(names.TURING))
    assert isinstance(config, TuringConfig)
    return config, data_dir_of(settings)


async def _run(args: argparse.Namespace) -> int:
    config, data_dir = _load(args)
    name: str = args.secrets_action
    value = _read_value(args) if name == "set" else None
    try:
        if name == "status":
            return await _status(config, data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        trail = AuditTrail(audit_db_path(data_dir))
        try:
            await trail.open()
        except (AuditError, OSError, sqlite3.Error) as exc:
            raise CliError(f"audit trail unavailable, nothing was done: {exc}") from None
        try:
            session = _Session(config, data_dir, trail, make_vault(config, data_dir))
            await session.vault.open()
            try:
                return await session.run(name, args, value)
            finally:
                await session.vault.close()
        finally:
            await trail.close()
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    except (TuringError, OSError, sqlite3.Error) as exc:
        raise CliError(str(exc)) from None


def _read_value(args: argparse.Namespace) -> str:
    if args.value is not None:
        print(ARGV_WARNING, file=sys.stderr)
        value = args.value
    elif args.value_stdin:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    elif sys.stdin.isatty():
        value = getpass.getpass(f"value for {args.path}: ")
        if getpass.getpass("again: ") != value:
            raise CliError("the two values differ; nothing was stored")
    else:
        raise CliError("no value: pass --value-stdin (and pipe the value in) or run in a terminal to be prompted", 2)
    if not value:
        raise CliError("the value is empty; nothing was stored")
    return value


async def _status(config: TuringConfig, data_dir: Path) -> int:
    vault = make_vault(config, data_dir)
    if not vault.db_path.exists():
        print(f"vault: {vault.db_path} (does not exist yet; it is created on first start or `secrets init`)")
        return 0
    await vault.open()
    try:
        reason = await unseal_from_config(vault, config, data_dir, auto_init=False)
        st = vault.status()
        for key, val in (
            ("vault", st.db_path),
            ("initialized", st.initialized),
            ("sealed with", st.unseal_method or "-"),
            ("kdf", st.kdf or "-"),
            ("configured unseal", config.unseal),
            ("unseals with this config", "yes" if reason is None else "no"),
            ("key term", st.key_term if st.key_term is not None else "-"),
        ):
            print(f"{key}: {val}")
        if reason is not None:
            print(f"how to unseal: {reason}")
    finally:
        await vault.close()
    return 0


class _Session:
    """One audited operator action on an open vault."""

    def __init__(self, config: TuringConfig, data_dir: Path, trail: AuditTrail, vault: Vault) -> None:
        self.config = config
        self.data_dir = data_dir
        self.trail = trail
        self.vault = vault

    async def audit(self, event_type: str, action: str, outcome: AuditOutcome, details: dict[str, JsonValue]) -> None:
        try:
            await self.trail.append(
                AuditEvent(
                    event_type=event_type,
                    actor=OPERATOR,
                    action=action,
                    outcome=outcome,
                    details={**details, "via": "cli"},
                )
            )
        except (AuditError, OSError, sqlite3.Error) as exc:
            raise CliError(f"'{action}' failed: its audit record could not be written: {exc}") from None

    async def unseal(self) -> None:
        passphrase = None
        if self.config.unseal == "passphrase" and not _env(self.config.passphrase_env) and sys.stdin.isatty():
            passphrase = getpass.getpass("vault passphrase: ")
        reason = await unseal_from_config(self.vault, self.config, self.data_dir, passphrase=passphrase)
        if reason is not None:
            raise CliError(f"the vault is sealed: {reason}")

    async def run(self, name: str, args: argparse.Namespace, value: str | None) -> int:
        if name == "init":
            return await self.init(args)
        await self.unseal()
        path = getattr(args, "path", None) or getattr(args, "prefix", "")
        details: dict[str, JsonValue] = {"path": path} if name != "list" else {"prefix": path}
        event = {"get": "secret.read", "versions": "secret.metadata", "set": "secret.write"}.get(name, f"secret.{name}")
        action = "put" if name == "set" else name
        try:
            outcome = await self.perform(name, args, value, details)
        except AccessDenied as exc:
            await self.audit(
                "secret.denied", action, AuditOutcome.DENIED, {"path": exc.path, "capability": exc.capability.value}
            )
            raise CliError(str(exc)) from None
        except SecretNotFoundError as exc:
            await self.audit(event, action, AuditOutcome.FAILURE, {**details, "error": "not_found"})
            raise CliError(str(exc)) from None
        except TuringError as exc:
            await self.audit(event, action, AuditOutcome.FAILURE, {**details, "error": type(exc).__name__})
            raise CliError(str(exc)) from None
        await self.audit(event, action, AuditOutcome.SUCCESS, outcome.details)
        for line in outcome.lines:
            print(line)
        return 0

    async def perform(
        self, name: str, args: argparse.Namespace, value: str | None, details: dict[str, JsonValue]
    ) -> _Outcome:
        v = self.vault
        if name == "set":
            assert value is not None
            version = await v.put(OPERATOR, args.path, value, args.cas)
            lines = [f"stored {args.path} version {version}"]
            lines.extend(await confirm_redaction(v))
            return _Outcome(lines, {**details, "version": version})
        if name == "get":
            secret = await v.get(OPERATOR, args.path, args.version)
            return _Outcome([secret.value.get_secret_value()], {**details, "version": secret.version})
        if name == "list":
            paths = await v.list(OPERATOR, args.prefix)
            return _Outcome(paths, {**details, "count": len(paths)})
        if name == "versions":
            meta = await v.versions(OPERATOR, args.path)
            lines = [f"{meta.path}: current version {meta.current_version}, keeping {meta.max_versions}"]
            for info in meta.versions:
                state = "destroyed" if info.destroyed else "deleted" if info.deletion_time else "live"
                lines.append(f"  v{info.version}  {info.created_time.isoformat(timespec='seconds')}  {state}")
            return _Outcome(lines, details)
        if name in ("delete", "undelete", "destroy"):
            changed = await getattr(v, name)(OPERATOR, args.path, args.versions)
            verb = {"delete": "deleted", "undelete": "restored", "destroy": "destroyed"}[name]
            text = ", ".join(map(str, changed)) or "none (already in that state)"
            return _Outcome([f"{verb} {args.path} versions: {text}"], {**details, "changed": list(changed)})
        if name == "rotate":
            v.policy.check(OPERATOR, Capability.WRITE, ROTATE_PATH)
            term = await v.rotate()
            return _Outcome([f"new key term {term}"], {"path": ROTATE_PATH, "key_term": term})
        if name == "rekey":
            passphrase, key_file = _new_credentials(args)
            v.policy.check(OPERATOR, Capability.WRITE, ROTATE_PATH)
            await v.rekey(new_passphrase=passphrase, new_key_file=key_file)
            return _Outcome(_rekey_hint(args), {"method": "passphrase" if passphrase else "key_file"})
        raise CliError(f"unknown action {name!r}", 2)

    async def init(self, args: argparse.Namespace) -> int:
        if self.vault.status().initialized:
            raise CliError(
                f"the vault {self.vault.db_path} is already initialized (use `secrets rekey` to change keys)"
            )
        if args.passphrase_env is None and args.key_file is None:
            if self.config.unseal == "key_file":
                args.key_file = self.config.key_file_path(self.data_dir)
            else:
                args.passphrase_env = self.config.passphrase_env
        passphrase, key_file = _new_credentials(args)
        await self.vault.initialize(passphrase=passphrase, key_file=key_file)
        method = "passphrase" if passphrase else "key_file"
        await self.audit("secret.init", "init", AuditOutcome.SUCCESS, {"method": method})
        print(f"initialized {self.vault.db_path} ({method}); the vault is ready")
        return 0


async def confirm_redaction(vault: Vault, timeout: float = REDACTION_CONFIRM_TIMEOUT) -> list[str]:
    """Wait until every running ecosystem watching this vault redacts the value just written.

    Turing notes in the vault which generation of values it has taught its redactor; this returns
    once every live one (a note under :data:`WATCHER_STALE` seconds old) has caught up, so from the
    moment ``secrets set`` returns, the new secret is scrubbed from everything a running ecosystem
    outputs. A running ecosystem that does not confirm in time is reported, not waited for forever.
    """
    target = await vault.generation()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        now = datetime.now(UTC)
        live = [(i, seen) for i, seen, beat in await vault.watchers() if (now - beat).total_seconds() < WATCHER_STALE]
        behind = [i for i, seen in live if seen < target]
        if not behind:
            return [f"a running ecosystem ({len(live)} process(es)) redacts it from now on"] if live else []
        if loop.time() >= give_up:
            return [
                f"warning: {len(behind)} running ecosystem process(es) did not confirm within {timeout:g}s that they "
                "redact the new value; restart them to be sure"
            ]
        await asyncio.sleep(REDACTION_POLL)


class _Outcome:
    def __init__(self, lines: list[str], details: dict[str, JsonValue]) -> None:
        self.lines = lines
        self.details = details


def _env(var: str) -> str | None:
    return os.environ.get(var) or None


def _new_credentials(args: argparse.Namespace) -> tuple[str | None, Path | None]:
    if args.key_file is not None:
        return None, Path(args.key_file).expanduser()
    if args.passphrase_env is not None:
        secret = _env(args.passphrase_env)
        if secret is None:
            raise CliError(f"environment variable {args.passphrase_env} is not set", 2)
    elif sys.stdin.isatty():
        secret = getpass.getpass("new passphrase: ")
        if getpass.getpass("again: ") != secret:
            raise CliError("the two passphrases differ; nothing was changed")
    else:
        raise CliError("give --passphrase-env VAR or --key-file PATH", 2)
    if len(secret) < MIN_PASSPHRASE_LEN:
        raise CliError(f"the passphrase must be at least {MIN_PASSPHRASE_LEN} characters", 2)
    return secret, None


def _rekey_hint(args: argparse.Namespace) -> list[str]:
    if args.key_file is not None:
        return [
            f"rekeyed: the vault now unseals with the key file {args.key_file}",
            f'set [turing] unseal = "key_file" and key_file = "{args.key_file}" before the next start',
        ]
    var = args.passphrase_env or "MAD_TURING_PASSPHRASE"
    return [
        "rekeyed: the vault now unseals with a passphrase; the old credentials no longer work",
        f'set [turing] unseal = "passphrase" and passphrase_env = "{var}" (and export {var}) before the next start',
    ]
