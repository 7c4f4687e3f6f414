"""Opening recordings: never blocking, and regular files only. A FIFO (or a device) put
in a recording's place would hang a blocking open, and the worker thread with it, for
good; it is refused with ProbeError instead."""

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
    except BaseException:
        os.close(fd)
        raise
    return fd, info


@contextlib.contextmanager
def opened(path: Path | str, follow: bool = True) -> Iterator[tuple[int, int]]:
    """`open_regular` for the body: the descriptor and the file's size."""
    fd, info = open_regular(path, follow)
    try:
        yield fd, info.st_size
    finally:
        os.close(fd)
