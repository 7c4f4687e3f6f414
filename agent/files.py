"""Durable writes: a file is written and fsynced, then renamed into place, so that a crash
leaves either the old content or the new one, never half of it."""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: Path, data: bytes, mode: str = "wb") -> None:
    """Write (or with mode "ab", append) `data` to `path` and fsync it."""
    with open(path, mode) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically: a fsynced temporary beside it, renamed over it."""
    temporary = path.with_name(f".{path.name}.tmp")
    write_file(temporary, data)
    os.replace(temporary, path)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
