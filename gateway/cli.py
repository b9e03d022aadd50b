"""``python ecosystem.py tokens …``: the operator's access tokens for the gateway.

    tokens create NAME [--role user|operator] [--expires-days N]   print a new token once (stdout)
    tokens list [--json]                                           every token, never a secret
    tokens revoke ID|NAME                                          revoke one token, or all of NAME's

Works on ``<data_dir>/gateway/auth.db`` directly, so it works whether or not the
ecosystem is running (a running gateway sees a revocation on the next request).
Creating and revoking are written to McNamara's audit trail first-hand; if the
record cannot be written the action is undone and the command fails.

Exit codes: 0 ok, 1 refused (unknown token, audit unavailable), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from gateway.auth.store import AuthStore, AuthStoreError, TokenInfo, auth_dir
from mads.admin.cli import AddCommon, CliError, add_command, audit_db_path, data_dir_of, exit_code, settings_from

MAX_EXPIRES_DAYS = 3650


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None
    if not 1 <= value <= MAX_EXPIRES_DAYS:
        raise argparse.ArgumentTypeError(f"expected 1..{MAX_EXPIRES_DAYS} days, got {value}")
    return value


def register(subparsers: Any, add_common: AddCommon) -> None:
    """Add ``tokens`` and its actions to the ecosystem command line."""
    action = add_command(
        subparsers,
        add_common,
        "tokens",
        summary="create, list and revoke access tokens for the gateway",
        description="Manage the bearer tokens people and scripts use to reach the gateway.",
        handler=run,
    )
    p = action("create", "create a token for NAME and print it once")
    p.add_argument("name", metavar="NAME", help="the principal (letters, digits, '_' or '-'; at most 64)")
    p.add_argument("--role", choices=["user", "operator"], default="user", help="default: user")
    p.add_argument("--expires-days", type=_days, default=None, help="expire after N days (default: never)")
    p = action("list", "list tokens (no secrets)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = action("revoke", "revoke a token by id, or every token of a principal by name")
    p.add_argument("ident", metavar="ID|NAME")


def run(args: argparse.Namespace) -> int:
    """Entry point for every ``tokens`` action: never a traceback for an expected error."""
    return exit_code(lambda: asyncio.run(_dispatch(args, data_dir_of(settings_from(args)))))


async def _audit(data_dir: Path, event_type: str, action: str, details: dict[str, JsonValue]) -> None:
    """Append one record to McNamara's trail directly (the ecosystem may not be running)."""
    from mads.core.audit_trail import AuditError, AuditEvent, AuditOutcome, AuditTrail

    trail = AuditTrail(audit_db_path(data_dir))
    try:
        await trail.open()
        await trail.append(
            AuditEvent(
                event_type=event_type,
                actor=f"operator.{getpass.getuser()}"[:200],
                action=action,
                outcome=AuditOutcome.SUCCESS,
                details={**details, "via": "cli"},
            )
        )
    except (AuditError, OSError) as exc:
        raise CliError(f"the audit trail cannot record this, nothing was done: {exc}") from None
    finally:
        await trail.close()


async def _dispatch(args: argparse.Namespace, data_dir: Path) -> int:
    store = AuthStore(auth_dir(data_dir))
    try:
        await store.open()
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot open the auth store: {exc}") from None
    try:
        if args.tokens_action == "create":
            return await _create(store, data_dir, args.name, args.role, args.expires_days)
        if args.tokens_action == "list":
            return _print(await store.list(), as_json=args.json)
        return await _revoke(store, data_dir, args.ident)
    except AuthStoreError as exc:
        raise CliError(str(exc), code=2 if args.tokens_action == "create" else 1) from None
    finally:
        await store.close()


async def _create(store: AuthStore, data_dir: Path, name: str, role: str, days: int | None) -> int:
    issued = await store.create(name, "operator" if role == "operator" else "user", days)
    info = issued.info
    expires = info.expires_at.isoformat() if info.expires_at else None
    try:
        await _audit(
            data_dir,
            "auth.token_create",
            "token_create",
            {"token_id": info.id, "principal": name, "role": role, "expires_at": expires},
        )
    except CliError:
        await store.revoke(info.id)
        raise
    print(issued.token, flush=True)
    print(
        f"token {info.id} for {name} ({role}, expires {expires or 'never'}) — shown once; store it now",
        file=sys.stderr,
    )
    return 0


async def _revoke(store: AuthStore, data_dir: Path, ident: str) -> int:
    revoked = await store.revoke(ident)
    await _audit(
        data_dir,
        "auth.token_revoke",
        "token_revoke",
        {"token_ids": [t.id for t in revoked], "principal": revoked[0].principal},
    )
    for token in revoked:
        print(f"revoked {token.id} ({token.principal})")
    return 0


def _print(tokens: list[TokenInfo], *, as_json: bool) -> int:
    if as_json:
        for token in tokens:
            print(token.model_dump_json())
        return 0
    if not tokens:
        print("no tokens (start the ecosystem once, or run: tokens create NAME)")
        return 0
    header = ("ID", "PRINCIPAL", "ROLE", "STATUS", "CREATED", "EXPIRES", "LAST USED")
    rows = [header] + [
        (
            t.id,
            t.principal,
            t.role,
            t.status,
            t.created_at.isoformat(timespec="seconds"),
            t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never",
            t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "-",
        )
        for t in tokens
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


__all__ = ["register", "run"]
