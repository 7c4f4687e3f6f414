#!/usr/bin/env python3
"""Indexing benchmark: prints figures, side by side with the baseline from the same run.

  .venv/bin/python scripts/bench_index.py [--files 10000] [--rows 1000000]

1. Cold start on N existing segment files (hard links to a few rendered 720p 10 s TS
   segments, so the page cache is warm): time until /healthz answers and until the index
   holds every file; the agent as a real process. Baseline: ffprobe, timed on 20 of the
   files (one process each) and multiplied by the number of files.
2. New segments while running: each is written under a temporary name and renamed into
   place; time until /api/cameras counts it, and the agent's CPU time per segment.
3. Idle RSS of the agent after the scan.
4. Range queries on a 1,000,000-segment index: ours (start bounded on both sides) and the
   design this replaces (`start < to AND end > from`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from agent.demo import render_run
from agent.index import Index, Segment
from agent.layout import make_layout

T0 = 1_795_161_600_000_000  # 2026-11-20T08:00:00Z
S = 1_000_000


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_archive(work: Path, files: int) -> tuple[Path, list[Path]]:
    rendered = asyncio.run(render_run(work / "render", 60, 10, size="1280x720"))
    sources = [item.path for item in rendered]
    layout = make_layout("ffmpeg", "UTC")
    root = work / "recordings"
    cameras = 10
    an_hour_ago = time.time() - 3600
    for n in range(files):
        camera, k = f"cam{n % cameras:02d}", n // cameras
        target = root / layout.format(camera, T0 + k * 10 * S)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[k % len(sources)], target)
    os.utime(sources[0], (an_hour_ago, an_hour_ago))
    for source in sources:
        os.utime(source, (an_hour_ago, an_hour_ago))
    return root, sources


def ffprobe_baseline(sources: list[Path], samples: int = 20) -> float:
    started = time.perf_counter()
    for n in range(samples):
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "json",
                str(sources[n % len(sources)]),
            ],
            check=True,
            capture_output=True,
        )
    return (time.perf_counter() - started) / samples


def bench_agent(work: Path, root: Path, sources: list[Path], files: int) -> None:
    port = free_port()
    config = work / "agent.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[recordings]\nroot = "{root}"\n'
        f'[index]\ndatabase = "{work / "index.sqlite3"}"\n'
        f'[playback]\ndir = "{work / "playback"}"\n'
    )
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(config), "--log-level", "WARNING"],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        api_up = None
        while True:
            try:
                health = get(f"{base}/healthz")
            except OSError:
                time.sleep(0.01)
                continue
            api_up = api_up or time.perf_counter() - started
            if health["index"]["segments"] >= files:
                break
            time.sleep(0.02)
        complete = time.perf_counter() - started
        per_file = ffprobe_baseline(sources)
        print(f"\n1. Cold start on {files:,} segment files (warm page cache)")
        print(f"   {'':32}{'agent':>12}{'ffprobe (20 timed)':>20}")
        print(f"   {'API answers after':32}{api_up:>11.2f}s{'-':>20}")
        print(f"   {'index complete after':32}{complete:>11.2f}s{per_file * files:>19.1f}s")
        print(f"   {'per file':32}{complete / files * 1e3:>10.3f}ms{per_file * 1e3:>18.1f}ms")

        agent = psutil.Process(process.pid)
        time.sleep(3)
        idle_rss = agent.memory_info().rss
        cpu_before = sum(agent.cpu_times()[:2])
        time.sleep(5)
        idle_cpu = (sum(agent.cpu_times()[:2]) - cpu_before) / 5
        layout = make_layout("ffmpeg", "UTC")
        count = 20

        def drop(n: int) -> float:
            target = root / layout.format("live", T0 + n * 10 * S)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(target.name + ".tmp")
            shutil.copyfile(sources[n % len(sources)], temporary)
            os.rename(temporary, target)
            return time.perf_counter()

        latencies = []
        for n in range(count):  # latency: poll /healthz until the segment is counted
            moved = drop(n)
            while get(f"{base}/healthz")["index"]["segments"] <= files + n:
                time.sleep(0.005)
            latencies.append(time.perf_counter() - moved)
        cpu_before, wall_before = sum(agent.cpu_times()[:2]), time.perf_counter()
        for n in range(count, 2 * count):  # CPU: no polling, a segment every 0.5 s
            drop(n)
            time.sleep(0.5)
        while get(f"{base}/healthz")["index"]["segments"] < files + 2 * count:
            time.sleep(0.1)
        cpu = sum(agent.cpu_times()[:2]) - cpu_before
        cpu -= idle_cpu * (time.perf_counter() - wall_before)
        print(f"\n2. New segments renamed into place, one at a time ({count} each)")
        print(
            f"   until indexed: median {statistics.median(latencies):.2f}s,"
            f" max {max(latencies):.2f}s (1 s of it is the quiet time a file with no"
            " successor waits)"
        )
        print(
            f"   agent CPU per new segment: {cpu / count * 1e3:.1f}ms"
            f" (idle: {idle_cpu * 1e3:.1f}ms per second)"
        )
        print(f"\n3. Idle RSS after indexing {files:,} files: {idle_rss / 2**20:.1f} MiB")
    finally:
        process.terminate()
        process.wait(10)


async def bench_queries(work: Path, rows: int) -> None:
    index = Index(work / "big.sqlite3", {"bench": "1"})
    await index.open()
    cameras = 10
    per_camera = rows // cameras
    batch = []
    started = time.perf_counter()
    for camera in range(cameras):
        for k in range(per_camera):
            start = T0 + k * 10 * S
            batch.append(
                Segment(
                    path=f"cam{camera:02d}/{k:08d}.ts",
                    camera=f"cam{camera:02d}",
                    start_us=start,
                    end_us=start + 10 * S,
                    size=2_500_000,
                    mtime_ns=1,
                    inode=1,
                    container="mpegts",
                    video_codec="h264",
                    has_audio=True,
                    timescale=90000,
                    first_pts=k * 900000,
                    duration=900000,
                    frame_ticks=3600,
                )
            )
            if len(batch) == 50_000:
                await index.put(batch)
                batch = []
    await index.put(batch)
    built = time.perf_counter() - started
    db = index._read_db  # the reader thread is idle: time the queries on this thread
    assert db is not None
    rng = random.Random(1)
    ours, theirs = [], []
    for _ in range(200):
        camera = f"cam{rng.randrange(cameras):02d}"
        start = T0 + rng.randrange(per_camera * 10) * S
        end = start + 3600 * S
        t = time.perf_counter()
        found = index.segments_sync(camera, start, end)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        old = db.execute(
            "SELECT * FROM segments WHERE camera = ? AND start_us < ? AND end_us > ?"
            " ORDER BY start_us",
            (camera, end, start),
        ).fetchall()
        theirs.append(time.perf_counter() - t)
        assert len(old) == len(found)
    await index.close()

    def p(values: list[float], q: float) -> float:
        return sorted(values)[int(q * (len(values) - 1))] * 1e3

    print(f"\n4. One-hour range queries on a {rows:,}-segment index (built in {built:.0f} s)")
    print(f"   {'':20}{'ours':>10}{'replaced design':>18}")
    print(f"   {'median':20}{p(ours, 0.5):>8.2f}ms{p(theirs, 0.5):>16.2f}ms")
    print(f"   {'p99':20}{p(ours, 0.99):>8.2f}ms{p(theirs, 0.99):>16.2f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-index-") as name:
        work = Path(name)
        root, sources = make_archive(work, args.files)
        bench_agent(work, root, sources, args.files)
        if args.rows:
            asyncio.run(bench_queries(work, args.rows))


if __name__ == "__main__":
    main()
