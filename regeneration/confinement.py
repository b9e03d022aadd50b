"""Run a command confined: bubblewrap, as ``nobody``, no network, the worktree its only writable place.

Code written by an LLM (a regenerated MAD and its tests) runs only through :class:`Confinement`:

* a read-only view of the whole system (``--ro-bind / /``), a private ``/tmp``, the home of the
  user running the ecosystem hidden (``--tmpfs /root``) except the interpreter and virtual
  environment, which are bound back read-only;
* the worktree bound read-write — the only writable place;
* every namespace unshared (network: only a loopback inside its own namespace, so nothing on the
  host's loopback — Redis, the gateway — is reachable), ``--die-with-parent``, ``--new-session``;
* the process itself runs as uid/gid 65534 (``nobody``) with no capabilities, no supplementary
  groups and ``no_new_privs``; the worktree is handed to that user for the run and taken back after;
* rlimits (CPU seconds, address space, processes, file size) and a wall-clock timeout that kills
  the whole sandbox (bwrap's process group; the pid namespace dies with its init).

bubblewrap is started by the ecosystem's own user, which must be root: the interpreter usually
lives under a home directory ``nobody`` cannot traverse, so only root can bind it into the
sandbox; the command then drops to ``nobody`` with ``setpriv`` before anything else runs. If
bubblewrap is missing, or the ecosystem does not run as root, or a trial run fails,
:class:`ConfinementUnavailable` says so — a command is never run unconfined.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

NOBODY = 65534
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

LimitHit = Literal["wall_time", "cpu", "file_size"]


class ConfinementUnavailable(RuntimeError):
    """No confinement on this machine; the run stops rather than execute code unconfined."""


class ConfinementLimits(BaseModel):
    """Resources one confined command may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wall_seconds: float = Field(300.0, gt=0, le=3600)
    cpu_seconds: int = Field(300, gt=0, le=3600)
    memory_bytes: int = Field(4 * GiB, ge=64 * MiB)
    processes: int = Field(256, ge=8, le=4096)
    file_size_bytes: int = Field(256 * MiB, ge=1 * MiB)
    output_bytes: int = Field(256 * KiB, ge=1 * KiB)


class ConfinedResult(BaseModel):
    """What a confined command did: its exit, its (capped) output, and which limit ended it, if any."""

    model_config = ConfigDict(frozen=True)

    returncode: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    limit: LimitHit | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _interpreter_paths() -> tuple[Path, ...]:
    """The running interpreter's installation and virtual environment: what a confined Python needs."""
    found: list[Path] = []
    for raw in (sys.base_prefix, sys.prefix, Path(sys.executable).resolve().parent.parent):
        path = Path(raw).resolve()
        if path not in found:
            found.append(path)
    return tuple(found)


