"""Turing: the secret keeper MAD — the vault behind typed bus tools, every access audited.

The principal is whoever sent the request (a MAD name, or ``user.<name>`` from the
gateway); the deny-by-default policy decides. Every access and every denial is recorded
through McNamara's ``record`` tool before Turing answers, and when that record cannot be
written the request fails (``audit_unavailable``) — a read then returns no value.
Values travel only in data parts typed ``SECRET_MEDIA_TYPE`` so wiretap consumers in any
process can strip them. Turing takes no prose: secrets must never reach an LLM prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

from pydantic import JsonValue

from bus.base import BusError
from bus.envelope import SECRET_MEDIA_TYPE, DataPart
from mads.core import authority, names
from mads.core.authority import PERSON_PREFIX
from mads.core.base import MAD, MadContext, RemoteError, ToolFailure
from mads.core.tools import Call, tool
from mads.turing.barrier import IntegrityError, SealedError, TuringError
from mads.turing.policy import AccessDenied, Capability
from mads.turing.schemas import (
    OPERATOR,
    ROTATE_PATH,
    ChangedResult,
    DeleteArgs,
    GetArgs,
    ListArgs,
    ListResult,
    NoArgs,
    PathArgs,
    PutArgs,
    PutResult,
    RotateResult,
    SecretReply,
    StatusResult,
    TuringConfig,
    VersionInfo,
    VersionsArgs,
    VersionsResult,
)
from mads.turing.store import CASMismatchError, SecretNotFoundError, Vault
from mads.turing.unsealing import make_vault, unseal_from_config

log = logging.getLogger(__name__)

T = TypeVar("T")

AUDIT_MAD = names.MCNAMARA
WATCH_HEARTBEAT = 2.0
"""Seconds between two notes in the vault that this process still watches it (the CLI trusts notes under 10 s)."""
AUDIT_TOOL = "record"


class Turing(MAD[TuringConfig]):
    name = names.TURING
    description = "Keeps secrets (provider API keys, tokens) encrypted, versioned and access-controlled."
    config_model: ClassVar[type[TuringConfig]] = TuringConfig
    accepts_prose = False
    secret_tools: ClassVar[frozenset[str]] = frozenset({"get"})

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        super().__init__(ctx, instance=instance)
        self._vault: Vault | None = None
        self._sealed_reason: str | None = "the vault is not open"
        self._watch: asyncio.Task[None] | None = None
        self._instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        """This process's name in the vault's ``watchers`` table (the CLI waits for it to redact a new value)."""

    # ---- lifecycle --------------------------------------------------------------------

    async def on_start(self) -> None:
        self._vault = make_vault(self.config, self.ctx.data_dir, self.redactor)
        await self._vault.open()
        self._sealed_reason = await unseal_from_config(self._vault, self.config, self.ctx.data_dir)
        if self._sealed_reason is not None:
            log.warning("turing started SEALED: %s", self._sealed_reason)
        else:
            known = await self._vault.register_all_with_redactor()
            log.info(
                "turing unsealed (%s mode); %d stored values registered with the redactor", self.config.unseal, known
            )
            self._watch = asyncio.create_task(self._watch_vault(self._vault), name="turing:watch-vault")

    async def on_stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
            if self._vault is not None:
                with contextlib.suppress(TuringError, sqlite3.Error):
                    await self._vault.forget_watcher(self._instance)
        if self._vault is not None:
            await self._vault.close()
            self._vault = None

    async def _watch_vault(self, vault: Vault) -> None:
        """Redaction is live: a value another process (``ecosystem.py secrets set``) writes into the vault
        while this one runs is registered with this process's redactor within ``watch_interval``, and
        this process says so in the vault (``watchers``), which is what the CLI waits for before returning."""
        seen = await vault.generation()
        await vault.note_watching(self._instance, seen)
        beat = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.watch_interval)
            try:
                now = await vault.generation()
                if now > seen:
                    await vault.register_all_with_redactor()
                    seen = now
                    await vault.note_watching(self._instance, seen)
                    beat = loop.time()
                elif loop.time() - beat >= WATCH_HEARTBEAT:
                    await vault.note_watching(self._instance, seen)
                    beat = loop.time()
            except (TuringError, sqlite3.Error) as exc:
                log.warning("turing could not look for new secret values: %s", type(exc).__name__)

    def result_part(self, tool: str, value: JsonValue) -> DataPart:
        if tool in self.secret_tools:
            return DataPart(media_type=SECRET_MEDIA_TYPE, value=value)
        return super().result_part(tool, value)

    # ---- tools ------------------------------------------------------------------------

    @tool("Read a secret (the latest version, or `version`). Needs 'read' on the path.")
    async def get(self, args: GetArgs, call: Call) -> SecretReply:
        vault, who = self._unsealed("get"), self._principal(call)
        secret = await self._guard(
            "get", call, {"path": args.path, "version": args.version}, lambda: vault.get(who, args.path, args.version)
        )
        await self._audit("secret.read", who, "get", "success", {"path": args.path, "version": secret.version})
        return SecretReply(path=secret.path, version=secret.version, value=secret.value.get_secret_value())

    @tool("Write a new version of a secret; `cas` guards against lost updates. Needs 'write'.")
    async def put(self, args: PutArgs, call: Call) -> PutResult:
        vault, who = self._unsealed("put"), self._principal(call)
        version = await self._guard(
            "put", call, {"path": args.path, "cas": args.cas}, lambda: vault.put(who, args.path, args.value, args.cas)
        )
        await self._audit("secret.write", who, "put", "success", {"path": args.path, "version": version})
        return PutResult(path=args.path, version=version)

    @tool("List secret paths under a prefix (only those the caller may list). Needs 'list'.", name="list")
    async def list_paths(self, args: ListArgs, call: Call) -> ListResult:
        vault, who = self._unsealed("list"), self._principal(call)
        paths = await self._guard("list", call, {"prefix": args.prefix}, lambda: vault.list(who, args.prefix))
        subjects = self._subjects(call)
        paths = [p for p in paths if all(vault.policy.allows(s, Capability.LIST, p) for s in subjects)]
        await self._audit("secret.list", who, "list", "success", {"prefix": args.prefix, "count": len(paths)})
        return ListResult(prefix=args.prefix, paths=paths)

    @tool("Metadata and the state of every kept version of a secret (no values). Needs 'read'.")
    async def versions(self, args: PathArgs, call: Call) -> VersionsResult:
        vault, who = self._unsealed("versions"), self._principal(call)
        meta = await self._guard("versions", call, {"path": args.path}, lambda: vault.versions(who, args.path))
        await self._audit("secret.metadata", who, "versions", "success", {"path": args.path})
        return VersionsResult(
            **meta.model_dump(exclude={"versions"}),
            versions=[VersionInfo(**v.model_dump()) for v in meta.versions],
        )

    @tool("Soft-delete versions (default: the latest); undelete can restore them. Needs 'delete'.")
    async def delete(self, args: DeleteArgs, call: Call) -> ChangedResult:
        vault, who = self._unsealed("delete"), self._principal(call)
        details: dict[str, JsonValue] = {"path": args.path, "versions": list(args.versions or [])}
        changed = await self._guard("delete", call, details, lambda: vault.delete(who, args.path, args.versions))
        await self._audit("secret.delete", who, "delete", "success", {**details, "changed": list(changed)})
        return ChangedResult(path=args.path, changed=changed)

    @tool("Restore soft-deleted versions. Needs 'delete'.")
    async def undelete(self, args: VersionsArgs, call: Call) -> ChangedResult:
        vault, who = self._unsealed("undelete"), self._principal(call)
        details: dict[str, JsonValue] = {"path": args.path, "versions": list(args.versions)}
        changed = await self._guard("undelete", call, details, lambda: vault.undelete(who, args.path, args.versions))
        await self._audit("secret.undelete", who, "undelete", "success", {**details, "changed": list(changed)})
        return ChangedResult(path=args.path, changed=changed)

    @tool("Erase versions permanently (they cannot be restored). Operators only; needs 'delete'.", operator=True)
    async def destroy(self, args: VersionsArgs, call: Call) -> ChangedResult:
        vault, who = self._unsealed("destroy"), self._principal(call)
        details: dict[str, JsonValue] = {"path": args.path, "versions": list(args.versions)}
        changed = await self._guard("destroy", call, details, lambda: vault.destroy(who, args.path, args.versions))
        await self._audit("secret.destroy", who, "destroy", "success", {**details, "changed": list(changed)})
        return ChangedResult(path=args.path, changed=changed)

    @tool("Seal status: sealed, initialized, key term, and how to unseal. Never returns a secret.")
    async def status(self, args: NoArgs) -> StatusResult:
        if self._vault is None:
            return StatusResult(
                sealed=True,
                initialized=False,
                key_term=None,
                unseal_method=None,
                configured_unseal=self.config.unseal,
                kdf=None,
                how_to_unseal=self._sealed_reason,
            )
        st = self._vault.status()
        return StatusResult(
            sealed=st.sealed,
            initialized=st.initialized,
            key_term=st.key_term,
            unseal_method=st.unseal_method,
            configured_unseal=self.config.unseal,
            kdf=st.kdf,
            how_to_unseal=self._sealed_reason if st.sealed else None,
        )

    @tool(
        f"Start a new data-key term for new writes; old versions stay readable. Operators only; needs 'write' on "
        f"{ROTATE_PATH}.",
        operator=True,
    )
    async def rotate(self, args: NoArgs, call: Call) -> RotateResult:
        vault, who = self._unsealed("rotate"), self._principal(call)
        details: dict[str, JsonValue] = {"path": ROTATE_PATH}

        async def checked_rotate() -> int:
            vault.policy.check(who, Capability.WRITE, ROTATE_PATH)
            return await vault.rotate()

        term = await self._guard("rotate", call, details, checked_rotate)
        await self._audit("secret.rotate", who, "rotate", "success", {**details, "key_term": term})
        return RotateResult(key_term=term)

    # ---- helpers ----------------------------------------------------------------------

    def _unsealed(self, operation: str) -> Vault:
        if self._vault is None or self._vault.sealed:
            raise ToolFailure("sealed", f"turing is sealed, so '{operation}' cannot run: {self._sealed_reason}")
        return self._vault

    @staticmethod
    def _subjects(call: Call) -> list[str]:
        """Who must be allowed: the MAD that sent the request and the person it serves, both.

        A MAD relaying a person's command (Grace) can do no more than that person; a MAD working
        as the system (Fiedler reading its provider key) is judged alone. Policy subjects are MAD
        names and ``user:<name>`` / ``operator:<name>`` for people.
        """
        subjects = []
        if not call.sender.startswith(PERSON_PREFIX):
            subjects.append(names.mad_of(call.sender))
        if call.principal.is_person:
            subjects.append(str(call.principal))
        return subjects

    @classmethod
    def _principal(cls, call: Call) -> str:
        """The subject the vault operation runs as (and the audit names): the person if there is one."""
        subjects = cls._subjects(call)
        return subjects[-1] if subjects else str(call.principal)

    async def _guard(self, action: str, call: Call, details: dict[str, JsonValue], op: Callable[[], Awaitable[T]]) -> T:
        """Run one vault operation for ``call``, turning vault errors into typed failures (audited)."""
        who = self._principal(call)
        target = str(details.get("path") or details.get("prefix") or "")
        try:
            vault = self._unsealed(action)
            for subject in self._subjects(call) or [who]:
                if subject == OPERATOR:
                    # The operator acts through the CLI on the vault file; on the bus the name is a forgery.
                    raise AccessDenied(subject, _CAPABILITY[action], target)
                if action != "list":  # a list is filtered path by path, for every subject (see list_paths)
                    vault.policy.check(subject, _CAPABILITY[action], target)
            return await op()
        except AccessDenied as exc:
            await self._audit_denial(action, exc)
            raise ToolFailure("access_denied", str(exc)) from None
        except SealedError as exc:
            raise ToolFailure("sealed", f"{exc}: {self._sealed_reason}") from None
        except SecretNotFoundError as exc:
            await self._audit(_event_for(action), who, action, "failure", {**details, "error": "not_found"})
            raise ToolFailure("not_found", str(exc)) from None
        except CASMismatchError as exc:
            await self._audit(_event_for(action), who, action, "failure", {**details, "error": "cas_mismatch"})
            raise ToolFailure("cas_mismatch", str(exc)) from None
        except IntegrityError as exc:
            log.error("turing integrity failure on %s: %s", action, exc)
            raise ToolFailure("integrity_error", self.redactor.redact(str(exc))) from None
        except ValueError as exc:
            raise ToolFailure("invalid_arguments", self.redactor.redact(str(exc))) from None
        except TuringError as exc:
            raise ToolFailure("vault_error", self.redactor.redact(str(exc))) from None

    async def _audit_denial(self, action: str, exc: AccessDenied) -> None:
        try:
            await self._audit(
                "secret.denied",
                exc.principal,
                action,
                "denied",
                {"path": exc.path, "capability": exc.capability.value},
            )
        except ToolFailure:
            log.warning("turing could not audit a denial of %s on %s to %s", action, exc.path, exc.principal)

    async def _audit(
        self, event_type: str, actor: str, action: str, outcome: str, details: dict[str, JsonValue]
    ) -> None:
        """Record with McNamara; raise audit_unavailable if the record is not confirmed."""
        record: dict[str, JsonValue] = {
            "event_type": event_type,
            "actor": actor,
            "action": action,
            "outcome": outcome,
            "details": {**details, "chain": list(authority.current().chain)},
            "hmac_keys": [],
        }
        try:
            await self.call(AUDIT_MAD, AUDIT_TOOL, record, timeout=self.config.audit_timeout)
        except RemoteError as exc:
            reason = f"{exc.error.code}: {self.redactor.redact(exc.error.message)}"
        except BusError as exc:
            reason = f"{type(exc).__name__}: {self.redactor.redact(str(exc))}"
        else:
            return
        applied = "" if outcome != "success" or action in ("get", "list", "versions") else " (the change was applied)"
        log.error("turing audit record for %s by %s failed: %s", action, actor, reason)
        raise ToolFailure(
            "audit_unavailable",
            f"'{action}' failed because its audit record could not be written to {AUDIT_MAD}{applied}: {reason}",
            retryable=True,
        )


_CAPABILITY = {
    "get": Capability.READ,
    "versions": Capability.READ,
    "list": Capability.LIST,
    "put": Capability.WRITE,
    "delete": Capability.DELETE,
    "undelete": Capability.DELETE,
    "destroy": Capability.DELETE,
    "rotate": Capability.WRITE,
}


def _event_for(action: str) -> str:
    return {
        "get": "secret.read",
        "versions": "secret.metadata",
        "list": "secret.list",
        "put": "secret.write",
    }.get(action, f"secret.{action}")
