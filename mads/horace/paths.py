"""Confinement: a path a caller names is resolved inside one workspace, or refused with the reason.

Refused: absolute paths, ``..`` segments, the ``.git`` directory, any component that is a
symbolic link (in or out of the workspace: a link could be retargeted between check and use),
and anything that resolves outside the workspace root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

MAX_PATH = 300
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


class PathRefused(ValueError):
    """The path is outside what Horace may touch; the message says why."""


def clean(path: str) -> PurePosixPath:
    """``path`` as a relative POSIX path of safe segments, or :class:`PathRefused`."""
    if not path or len(path) > MAX_PATH:
        raise PathRefused(f"path must be 1..{MAX_PATH} characters")
    if path.startswith("/") or path.startswith("\\") or re.match(r"^[A-Za-z]:", path):
        raise PathRefused(f"{path!r} is absolute; paths are relative to the project")
    parts = PurePosixPath(path).parts
    for part in parts:
        if part == "..":
            raise PathRefused(f"{path!r} leaves the project ('..')")
        if part == ".git":
            raise PathRefused(f"{path!r} is inside .git, which only Horace's own operations touch")
        if not _SEGMENT.match(part):
            raise PathRefused(f"{path!r}: segment {part!r} must match [A-Za-z0-9_][A-Za-z0-9._-]*")
    return PurePosixPath(*parts)


def inside(root: Path, path: str) -> Path:
    """The real file ``path`` names under ``root``; symlinks anywhere on the way are refused."""
    relative = clean(path)
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise PathRefused(f"{path!r}: {part!r} is a symbolic link; links are not followed")
    real_root = os.path.realpath(root)
    real = os.path.realpath(current)
    if os.path.commonpath([real_root, real]) != real_root:
        raise PathRefused(f"{path!r} resolves outside the project")
    return current
