"""Horace, the file keeper: one git repository per project under the data directory, confined file
tools, branches per task attempt, merges to main, and file claims.

Every tool runs by command from MAD code (Hopper's workflow hooks); the write, merge, discard and
release tools are ``internal`` (never a person's command, never offered to an LLM). A write
needs the writer's claim on the file; a conflicting claim is refused naming the holder.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import JsonValue

from bus.topics import CLAIM
from mads.core import names
from mads.core.base import MAD, MadContext
from mads.core.errors import ToolFailure
from mads.core.tools import tool
from mads.horace.claims import ClaimConflict, ClaimStore
from mads.horace.git import MAIN, GitError, Repository
from mads.horace.paths import PathRefused, inside
from mads.horace.schemas import (
    BranchArgs,
    ClaimArgs,
    ClaimsArgs,
    CommitArgs,
    HoraceConfig,
    ListArgs,
    MergeArgs,
    NewBranchArgs,
    ProjectArgs,
    ReadArgs,
    ReleaseArgs,
    WriteArgs,
)

MAX_LIST = 2000


class Horace(MAD[HoraceConfig]):
    name = names.HORACE
    description = "The file keeper: projects as git repositories, confined reads and writes, branches, claims."
    config_model = HoraceConfig
    accepts_prose = False

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        super().__init__(ctx, instance=instance)
        self._claims: ClaimStore | None = None
        self._repos: dict[str, Repository] = {}

    async def on_start(self) -> None:
        self._claims = await ClaimStore.open(self.data_dir / "claims.db")

    async def on_stop(self) -> None:
        if self._claims is not None:
            await self._claims.close()
            self._claims = None

    @property
    def claims_store(self) -> ClaimStore:
        assert self._claims is not None, "Horace is not started"
        return self._claims

    def repository(self, project: str) -> Repository:
        repo = self._repos.get(project)
        if repo is None:
            repo = self._repos[project] = Repository(self.data_dir / "projects" / project)
        return repo

    async def existing(self, project: str) -> Repository:
        repo = self.repository(project)
        if not await repo.exists():
            raise ToolFailure("not_found", f"no project {project!r}")
        return repo

    async def emit_claim(self, action: str, **fields: JsonValue) -> None:
        await self.emit(CLAIM, {"action": action, **fields})

    # ---- projects and files -----------------------------------------------------------------

    @tool("Create a project: a git repository with an empty first commit on main (idempotent).", internal=True)
    async def create_project(self, args: ProjectArgs) -> dict[str, JsonValue]:
        repo = self.repository(args.project)
        if await repo.exists():
            return {"project": args.project, "head": await repo.head(MAIN), "created": False}
        return {"project": args.project, "head": await repo.init(), "created": True}

    @tool("Read a text file of a project on a branch (default main).")
    async def read_file(self, args: ReadArgs) -> dict[str, JsonValue]:
        path = await self._path(args.project, args.branch, args.path)
        try:
            content = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            raise ToolFailure("not_found", f"{args.project}:{args.branch}:{args.path} does not exist") from None
        except (IsADirectoryError, UnicodeDecodeError) as exc:
            raise ToolFailure("invalid_arguments", f"{args.path}: not a text file ({type(exc).__name__})") from None
        return {"path": args.path, "branch": args.branch, "content": content}

    @tool("Write a text file on a task branch; the holder must have claimed it.", internal=True)
    async def write_file(self, args: WriteArgs) -> dict[str, JsonValue]:
        if args.branch == MAIN:
            raise ToolFailure("forbidden", "main changes only by merging a green task branch")
        path = await self._path(args.project, args.branch, args.path)
        if not await self.claims_store.holds(args.project, args.path, args.holder):
            raise ToolFailure("not_claimed", f"{args.holder} must claim {args.project}:{args.path} before writing it")

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted after the check is not followed.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(args.content)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            raise ToolFailure("invalid_arguments", f"{args.path}: cannot be written ({exc.strerror})") from None
        return {"path": args.path, "branch": args.branch, "bytes": len(args.content.encode())}

    @tool("List the files of a project on a branch (default main).")
    async def list_files(self, args: ListArgs) -> dict[str, JsonValue]:
        repo = await self.existing(args.project)
        root = await self._worktree(repo, args.branch)

        def walk() -> list[str]:
            found: list[str] = []
            for directory, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d != ".git" and not os.path.islink(os.path.join(directory, d)))
                for name in sorted(files):
                    if name == ".git":  # a branch worktree's link to the repository
                        continue
                    full = os.path.join(directory, name)
                    if not os.path.islink(full):
                        found.append(os.path.relpath(full, root))
                if len(found) >= MAX_LIST:
                    break
            return found[:MAX_LIST]

        return {"branch": args.branch, "files": list(await asyncio.to_thread(walk))}

    @tool("A branch's changes against main, as a unified diff.")
    async def diff(self, args: BranchArgs) -> dict[str, JsonValue]:
        repo = await self.existing(args.project)
        await self._worktree(repo, args.branch)
        try:
            text = await repo.diff(args.branch)
        except GitError as exc:
            raise ToolFailure(exc.code, str(exc)) from None
        return {"branch": args.branch, "diff": text}

    @tool("A branch's history, newest first.")
    async def log(self, args: ListArgs) -> dict[str, JsonValue]:
        repo = await self.existing(args.project)
        try:
            entries = await repo.log(args.branch)
        except GitError as exc:
            raise ToolFailure(exc.code, str(exc)) from None
        return {"branch": args.branch, "commits": list(entries)}  # type: ignore[arg-type]

    # ---- branches ------------------------------------------------------------------------------

    @tool("Create a task branch (and its worktree) from main or another branch (idempotent).", internal=True)
    async def create_branch(self, args: NewBranchArgs) -> dict[str, JsonValue]:
        repo = await self.existing(args.project)
        try:
            head = await repo.create_branch(args.branch, args.start)
        except GitError as exc:
            raise ToolFailure(exc.code, str(exc)) from None
        return {"branch": args.branch, "head": head}

    @tool("Commit everything on a task branch; with `step`, a repeat returns the first commit.", internal=True)
    async def commit(self, args: CommitArgs) -> dict[str, JsonValue]:
        repo = await self.existing(args.project)
        if args.branch == MAIN:
            raise ToolFailure("forbidden", "main changes only by merging a green task branch")
        try:
            sha, created = await repo.commit(args.branch, args.message, args.step)
            size = await repo.diff_size(args.branch)
        except GitError as exc:
            raise ToolFailure(exc.code, str(exc)) from None
        return {"branch": args.branch, "sha": sha, "created": created, "diff_lines": size}

    @tool("Merge a task branch into main (refused on conflict; idempotent).", internal=True)
    async def merge(self, args: MergeArgs) -> dict[str, JsonValue]:
        repo = await self.existing(args.project)
        try:
            head, merged = await repo.merge(args.branch, args.message)
        except GitError as exc:
            await self.emit_claim("merge_refused", project=args.project, branch=args.branch, reason=str(exc)[:300])
            raise ToolFailure(exc.code, str(exc)) from None
        if merged:
            await self.emit_claim("merged", project=args.project, branch=args.branch, head=head)
        return {"branch": args.branch, "main": head, "merged": merged}

    @tool("Discard a task branch and its worktree (a losing or failed attempt).", internal=True)
    async def discard_branch(self, args: BranchArgs) -> dict[str, JsonValue]:
        repo = await self.existing(args.project)
        try:
            await repo.remove_branch(args.branch)
        except GitError as exc:
            raise ToolFailure(exc.code, str(exc)) from None
        await self.emit_claim("discarded", project=args.project, branch=args.branch)
        return {"branch": args.branch, "discarded": True}

    # ---- claims ----------------------------------------------------------------------------------

    @tool("Claim a file before writing it; a claim held by another task is refused, naming its holder.", internal=True)
    async def claim(self, args: ClaimArgs) -> dict[str, JsonValue]:
        await self.existing(args.project)
        try:
            inside(self.repository(args.project).main, args.path)
        except PathRefused as exc:
            raise ToolFailure("path_refused", str(exc)) from None
        try:
            claim = await self.claims_store.claim(
                args.project, args.path, args.holder, group=args.group, ttl_s=args.ttl_s or self.config.claim_ttl_s
            )
        except ClaimConflict as exc:
            await self.emit_claim(
                "refused", project=args.project, path=args.path, holder=args.holder, held_by=exc.holder
            )
            raise ToolFailure("claim_conflict", str(exc), retryable=True) from None
        await self.emit_claim("claimed", project=args.project, path=args.path, holder=args.holder, group=claim.group)
        return claim.model_dump(mode="json")

    @tool("Release every claim of a holder or of a group (task), with the reason.", internal=True)
    async def release(self, args: ReleaseArgs) -> dict[str, JsonValue]:
        if (args.holder is None) == (args.group is None):
            raise ToolFailure("invalid_arguments", "release: give exactly one of holder or group")
        count = await self.claims_store.release(holder=args.holder, group=args.group, reason=args.reason)
        await self.emit_claim("released", holder=args.holder, group=args.group, reason=args.reason, count=count)
        return {"released": count, "reason": args.reason}

    @tool("The claims held now (optionally of one project); expired claims are released as timeouts first.")
    async def claims(self, args: ClaimsArgs) -> dict[str, JsonValue]:
        expired = await self.claims_store.expire()
        if expired:
            await self.emit_claim("released", reason="timeout", count=expired)
        held = await self.claims_store.active(args.project)
        return {"claims": [c.model_dump(mode="json") for c in held]}

    # ---- helpers ---------------------------------------------------------------------------------

    async def _worktree(self, repo: Repository, branch: str) -> Path:
        try:
            root = repo.worktree(branch)
            await repo.head(branch)
        except GitError as exc:
            raise ToolFailure("not_found" if exc.code == "no_branch" else exc.code, str(exc)) from None
        if not await asyncio.to_thread(root.exists):
            raise ToolFailure("not_found", f"branch {branch!r} has no worktree")
        return root

    async def _path(self, project: str, branch: str, path: str) -> Path:
        repo = await self.existing(project)
        root = await self._worktree(repo, branch)
        try:
            return await asyncio.to_thread(inside, root, path)
        except PathRefused as exc:
            raise ToolFailure("path_refused", str(exc)) from None
