"""A small real filesystem for disk-full tests: a tmpfs mounted by the test (root), else a loop-mounted file.

Nothing is simulated: SQLite sees ``ENOSPC`` from the kernel exactly as on a full disk.
:meth:`SmallDisk.fill` takes every free byte with a filler file; :meth:`SmallDisk.free`
deletes it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallDisk:
    def __init__(self, mount_point: Path) -> None:
        self.mount_point = mount_point
        self.filler = mount_point / "filler.bin"

    def free_bytes(self) -> int:
        st = os.statvfs(self.mount_point)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Write until the kernel says ENOSPC; return the bytes taken."""
        taken = 0
        chunk = b"\0" * 65536
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 512, 1):
                while True:
                    try:
                        written = os.write(fd, chunk[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    taken += written
                    if written < size:
                        break
            os.fsync(fd)
        finally:
            os.close(fd)
        return taken

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


def _mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size_mb: int = 8) -> Iterator[SmallDisk]:
    """Mount a ``size_mb`` filesystem at ``mount_point`` (created, mode 0700) for the duration.

    A tmpfs when this process may mount (root); otherwise a loop-mounted ext4 file. When
    neither is allowed the test fails, naming what it needs: a disk-full case is not
    something to fake.
    """
    mount_point.mkdir(parents=True, exist_ok=True, mode=0o700)
    tried = _mount(["-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mount_point)])
    image: Path | None = None
    if tried.returncode != 0:
        image = Path(tempfile.mkstemp(suffix=".img")[1])
        with open(image, "wb") as fh:
            fh.truncate(size_mb * 1024 * 1024)
        mkfs = shutil.which("mkfs.ext4")
        made = subprocess.run([mkfs or "mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
        looped = _mount(["-o", "loop", str(image), str(mount_point)]) if made.returncode == 0 else made
        if looped.returncode != 0:
            image.unlink(missing_ok=True)
            pytest.fail(
                "disk-full tests need a small real filesystem: mounting a tmpfs failed "
                f"({tried.stderr.strip()}) and so did a loop-mounted file ({looped.stderr.strip()}); "
                "run the tests as root (or with CAP_SYS_ADMIN)"
            )
        mount_point.chmod(0o700)
    try:
        yield SmallDisk(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)
        if image is not None:
            image.unlink(missing_ok=True)
