"""Opening recordings: never blocking, regular files only, and none with holes.

A FIFO (or a device) put in a recording's place would hang a blocking open, and the
worker thread with it, for good; a sparse file (a valid head, then `truncate -s 20G`)
would have the readers scan gigabytes of zeros and count samples by a size the file does
not hold. Both are refused with ProbeError instead."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import ProbeError


def open_regular(path: Path | str, follow: bool = True) -> tuple[int, os.stat_result]:
    """A descriptor of the regular file at `path` and its stat (the caller closes it);
    with `follow` False, a symlink is refused (OSError). ProbeError if it is not a
    regular file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ProbeError("not a regular file")
        if _mostly_holes(fd, info):
            raise ProbeError(f"a sparse file: {info.st_size} bytes long, mostly holes")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


# A recording is written from start to end, so it has no hole before its end: one whose
# first hole (SEEK_HOLE) comes before half its length is no recording. (Where a file
# system cannot tell, SEEK_HOLE says the whole file is data: never a false refusal.)
_SPARSE_ABOVE = 1 << 20


def _mostly_holes(fd: int, info: os.stat_result) -> bool:
    if info.st_size <= _SPARSE_ABOVE:
        return False
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) < info.st_size // 2
    except OSError:
        return False


@contextlib.contextmanager
def opened(path: Path | str, follow: bool = True) -> Iterator[tuple[int, int]]:
    """`open_regular` for the body: the descriptor and the file's size."""
    fd, info = open_regular(path, follow)
    try:
        yield fd, info.st_size
    finally:
        os.close(fd)
