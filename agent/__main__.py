"""`python -m agent --config PATH` and the `nvr-playback-agent` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import shutil
import sqlite3
import sys
from pathlib import Path

from . import __version__
from .app import create_app
from .config import DEFAULT_PATH, load_config
from .errors import ConfigError, StartupError
from .server import ConnectionGuard, serve

PROG = "nvr-playback-agent"
# glibc's mallopt parameters, and what the agent sets them to.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 128 * 1024
_TRIM_THRESHOLD = 4 << 20


def _malloc_settings() -> None:
    """Keep glibc's mmap threshold at its default of 128 KiB. Left dynamic, it rises once
    a large block is freed, and from then on each worker thread's arena keeps the 256 KiB
    chunks media is read in: 96 responses that stall took the agent from 110 MB to
    260 MB of RSS (scripts/soak_hostile.py).

    Let each arena keep up to 4 MiB free at its top (the default with a fixed threshold
    is 128 KiB): an export's read thread makes about a megabyte of parts under the
    threshold each time, freed once sent; given back at once, each next read faulted its
    pages in again (a quarter of a clip's CPU). Not glibc (musl): nothing to do."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="NVR playback agent")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_PATH, help=f"TOML file (default {DEFAULT_PATH})"
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level, format="%(levelname)s %(name)s: %(message)s"
    )
    # watchfiles logs every batch of changes at INFO: the indexer says what matters.
    logging.getLogger("watchfiles").setLevel(
        max(logging.WARNING, logging.getLevelName(args.log_level))
    )
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info(
        "%s %s: recordings %s, listening on %s:%d",
        PROG,
        __version__,
        config.recordings.root,
        config.server.host,
        config.server.port,
    )
    if shutil.which(config.ffmpeg.ffmpeg) is None:
        logging.getLogger(__name__).info(
            "ffmpeg (%s) is not installed: nothing the agent serves or exports needs it;"
            " only the demo renders footage with it",
            config.ffmpeg.ffmpeg,
        )
    _malloc_settings()
    guard = ConnectionGuard()
    try:
        asyncio.run(
            serve(create_app(config, guard=guard), guard, config.server.host, config.server.port)
        )
    except (OSError, sqlite3.Error, StartupError) as error:
        print(f"{PROG}: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
