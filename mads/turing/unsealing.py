"""Open the vault and unseal it the way the configuration says — shared by the MAD and the CLI.

So that a newcomer is never locked out, key-file mode initialises a fresh vault with an
auto-created 0600 key file. Passphrase mode takes the passphrase from an environment
variable (never from config or the bus). Whatever fails leaves the vault sealed with a
message saying how to unseal it; no message ever contains the passphrase or key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mads.core.redaction import SecretRedactor
from mads.turing.barrier import KeyFileError, TuringError, UnsealError
from mads.turing.schemas import TuringConfig, vault_path
from mads.turing.store import Vault


def make_vault(config: TuringConfig, data_dir: Path, redactor: SecretRedactor | None = None) -> Vault:
    """The vault of ``data_dir``; every value it reads or writes is registered with ``redactor`` (the
    MAD's), or with a private one where nothing is scrubbed (the operator CLI)."""
    return Vault(
        vault_path(data_dir),
        policy=config.policy_model(),
        max_versions=config.max_versions,
        redactor=redactor if redactor is not None else SecretRedactor(),
    )


async def unseal_from_config(
    vault: Vault,
    config: TuringConfig,
    data_dir: Path,
    *,
    auto_init: bool = True,
    environ: Mapping[str, str] | None = None,
    passphrase: str | None = None,
) -> str | None:
    """Unseal an open vault; returns ``None`` on success, else why it stays sealed and how to fix it.

    ``passphrase`` (the CLI's prompt) is used when the environment variable is unset.
    """
    environ = os.environ if environ is None else environ
    initialized = vault.status().initialized
    if not initialized and not auto_init:
        return "the vault is not initialized: run `python ecosystem.py secrets init`"
    if config.unseal == "key_file":
        key_file = config.key_file_path(data_dir)
        try:
            if initialized:
                await vault.unseal(key_file=key_file)
            else:
                await vault.initialize(key_file=key_file)
        except (KeyFileError, UnsealError) as exc:
            return f"{exc}. Fix the key file, or set [turing] unseal/key_file to match how the vault was sealed"
        return None
    secret = environ.get(config.passphrase_env) or passphrase
    if not secret:
        return (
            f"the vault is sealed: set the environment variable {config.passphrase_env} to the vault "
            "passphrase and restart (passphrase mode)"
        )
    try:
        if initialized:
            await vault.unseal(passphrase=secret)
        else:
            await vault.initialize(passphrase=secret)
    except UnsealError as exc:
        return f"{exc} (from {config.passphrase_env}). Set the right passphrase and restart"
    except ValueError as exc:
        return f"{config.passphrase_env}: {exc}"
    except TuringError as exc:
        return str(exc)
    return None
