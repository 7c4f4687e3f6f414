"""`python -m agent --config PATH` and the `nvr-playback-agent` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import sys
from pathlib import Path

from . import __version__, memory
from .app import create_app
from .config import DEFAULT_PATH, load_config
from .errors import ConfigError, StartupError
from .server import ConnectionGuard, serve

PROG = "nvr-playback-agent"


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
    memory.settle_malloc()
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