class Confinement:
    """Runs commands in a bubblewrap sandbox as ``nobody``; see the module docstring for the walls."""

    def __init__(
        self,
        *,
        bwrap: str | None = None,
        setpriv: str | None = None,
        hidden: Sequence[Path] = (Path("/root"),),
        readable: Sequence[Path] | None = None,
        uid: int = NOBODY,
        gid: int = NOBODY,
    ) -> None:
        self._bwrap = bwrap or shutil.which("bwrap")
        self._setpriv = setpriv or shutil.which("setpriv")
        self._hidden = tuple(Path(p) for p in hidden)
        self._readable = tuple(Path(p) for p in (readable if readable is not None else _interpreter_paths()))
        self._uid = uid
        self._gid = gid
        self._checked = False

    # -- availability -------------------------------------------------------------------------

    def _require_tools(self) -> tuple[str, str]:
        if self._bwrap is None:
            raise ConfinementUnavailable(
                "bubblewrap (bwrap) is not installed: install the Debian package 'bubblewrap'; "
                "LLM-written code is never run unconfined"
            )
        if self._setpriv is None:
            raise ConfinementUnavailable("setpriv (util-linux) is not installed; it drops the sandbox to nobody")
        if os.geteuid() != 0:
            raise ConfinementUnavailable(
                f"confinement needs the ecosystem to run as root to start bubblewrap and drop to uid {self._uid}; "
                f"it runs as uid {os.geteuid()}"
            )
        return self._bwrap, self._setpriv

    async def check(self, scratch: Path) -> None:
        """Prove the sandbox works here (a trial run in ``scratch``), or raise ConfinementUnavailable."""
        if self._checked:
            return
        self._require_tools()
        await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
        try:
            result = await self._run(["/bin/sh", "-c", "id -u"], scratch, ConfinementLimits(wall_seconds=30), {})
        except OSError as e:
            raise ConfinementUnavailable(f"bubblewrap at {self._bwrap} could not be started: {e}") from e
        if result.returncode != 0 or result.stdout.strip() != str(self._uid):
            raise ConfinementUnavailable(
                f"bubblewrap could not start a sandbox here (exit {result.returncode}): {result.stderr.strip()[:500]}"
            )
        self._checked = True

    # -- running ------------------------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        worktree: Path,
        limits: ConfinementLimits | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ConfinedResult:
        """Run ``argv`` inside the sandbox with ``worktree`` as cwd and only writable place."""
        worktree = await asyncio.to_thread(_existing_directory, worktree)
        scratch = worktree / ".confinement-check"
        await self.check(scratch)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(scratch.rmdir)
        return await self._run(list(argv), worktree, limits or ConfinementLimits(), dict(env or {}))

    def _bwrap_argv(self, argv: list[str], worktree: Path) -> list[str]:
        bwrap, setpriv = self._require_tools()
        tmpfs = (*self._hidden, Path("/tmp"))
        args = [bwrap, "--ro-bind", "/", "/"]
        for path in tmpfs:
            args += ["--perms", "0755", "--tmpfs", str(path)]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for path in self._readable:
            args += [*_traversable_parents(path, tmpfs), "--ro-bind", str(path), str(path)]
        args += [*_traversable_parents(worktree, tmpfs), "--bind", str(worktree), str(worktree)]
        # Every namespace but the user one: bwrap runs as root (to reach the interpreter), and a
        # user namespace would map the sandbox to host root; the sandbox drops to nobody instead.
        args += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--die-with-parent", "--new-session", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        args += ["--chdir", str(worktree), "--"]
        args += [
            setpriv,
            f"--reuid={self._uid}",
            f"--regid={self._gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        return args + argv

    async def _run(
        self, argv: list[str], worktree: Path, limits: ConfinementLimits, env: dict[str, str]
    ) -> ConfinedResult:
        full = self._bwrap_argv(argv, worktree)
        environment = {
            "PATH": str(Path(sys.executable).parent) + ":/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            **env,
        }
        owner = await asyncio.to_thread(worktree.stat)
        await asyncio.to_thread(_chown_tree, worktree, self._uid, self._gid)
        try:
            process = await asyncio.create_subprocess_exec(
                *full,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment,
                start_new_session=True,
                preexec_fn=_limiter(limits),
            )
            assert process.stdout is not None and process.stderr is not None
            out = asyncio.ensure_future(_read_capped(process.stdout, limits.output_bytes))
            err = asyncio.ensure_future(_read_capped(process.stderr, limits.output_bytes))
            timed_out = False
            try:
                await asyncio.wait_for(process.wait(), timeout=limits.wall_seconds)
            except TimeoutError:
                timed_out = True
                _kill_group(process.pid)
                await process.wait()
            (stdout, stdout_cut), (stderr, stderr_cut) = await asyncio.gather(out, err)
        finally:
            await asyncio.to_thread(_chown_tree, worktree, owner.st_uid, owner.st_gid)
        code = process.returncode
        return ConfinedResult(
            returncode=None if timed_out else code,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=stdout_cut,
            stderr_truncated=stderr_cut,
            timed_out=timed_out,
            limit="wall_time" if timed_out else _limit_from_exit(code),
        )


def _traversable_parents(path: Path, tmpfs: tuple[Path, ...]) -> list[str]:
    """``--dir`` for each parent of ``path`` inside a private tmpfs, so ``nobody`` can reach it (0755)."""
    args: list[str] = []
    for mount in tmpfs:
        if path.is_relative_to(mount) and path != mount:
            for parent in reversed(path.relative_to(mount).parents):
                if parent != Path("."):
                    args += ["--perms", "0755", "--dir", str(mount / parent)]
    return args


def _existing_directory(path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_dir():
        raise ValueError(f"worktree: {path} is not a directory")
    return resolved


def _limiter(limits: ConfinementLimits) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        # Counted per real uid: it binds once setpriv has become nobody (root is exempt).
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return apply


def _limit_from_exit(code: int | None) -> LimitHit | None:
    if code is None:
        return None
    signals = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file_size"}
    for number, name in signals.items():
        # A signalled child is reported as -N directly, or as 128+N through bwrap's pid-1 monitor.
        if code in (-number, 128 + number):
            return name  # type: ignore[return-value]
    return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[str, bool]:
    """Read a stream to its end, keeping at most ``cap`` bytes (the rest is drained, not kept)."""
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(64 * KiB):
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return kept.decode("utf-8", errors="replace"), truncated


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Hand ``root`` and everything under it to ``uid``:``gid`` (symlinks themselves, never their targets)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
