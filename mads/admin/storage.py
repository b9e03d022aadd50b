"""``python ecosystem.py storage …``, ``backup`` and ``restore``: the operator's tools for the stores.

Every store is a SQLite file under the data directory (``rogers/conversations.db``,
``mcnamara/audit.db``, ``gateway/auth.db``, ``fiedler/usage.db``, ``turing/vault.db``…).

    storage check               integrity_check of every file, every message's checksum, the messages the
                                audit trail says were acknowledged (count and hash per conversation), the chain
    backup [--to DIR]           a consistent online copy of every store (SQLite's backup API, while the
           [--every S --keep N] ecosystem runs), with the key files next to them and a MANIFEST.json
    restore BACKUP [--data-dir] verify a backup (hashes, quick_check) and put it in place of the data
                                directory; the current one is moved aside, never deleted

A backup holds the install's keys (the audit HMAC key, the token pepper, Turing's root key when
it is a file): it is as secret as the data directory, and is written 0700/0600 like it.

Exit codes: 0 ok, 1 damage found or the operation failed (one line on stderr), 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mads.admin.cli import AddCommon, CliError, add_command, data_dir_of, exit_code, settings_from
from mads.core import ledger, names
from mads.core.audit_trail import AuditError, AuditTrail
from mads.core.sqlite import backup_file, check_file, describe_bytes
from mads.rogers.store import damaged_messages, ledger_differences

MANIFEST = "MANIFEST.json"
SQLITE_HEADER = b"SQLite format 3\x00"
_SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal", ".partial")


def register(subparsers: Any, add_common: AddCommon) -> None:
    action = add_command(
        subparsers,
        add_common,
        "storage",
        summary="check, back up and restore the stores (check/backup/restore)",
        description="Check every store for damage, take a consistent online backup, or restore one.",
        handler=run,
    )
    action("check", "integrity_check every store, verify every message checksum and the audit chain")
    _backup_options(action("backup", "take a consistent online copy of every store"))
    _restore_options(action("restore", "verify a backup and put it in place of the data directory"))
    for name, options, text in (
        ("backup", _backup_options, "take a consistent online copy of every store (same as `storage backup`)"),
        ("restore", _restore_options, "put a backup in place of the data directory (same as `storage restore`)"),
    ):
        parser = subparsers.add_parser(name, help=text, description=text)
        add_common(parser)
        options(parser)
        parser.set_defaults(handler=run, storage_action=name)


def _backup_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", type=Path, help="where backups go (default: <data-dir>-backups next to it)")
    parser.add_argument("--every", type=float, metavar="SECONDS", help="keep running, one backup every SECONDS")
    parser.add_argument("--keep", type=int, default=7, help="with --every: how many backups to keep (default 7)")


def _restore_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup", type=Path, help="a backup directory (holding MANIFEST.json)")


def run(args: argparse.Namespace) -> int:
    return exit_code(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(settings_from(args))
    if args.storage_action == "check":
        if not data_dir.is_dir():
            raise CliError(f"no data directory at {data_dir}")
        return asyncio.run(check_data_dir(data_dir))
    if args.storage_action == "backup":
        root = args.to.expanduser().resolve() if args.to else default_backup_root(data_dir)
        if args.every is None:
            made = backup_data_dir(data_dir, root)
            print(f"backup written to {made}")
            return 0
        if args.every <= 0 or args.keep < 1:
            raise CliError("--every must be > 0 and --keep >= 1", code=2)
        return _backup_on_schedule(data_dir, root, args.every, args.keep)
    restore_backup(args.backup.expanduser().resolve(), data_dir)
    return 0


def default_backup_root(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}-backups"


# ---- check -----------------------------------------------------------------------------------


def store_files(data_dir: Path) -> list[Path]:
    """Every SQLite database under ``data_dir`` (by its header), sorted."""
    found = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and not path.name.endswith(_SKIPPED_SUFFIXES):
            with path.open("rb") as fh:
                if fh.read(16) == SQLITE_HEADER:
                    found.append(path)
    return found


async def check_data_dir(data_dir: Path) -> int:
    """Print one line per store; exit 1 if any is damaged."""
    files = await asyncio.to_thread(store_files, data_dir)
    if not files:
        raise CliError(f"no stores under {data_dir}")
    damaged = 0
    for path in files:
        name = str(path.relative_to(data_dir))
        problems = await asyncio.to_thread(check_file, path)
        notes = [f"{describe_bytes(path.stat().st_size)}"]
        if not problems and path == data_dir / names.ROGERS / "conversations.db":
            checked, bad = await asyncio.to_thread(damaged_messages, path)
            notes.append(f"{checked} message checksums")
            problems += [f"message {b} fails its checksum" if not b.startswith("rows") else b for b in bad]
        if not problems and path == data_dir / names.ROGERS / "conversations.db":
            problems += await _ledger(data_dir, path, notes)
        if not problems and path.name == "audit.db" and path.parent.name == names.MCNAMARA:
            problems += await _audit_chain(path, notes)
        if problems:
            damaged += 1
            shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
            print(f"DAMAGED {name} ({path}): {shown}", file=sys.stderr)
        else:
            print(f"ok      {name} ({', '.join(notes)})")
    if damaged:
        print(f"{damaged} of {len(files)} stores damaged: restore them from a backup (ecosystem.py restore)")
        return 1
    print(f"all {len(files)} stores intact")
    return 0


async def _ledger(data_dir: Path, conversations_db: Path, notes: list[str]) -> list[str]:
    """What the audit trail says Rogers acknowledged (``storage.ledger``), compared with the file."""
    audit_db = data_dir / names.MCNAMARA / "audit.db"
    if not await asyncio.to_thread(audit_db.is_file):
        notes.append("no audit trail to compare acknowledged messages with")
        return []
    entries: dict[str, tuple[int, str]] = {}
    try:
        async with AuditTrail(audit_db) as trail:
            since = 0
            while records := await trail.query(since, [ledger.LEDGER_EVENT_TYPE], limit=10_000):
                for record in records:
                    conversations = record.details.get("conversations")
                    if isinstance(conversations, dict):
                        for cid, entry in conversations.items():
                            if isinstance(entry, dict):
                                entries[cid] = (int(str(entry.get("count", 0))), str(entry.get("hash", "")))
                since = records[-1].seq
    except AuditError as exc:
        return [f"the acknowledged ledger cannot be read from {audit_db}: {exc}"]
    missing, changed = await asyncio.to_thread(ledger_differences, conversations_db, entries)
    problems = [f"conversation {cid}: {n} acknowledged messages missing" for cid, n in sorted(missing.items())]
    problems += [f"conversation {cid}: differs from what was acknowledged" for cid in changed]
    if not problems:
        notes.append(f"{len(entries)} conversations match what was acknowledged")
    return problems


async def _audit_chain(path: Path, notes: list[str]) -> list[str]:
    try:
        async with AuditTrail(path) as trail:
            report = await trail.verify()
    except AuditError as exc:
        return [f"audit trail cannot be read: {exc}"]
    if not report.ok:
        return [f"audit chain broken at record {report.first_bad_seq}: {report.reason}"]
    notes.append(f"audit chain of {report.records_checked} records verified")
    return []


# ---- backup ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_data_dir(data_dir: Path, root: Path) -> Path:
    """Copy every store (online, consistent per file) and every other file into ``root/<UTC time>/``.

    ``MANIFEST.json`` is written last, after every file is fsynced: a backup directory without it
    is incomplete and ``restore`` refuses it.
    """
    if not data_dir.is_dir():
        raise CliError(f"no data directory at {data_dir}")
    if root == data_dir or data_dir in root.parents:
        raise CliError(f"backups must go outside the data directory {data_dir}, not {root}", code=2)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = root / stamp
    target.mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    entries = []
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file() or path.name.endswith(_SKIPPED_SUFFIXES):
            continue
        relative = path.relative_to(data_dir)
        copy = target / relative
        copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with path.open("rb") as fh:
            is_db = fh.read(16) == SQLITE_HEADER
        if is_db:
            backup_file(path, copy)
            problems = check_file(copy, quick=True)
            if problems:
                raise CliError(f"the copy of {relative} fails quick_check: {'; '.join(problems[:3])}")
        else:
            shutil.copyfile(path, copy)
            copy.chmod(0o600)
            fd = os.open(copy, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        entries.append(
            {
                "path": str(relative),
                "kind": "sqlite" if is_db else "file",
                "bytes": copy.stat().st_size,
                "sha256": _sha256(copy),
            }
        )
    manifest = {"created_at": datetime.now(UTC).isoformat(), "source": str(data_dir), "files": entries}
    partial = target / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    partial.chmod(0o600)
    os.replace(partial, target / MANIFEST)
    for directory in {target, *(target / e["path"] for e in entries)}:
        _fsync_dir(directory if directory.is_dir() else directory.parent)
    return target


def _backup_on_schedule(data_dir: Path, root: Path, every: float, keep: int) -> int:
    """Back up every ``every`` seconds until interrupted, keeping the newest ``keep`` complete backups."""
    while True:
        made = backup_data_dir(data_dir, root)
        print(f"backup written to {made}", flush=True)
        complete = sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())
        for old in complete[:-keep]:
            shutil.rmtree(old)
        time.sleep(every)


# ---- restore ---------------------------------------------------------------------------------


def verify_backup(backup: Path) -> list[dict[str, Any]]:
    """The manifest's entries, once every file matches its hash and every store passes quick_check."""
    manifest_path = backup / MANIFEST
    if not manifest_path.is_file():
        raise CliError(f"{backup} is not a complete backup (no {MANIFEST})")
    entries: list[dict[str, Any]] = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    for entry in entries:
        path = backup / entry["path"]
        if not path.is_file() or _sha256(path) != entry["sha256"]:
            raise CliError(f"backup file {path} is missing or does not match its hash in {MANIFEST}")
        if entry["kind"] == "sqlite":
            problems = check_file(path, quick=True)
            if problems:
                raise CliError(f"backup store {path} fails quick_check: {'; '.join(problems[:3])}")
    return entries


def restore_backup(backup: Path, data_dir: Path) -> Path | None:
    """Verify ``backup`` and put it in place of ``data_dir`` (stop the ecosystem first).

    The current data directory, if any, is moved aside to ``<data-dir>.before-restore-<time>``
    (returned), never deleted.
    """
    entries = verify_backup(backup)
    aside: Path | None = None
    if data_dir.exists() and any(data_dir.iterdir()):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = data_dir.with_name(f"{data_dir.name}.before-restore-{stamp}")
        data_dir.rename(aside)
        print(f"the data directory was moved aside to {aside}")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for entry in entries:
        target = data_dir / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(backup / entry["path"], target)
        target.chmod(0o600)
    print(f"restored {len(entries)} files from {backup} into {data_dir}")
    return aside
