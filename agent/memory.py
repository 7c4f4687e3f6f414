"""What the agent asks of glibc's malloc (through ctypes; on another C library, nothing):
memory kept for the next large reads, and given back once they are done."""

from __future__ import annotations

import contextlib
import ctypes

# glibc's mallopt parameters, and what the agent sets them to.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 128 * 1024
_TRIM_THRESHOLD = 4 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - glibc's, or not there
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def settle_malloc() -> None:
    """Keep glibc's mmap threshold at its default of 128 KiB. Left dynamic, it rises once
    a large block is freed, and from then on each worker thread's arena keeps the 256 KiB
    chunks media is read in: 96 responses that stall took the agent from 110 MB to
    260 MB of RSS (scripts/soak_hostile.py).

    Let each arena keep up to 4 MiB free at its top (the default with a fixed threshold
    is 128 KiB): an export's read thread makes about a megabyte of parts under the
    threshold each time, freed once sent; given back at once, each next read faulted its
    pages in again (a quarter of a clip's CPU). `give_back` returns it when a download
    ends."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def give_back() -> None:
    """Return the free memory malloc keeps to the system (blocking: a few milliseconds;
    after a download, not during one)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(OSError):
            libc.malloc_trim(0)
