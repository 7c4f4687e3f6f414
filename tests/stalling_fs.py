"""A disk that stalls, for tests and benchmarks: a read-only FUSE file system that shows
a directory as it is and, while a control file exists, holds every look at it (stat,
listing, open, read) until the file is gone, as a USB disk resetting or a network share
gone quiet does.

    python tests/stalling_fs.py SOURCE MOUNTPOINT CONTROL

runs in the foreground until unmounted (`umount MOUNTPOINT`). Needs root, /dev/fuse and
libfuse 3 (or 2); `mounted` starts it and waits until it serves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ATTRS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size")


def available() -> str | None:
    """Why a stalling file system cannot be mounted here (None if it can)."""
    if os.geteuid() != 0:
        return "mounting FUSE needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as error:
        return f"mfusepy: {error}"
    return None


@contextlib.contextmanager
def mounted(source: Path, mountpoint: Path, control: Path) -> Iterator[None]:
    """`source` shown at `mountpoint`, stalling while `control` exists."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, __file__, str(source), str(mountpoint), str(control)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the stalling file system did not mount")
            time.sleep(0.05)
        yield
    finally:
        control.unlink(missing_ok=True)  # whatever waits on it goes on
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(source: str, mountpoint: str, control: str) -> None:
    from mfusepy import FUSE, FuseOSError, Operations

    def held() -> None:
        while os.path.exists(control):
            time.sleep(0.02)

    def real(path: str) -> str:
        return os.path.join(source, path.lstrip("/"))

    class Stalling(Operations):  # type: ignore[misc]
        use_ns = True

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            held()
            try:
                info = os.lstat(real(path))
            except OSError as error:
                raise FuseOSError(error.errno or errno.EIO) from None
            found: dict[str, Any] = {name: getattr(info, name) for name in _ATTRS}
            for name in ("st_atime", "st_mtime", "st_ctime"):
                found[name] = getattr(info, f"{name}_ns")
            return found

        def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
            held()
            # Each with its inode: one of 0 is an entry readdir(3) leaves out.
            return [
                (entry.name, {"st_mode": entry.stat().st_mode, "st_ino": entry.inode()}, 0)
                for entry in os.scandir(real(path))
            ]

        def open(self, path: str, flags: int) -> int:
            held()
            return os.open(real(path), os.O_RDONLY)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            held()
            return os.pread(fh, size, offset)

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

    FUSE(
        Stalling(),
        mountpoint,
        foreground=True,
        ro=True,
        use_ino=True,
        attr_timeout=0,
        entry_timeout=0,
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
