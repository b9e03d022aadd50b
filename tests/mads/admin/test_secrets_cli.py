"""``python ecosystem.py secrets …`` as an operator runs it: real processes, real files."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mads.core.audit_trail import AuditRecord, AuditTrail

pytestmark = pytest.mark.slow  # starts real processes

ROOT = Path(__file__).resolve().parents[3]
PASSPHRASE_VAR = "TURING_CLI_TEST_PASSPHRASE"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAD_") and k != PASSPHRASE_VAR}
    env.update(extra)
    return env


def secrets(
    data_dir: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "ecosystem.py"), "secrets", *args, "--data-dir", str(data_dir)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        cwd=data_dir.parent,
        env=env or clean_env(),
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def audit_records(data_dir: Path) -> list[AuditRecord]:
    async def read() -> list[AuditRecord]:
        async with AuditTrail(data_dir / "mcnamara" / "audit.db") as trail:
            assert (await trail.verify()).ok
            return await trail.query()

    return asyncio.run(read())


def files_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_set_get_list_versions_status(data_dir: Path) -> None:
    value = f"sk-cli-{uuid.uuid4().hex}"
    stored = secrets(data_dir, "set", "providers/openai", "--value-stdin", stdin=value + "\n")
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip() == "stored providers/openai version 1"
    assert (data_dir / "turing" / "root.key").stat().st_mode & 0o777 == 0o600

    got = secrets(data_dir, "get", "providers/openai")
    assert (got.returncode, got.stdout) == (0, value + "\n")
    assert (
        secrets(data_dir, "set", "providers/anthropic", "--value-stdin", stdin="another-secret-value").returncode == 0
    )
    listed = secrets(data_dir, "list", "providers/")
    assert listed.stdout.split() == ["providers/anthropic", "providers/openai"]
    versions = secrets(data_dir, "versions", "providers/openai")
    assert versions.returncode == 0 and "current version 1" in versions.stdout and "v1" in versions.stdout
    status = secrets(data_dir, "status")
    assert status.returncode == 0
    assert "sealed with: key_file" in status.stdout and "unseals with this config: yes" in status.stdout

    assert secrets(data_dir, "set", "providers/openai", "--value-stdin", stdin="second-value-xyz").returncode == 0
    assert secrets(data_dir, "delete", "providers/openai").stdout.strip() == "deleted providers/openai versions: 2"
    deleted = secrets(data_dir, "get", "providers/openai")
    assert deleted.returncode == 1 and "deleted" in deleted.stderr
    assert secrets(data_dir, "undelete", "providers/openai", "--versions", "2").returncode == 0
    assert secrets(data_dir, "get", "providers/openai").stdout == "second-value-xyz\n"
    assert secrets(data_dir, "get", "providers/openai", "--version", "1").stdout == value + "\n"
    assert secrets(data_dir, "destroy", "providers/openai", "--versions", "1").returncode == 0
    gone = secrets(data_dir, "get", "providers/openai", "--version", "1")
    assert gone.returncode == 1 and "destroyed" in gone.stderr

    records = audit_records(data_dir)
    assert {r.actor for r in records} == {"operator"}
    assert [(r.event_type, r.action, r.outcome.value) for r in records[:2]] == [
        ("secret.write", "put", "success"),
        ("secret.read", "get", "success"),
    ]
    assert records[1].details == {"path": "providers/openai", "version": 1, "via": "cli"}
    assert ("secret.read", "failure") in {(r.event_type, r.outcome.value) for r in records}
    assert value.encode() not in files_bytes(data_dir / "mcnamara")
    assert value.encode() not in files_bytes(data_dir / "turing")


def test_rotate_then_rekey_to_a_passphrase(data_dir: Path) -> None:
    value = f"sk-cli-{uuid.uuid4().hex}"
    assert secrets(data_dir, "set", "tokens/ci", "--value-stdin", stdin=value).returncode == 0
    rotated = secrets(data_dir, "rotate")
    assert (rotated.returncode, rotated.stdout.strip()) == (0, "new key term 2")
    assert secrets(data_dir, "set", "tokens/ci", "--value-stdin", stdin="after-rotation-value").returncode == 0
    assert secrets(data_dir, "get", "tokens/ci", "--version", "1").stdout == value + "\n"

    passphrase = "a long operator passphrase"
    with_pass = clean_env(**{PASSPHRASE_VAR: passphrase})
    rekeyed = secrets(data_dir, "rekey", "--passphrase-env", PASSPHRASE_VAR, env=with_pass)
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert f'passphrase_env = "{PASSPHRASE_VAR}"' in rekeyed.stdout

    # the old key file (the configured default) no longer unseals
    old = secrets(data_dir, "get", "tokens/ci")
    assert old.returncode == 1 and old.stdout == ""
    assert "sealed" in old.stderr and "passphrase" in old.stderr

    configured = clean_env(
        **{PASSPHRASE_VAR: passphrase, "MAD_TURING__UNSEAL": "passphrase", "MAD_TURING__PASSPHRASE_ENV": PASSPHRASE_VAR}
    )
    assert secrets(data_dir, "get", "tokens/ci", "--version", "1", env=configured).stdout == value + "\n"
    status = secrets(data_dir, "status", env=configured)
    assert "sealed with: passphrase" in status.stdout and "key term: 2" in status.stdout
    wrong = clean_env(
        **{
            PASSPHRASE_VAR: "not the passphrase!",
            "MAD_TURING__UNSEAL": "passphrase",
            "MAD_TURING__PASSPHRASE_ENV": PASSPHRASE_VAR,
        }
    )
    refused = secrets(data_dir, "get", "tokens/ci", env=wrong)
    assert refused.returncode == 1 and "wrong passphrase" in refused.stderr
    for result in (rekeyed, old, refused):
        assert passphrase not in result.stdout + result.stderr
    assert [r.event_type for r in audit_records(data_dir) if r.event_type in ("secret.rotate", "secret.rekey")] == [
        "secret.rotate",
        "secret.rekey",
    ]


def test_errors_are_clear_and_exit_non_zero(data_dir: Path) -> None:
    value = f"sk-cli-{uuid.uuid4().hex}"
    missing = secrets(data_dir, "get", "providers/none")
    assert missing.returncode == 1 and "no secret at 'providers/none'" in missing.stderr

    no_value = secrets(data_dir, "set", "providers/openai")
    assert no_value.returncode == 2 and "--value-stdin" in no_value.stderr

    bad_path = secrets(data_dir, "set", "../escape", "--value-stdin", stdin=value)
    assert bad_path.returncode == 2 and "path '../escape'" in bad_path.stderr

    bad_versions = secrets(data_dir, "destroy", "providers/openai", "--versions", "one")
    assert bad_versions.returncode == 2 and "--versions" in bad_versions.stderr

    bad_config = secrets(data_dir, "list", env=clean_env(MAD_TURING__UNSEAL="telepathy"))
    assert bad_config.returncode == 2 and "turing.unseal" in bad_config.stderr

    cas = secrets(data_dir, "set", "providers/openai", "--value-stdin", "--cas", "3", stdin=value)
    assert cas.returncode == 1 and "cas=3" in cas.stderr

    argv = secrets(data_dir, "set", "providers/openai", "--value", value)
    assert argv.returncode == 0 and "process list" in argv.stderr

    again = secrets(data_dir, "init")
    assert again.returncode == 1 and "already initialized" in again.stderr

    sealed = secrets(data_dir, "list", env=clean_env(MAD_TURING__UNSEAL="passphrase"))
    assert sealed.returncode == 1 and "MAD_TURING_PASSPHRASE" in sealed.stderr

    for result in (missing, no_value, bad_path, cas, argv, again, sealed):
        assert value not in result.stderr.replace("--value", "")  # argv echo aside, never in messages
    assert value.encode() not in files_bytes(data_dir / "mcnamara")


def test_no_audit_trail_means_no_operation(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "mcnamara").write_text("not a directory")
    refused = secrets(data_dir, "set", "providers/openai", "--value-stdin", stdin="would-be-secret")
    assert refused.returncode == 1 and "audit trail unavailable, nothing was done" in refused.stderr
    assert not (data_dir / "turing" / "vault.db").exists()


def test_explicit_init_with_a_passphrase(data_dir: Path) -> None:
    env = clean_env(**{PASSPHRASE_VAR: "short"})
    short = secrets(data_dir, "init", "--passphrase-env", PASSPHRASE_VAR, env=env)
    assert short.returncode == 2 and "at least 12" in short.stderr
    env = clean_env(**{PASSPHRASE_VAR: "a perfectly fine passphrase"})
    init = secrets(data_dir, "init", "--passphrase-env", PASSPHRASE_VAR, env=env)
    assert init.returncode == 0 and "(passphrase)" in init.stdout
    assert not (data_dir / "turing" / "root.key").exists()
    configured = {**env, "MAD_TURING__UNSEAL": "passphrase", "MAD_TURING__PASSPHRASE_ENV": PASSPHRASE_VAR}
    assert secrets(data_dir, "set", "a/b", "--value-stdin", stdin="value-for-a-b", env=configured).returncode == 0
    assert secrets(data_dir, "get", "a/b", env=configured).stdout == "value-for-a-b\n"
    assert audit_records(data_dir)[0].event_type == "secret.init"
