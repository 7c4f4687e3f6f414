#!/usr/bin/env python3
"""Coverage-guided fuzzing of the container readers with atheris, for runs longer than
the suite's hypothesis test: any bytes must give facts or one ProbeError, within 50 MB
and 1 s per MB. Prints what it found; an input that breaks the property is written to
tests/regressions/ (fuzz-*.bin), where the suite runs it from then on.

  .venv/bin/pip install atheris   # PyPI; not a dependency of the agent or its tests
  .venv/bin/python scripts/fuzz_containers.py [--seconds 600] [-- libFuzzer options]

The corpus starts from every style of the test footage (rendered with ffmpeg here) and
the hostile files the tests keep.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports():
    import agent.containers.mp4
    import agent.containers.mpegts
    import agent.containers.probe  # noqa: F401

from agent.demo import render_run  # noqa: E402
from tests.hostile_media import read_in_bounds  # noqa: E402

MB = 1 << 20
FOUND = ROOT / "tests" / "regressions"
_scratch = Path(tempfile.mkdtemp(prefix="fuzz-")) / "input"


def one(data: bytes) -> None:
    """The property, on one input: an input that breaks it (an exception other than
    ProbeError, or past the bounds) is kept in tests/regressions/ before libFuzzer stops."""
    _scratch.write_bytes(data)
    try:
        _, peak, seconds = read_in_bounds(_scratch)
        if peak > 50 * MB or seconds > 2 + 2 * len(data) / MB:
            raise AssertionError(f"{peak / MB:.0f} MB, {seconds:.1f} s")
    except Exception:
        (FOUND / f"fuzz-{hashlib.sha256(data).hexdigest()[:16]}.bin").write_bytes(data)
        raise


def corpus(directory: Path) -> None:
    """Seed inputs: the head of each footage style, and the kept hostile files."""
    styles = {
        "ts": {}, "ts_reset": {"reset_timestamps": True}, "hevc": {"codec": "hevc"},
        "mp4": {"kind": "mp4"}, "fmp4": {"kind": "fmp4"},
    }  # fmt: skip

    async def render() -> None:
        for name, options in styles.items():
            run = await render_run(directory / "render" / name, 4, 2, size="160x120", **options)
            (directory / f"{name}.bin").write_bytes(run[0].path.read_bytes()[: 128 * 1024])

    asyncio.run(render())
    for kept in FOUND.iterdir():
        (directory / f"kept-{kept.name}").write_bytes(kept.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600)
    args, rest = parser.parse_known_args()
    seeds = Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
    corpus(seeds)
    print(f"corpus: {len(os.listdir(seeds))} inputs in {seeds}", flush=True)
    argv = [sys.argv[0], f"-max_total_time={args.seconds}", "-rss_limit_mb=1024", str(seeds)]
    atheris.Setup(argv + [a for a in rest if a != "--"], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
