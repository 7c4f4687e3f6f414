#!/usr/bin/env python3
"""Indexing benchmark: prints figures, side by side with the baseline from the same run,
and with the targets of a month of eight cameras.

  .venv/bin/python scripts/bench_index.py [--files 10000] [--cameras 8] [--rows 1000000]
  .venv/bin/python scripts/bench_index.py --full   # 2,000,000 recordings over 8 cameras

1. Cold start on N existing segment files (hard links to a few rendered 720p 10 s TS
   segments, so the page cache is warm; named 10 s apart per camera, modified two days
   ago): time until /healthz answers and until the index holds every file, /healthz's
   latency and the agent's RSS throughout; the agent as a real process. Baseline:
   ffprobe, timed on 20 of the files (one process each) and multiplied by the number of
   files.
2. New segments while running: each is written under a temporary name and renamed into
   place; time until /api/cameras counts it, and the agent's CPU time per segment.
3. Idle RSS of the agent after the scan, and the index file's bytes per recording.
4. The recordings query over 31 days of a camera (ours, through the API; the design it
   replaced, the spans of every row, timed on the same index in this process), and POST
   of a 1 h session while a recording arrives from every camera every 10 s.
5. A recorder's retention deleting a share of the files at once: time until the index
   holds the rest, /healthz's latency meanwhile.
6. A restart with the index complete: time until sessions are served.
7. Reconciles, in this process on the same index and files: the first (every file
   looked at) and the next one (nothing changed: old directories left alone), and the
   idle CPU they add up to with a reconcile every five minutes.
8. Range queries on a 1,000,000-segment index: ours (start bounded on both sides) and the
   design this replaces (`start < to AND end > from`).
9. Faults: one directory of 100,000 recordings of which 1,000 are garbage (/healthz's
   latency during its scan, how often the garbage is said), and a disk that stalls for
   5 s (a FUSE file system holding every look at it: tests/stalling_fs.py, root only):
   /healthz's latency meanwhile and whether it says so.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from agent import indexer as indexing
from agent.config import load_config
from agent.demo import render_run
from agent.index import Index, Segment
from agent.indexer import RECONCILE_SECONDS, Indexer
from agent.layout import make_layout
from agent.timeline import spans
from agent.times import format_us

S = 1_000_000
# 08:00 UTC 31 days ago: a month of footage (--full: 29 days of 8 cameras) ends before now,
# as a recorder's archive does.
T0 = ((int(time.time()) // 86_400 - 31) * 86_400 + 8 * 3_600) * S


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_archive(work: Path, files: int, cameras: int) -> tuple[Path, list[Path], list[Path]]:
    """The recordings (`files` hard links over `cameras`, and a camera of copies, a tenth
    of them, that retention deletes: a file's own inode, whose ctime the other links'
    deletion does not move), the rendered sources, and the copies."""
    rendered = asyncio.run(render_run(work / "render", 60, 10, size="1280x720"))
    small = asyncio.run(render_run(work / "small", 10, 10, size="320x240"))
    sources = [item.path for item in rendered]
    # A file takes at most 65,000 links (ext4): copies of the rendered ones share the rest.
    for n in range(len(sources), -(-files // 60_000)):
        copy = work / "render" / f"copy{n:05d}.ts"
        shutil.copyfile(sources[n % len(rendered)], copy)
        sources.append(copy)
    layout = make_layout("ffmpeg", "UTC")
    root = work / "recordings"
    made: set[Path] = set()
    for n in range(files):
        camera, k = f"cam{n % cameras:02d}", n // cameras
        target = root / layout.format(camera, T0 + k * 10 * S)
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        os.link(sources[k % len(sources)], target)
    copies = []
    for k in range(min(10_000, files // 10)):
        target = root / layout.format("retired", T0 + k * 10 * S)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(small[0].path, target)
        copies.append(target)
    two_days_ago = time.time() - 2 * 86_400  # an archive: its files no longer change
    for path in (*sources, *copies):
        os.utime(path, (two_days_ago, two_days_ago))
    return root, sources, copies


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


def timed(url: str, method: str = "GET", body: dict | None = None) -> tuple[float, int, dict]:
    """(seconds, status, JSON) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            answer = json.loads(raw) if raw else {}
            status = response.status
    except urllib.error.HTTPError as error:
        answer, status = json.load(error), error.code
    return time.perf_counter() - started, status, answer


def pct(values: list[float], q: float) -> float:
    """The q-quantile of seconds, in milliseconds."""
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3


def row(label: str, ours: str, target: str = "", baseline: str = "") -> None:
    print(f"   {label:44}{ours:>16}{baseline:>20}   {target}")


def start_agent(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(work / "agent.toml"),
         "--log-level", os.environ.get("AGENT_LOG", "WARNING")],
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip


def start_logged(work: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """An agent on work/agent.toml, its warnings written to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(work / "agent.toml"),
             "--log-level", "WARNING"],
            cwd=Path(__file__).resolve().parent.parent, stderr=sink,
        )  # fmt: skip


def write_config(work: Path, root: Path, port: int, layout: str = "ffmpeg") -> None:
    (work / "agent.toml").write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[recordings]\nroot = "{root}"\nlayout = "{layout}"\n'
        f'[index]\ndatabase = "{work / "index.sqlite3"}"\n'
        f'[playback]\ndir = "{work / "playback"}"\n'
    )


def health_until(base: str, done: Callable[[dict], bool], seconds: float = 3600) -> list[float]:
    """/healthz's latencies, polled every 50 ms until `done(body)` (or `seconds`); once it
    has answered, a request that fails counts as long as it waited."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        asked = time.perf_counter()
        try:
            took, _, health = timed(f"{base}/healthz")
        except OSError:
            if times:
                times.append(time.perf_counter() - asked)
            time.sleep(0.01)
            continue
        times.append(took)
        if done(health):
            break
        time.sleep(0.05)
    return times


def bench_faults(work: Path, sources: list[Path]) -> None:
    """9. A directory of 100,000 recordings of which 1,000 are garbage; a disk that
    stalls."""
    print("\n9. Faults")
    flat = work / "flat"
    root = flat / "recordings"
    layout = make_layout("{camera}/%Y-%m-%d_%H-%M-%S.ts", "UTC")
    (root / "cam").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86_400
    for k in range(100_000):
        target = root / layout.format("cam", T0 + k * 10 * S)
        if k % 100 == 99:
            target.write_bytes(os.urandom(188 * 20))  # garbage under a recording's name
            os.utime(target, (two_days_ago, two_days_ago))
        else:
            os.link(sources[k % len(sources)], target)
    port = free_port()
    write_config(flat, root, port, layout.template)
    log = flat / "agent.log"
    process = start_logged(flat, port, log)
    try:
        started = time.perf_counter()
        times = health_until(f"http://127.0.0.1:{port}", lambda h: h["index"]["scan"] == "complete")
        scanned = time.perf_counter() - started
    finally:
        stop(process)
    said = sum("skipping" in line for line in log.read_text(errors="replace").splitlines())
    row("one directory of 100,000: indexed after", f"{scanned:.1f} s")
    row("/healthz meanwhile, p99", f"{pct(times, 0.99):.1f} ms", "<= 50 ms")
    row("/healthz meanwhile, max", f"{max(times) * 1e3:.1f} ms", "<= 50 ms")
    row("1,000 garbage files: warnings", f"{said:,}", "each once")

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import stalling_fs

    if why := stalling_fs.available():
        print(f"   a disk that stalls: not measured ({why})")
        return
    stalled = work / "stalled"
    source = stalled / "disk"
    layout = make_layout("ffmpeg", "UTC")
    for k in range(2_000):
        target = source / layout.format(f"cam{k % 4}", T0 + k // 4 * 10 * S)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[k % len(sources)], target)
    control, port = stalled / "stall", free_port()
    write_config(stalled, stalled / "recordings", port)
    base = f"http://127.0.0.1:{port}"
    with stalling_fs.mounted(source, stalled / "recordings", control):
        process = start_logged(stalled, port, stalled / "agent.log")
        try:
            health_until(base, lambda h: h["index"]["scan"] == "complete")
            control.touch()
            times = health_until(base, lambda h: False, seconds=5)
            said = any("has not answered" in p for p in get(f"{base}/healthz")["problems"])
        finally:
            control.unlink(missing_ok=True)  # the agent stops as soon as its disk answers
            stop(process)
    row("a disk stalled 5 s: /healthz, max", f"{max(times) * 1e3:.1f} ms", "<= 50 ms")
    row("  and it says so", "yes" if said else "no")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


def bench_agent(
    work: Path, root: Path, sources: list[Path], copies: list[Path], links: int, cameras: int
) -> None:
    recordings = links + len(copies)
    port = free_port()
    (work / "agent.toml").write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[recordings]\nroot = "{root}"\n'
        f'[index]\ndatabase = "{work / "index.sqlite3"}"\n'
        f'[playback]\ndir = "{work / "playback"}"\n'
    )
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = start_agent(work, port)
    agent = psutil.Process(process.pid)
    files = recordings
    per_camera = (recordings - len(copies)) // cameras
    try:
        api_up = None
        health_times: list[float] = []
        peak_rss = 0
        while True:
            try:
                took, _, health = timed(f"{base}/healthz")
            except OSError:
                time.sleep(0.01)
                continue
            health_times.append(took)
            peak_rss = max(peak_rss, agent.memory_info().rss)
            api_up = api_up or time.perf_counter() - started
            if health["index"]["segments"] >= files:
                break
            time.sleep(0.05)
        complete = time.perf_counter() - started
        per_file = ffprobe_baseline(sources)
        print(f"\n1. Cold start on {files:,} recordings over {cameras} cameras (warm page cache)")
        row("", "agent", "target", "ffprobe (20 timed)")
        row("API answers after", f"{api_up:.2f} s", "<= 1 s")
        row("index complete after", f"{complete:.1f} s", "<= 900 s (2,000,000)",
            f"{per_file * files:.0f} s")  # fmt: skip
        row("per file", f"{complete / files * 1e3:.3f} ms", "", f"{per_file * 1e3:.1f} ms")
        row("/healthz during the scan, p99", f"{pct(health_times, 0.99):.1f} ms", "<= 50 ms")
        row("/healthz during the scan, max", f"{max(health_times) * 1e3:.1f} ms")
        row("agent RSS during the scan, peak", f"{peak_rss / 2**20:.1f} MiB", "<= 100 MiB")

        # Once scanned, the agent makes the last month's spans and the chains of the
        # latest footage: idle is measured once that is done.
        settling, cpu_before = time.perf_counter(), sum(agent.cpu_times()[:2])
        while time.perf_counter() - settling < 300:
            cpu = sum(agent.cpu_times()[:2])
            time.sleep(1)
            if sum(agent.cpu_times()[:2]) - cpu < 0.1:
                break
        settled = time.perf_counter() - settling - 1
        settle_cpu = sum(agent.cpu_times()[:2]) - cpu_before
        idle_rss = agent.memory_info().rss
        cpu_before = sum(agent.cpu_times()[:2])
        time.sleep(30)
        idle_cpu = (sum(agent.cpu_times()[:2]) - cpu_before) / 30
        layout = make_layout("ffmpeg", "UTC")
        count = 20

        def drop(camera: str, n: int) -> float:
            target = root / layout.format(camera, T0 + n * 10 * S)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(target.name + ".tmp")
            shutil.copyfile(sources[n % len(sources)], temporary)
            os.rename(temporary, target)
            return time.perf_counter()

        latencies = []
        for n in range(count):  # latency: poll /healthz until the segment is counted
            moved = drop("live", n)
            while get(f"{base}/healthz")["index"]["segments"] <= files + n:
                time.sleep(0.005)
            latencies.append(time.perf_counter() - moved)
        cpu_before, wall_before = sum(agent.cpu_times()[:2]), time.perf_counter()
        for n in range(count, 2 * count):  # CPU: no polling, a segment every 0.5 s
            drop("live", n)
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
        index_bytes = sum(
            path.stat().st_size for path in work.glob("index.sqlite3*") if path.is_file()
        )
        print("\n3. After the scan")
        row("last month's spans and chains made in", f"{settled:.0f} s", "",
            f"{settle_cpu:.1f} s CPU")  # fmt: skip
        row("idle RSS", f"{idle_rss / 2**20:.1f} MiB", "<= 100 MiB")
        row("idle CPU, between reconciles", f"{idle_cpu * 100:.2f} %")
        row("index file, bytes per recording", f"{index_bytes / files:.0f} B")
        row("index file", f"{index_bytes / 2**20:.0f} MiB")

        # 4. Queries while recordings arrive from every camera every 10 s.
        arriving = threading.Event()
        last = per_camera + 10

        def arrivals() -> None:
            n = last
            while not arriving.wait(10):
                for c in range(cameras):
                    drop(f"cam{c:02d}", n)
                n += 1

        feeder = threading.Thread(target=arrivals)
        feeder.start()
        try:
            spans_times = []
            for n in range(60):
                camera = f"cam{n % cameras:02d}"
                took, status, _ = timed(f"{base}/api/cameras/{camera}/recordings")
                assert status == 200
                spans_times.append(took)
            rng = random.Random(2)
            post_times = []
            for _ in range(300):
                camera = f"cam{rng.randrange(cameras):02d}"
                start = T0 + rng.randrange(max(1, per_camera * 10 - 3600)) * S
                took, status, answer = timed(
                    f"{base}/api/playback", "POST",
                    {"camera_id": camera, "from": format_us(start),
                     "to": format_us(start + 3600 * S)},
                )  # fmt: skip
                assert status == 201, answer
                post_times.append(took)
                timed(f"{base}/api/playback/{answer['id']}", "DELETE")
        finally:
            arriving.set()
            feeder.join()
        print("\n4. Queries, recordings arriving from every camera every 10 s")
        row("recordings, 31 days (default range), p50", f"{pct(spans_times, 0.5):.1f} ms")
        row("recordings, 31 days (default range), p99", f"{pct(spans_times, 0.99):.1f} ms",
            "<= 50 ms")  # fmt: skip
        row("POST of a 1 h session, p50", f"{pct(post_times, 0.5):.1f} ms")
        row("POST of a 1 h session, p99", f"{pct(post_times, 0.99):.1f} ms", "<= 100 ms")

        # 5. A recorder's retention: a camera's files, at once.
        gone, doomed = len(copies), copies
        before = get(f"{base}/healthz")["index"]["segments"]
        deleted_at = time.perf_counter()
        for path in doomed:
            path.unlink()
        health_times = []
        while True:
            took, _, health = timed(f"{base}/healthz")
            health_times.append(took)
            if health["index"]["segments"] <= before - gone:
                break
            time.sleep(0.02)
        left = time.perf_counter() - deleted_at
        print(f"\n5. {gone:,} recordings deleted at once")
        row("out of the index after", f"{left:.2f} s", "within seconds")
        row("/healthz meanwhile, max", f"{max(health_times) * 1e3:.1f} ms", "<= 50 ms")
    finally:
        stop(process)

    # 6. A restart with the index complete.
    started = time.perf_counter()
    process = start_agent(work, port)
    try:
        api_up = None
        while True:
            try:
                _, status, answer = timed(
                    f"{base}/api/playback", "POST",
                    {"camera_id": "cam01", "from": format_us(T0),
                     "to": format_us(T0 + 3600 * S)},
                )  # fmt: skip
            except OSError:
                time.sleep(0.01)
                continue
            api_up = api_up or time.perf_counter() - started
            if status == 201:
                break
            time.sleep(0.05)
        served = time.perf_counter() - started
    finally:
        stop(process)
    print("\n6. Restart with the index complete")
    row("API answers after", f"{api_up:.2f} s", "<= 1 s")
    row("sessions served after", f"{served:.2f} s", "<= 2 s")
    asyncio.run(bench_reconcile(work, root, idle_cpu))


async def bench_reconcile(work: Path, root: Path, idle_cpu: float) -> None:
    config = load_config(work / "agent.toml")
    fingerprint = {
        "root": str(config.recordings.root),
        "layout": config.layout.template,
        "timezone": config.recordings.timezone,
        "segment_seconds": str(config.playback.segment_seconds),
    }  # as the agent's (app._index): another would rebuild the index
    index = Index(config.index.database, fingerprint)
    await index.open()
    try:
        replaced = []  # the recordings query as it was: the spans of every row, on demand
        for camera in ("cam00", "cam01", "cam02"):
            end = await index.read(functools.partial(index.last_end_sync, camera))
            if end is None:
                continue
            started = time.perf_counter()
            found = await index.segments(camera, end - 31 * 86_400 * S, end)
            spans(found, config.layout.name_resolution_us)
            replaced.append(time.perf_counter() - started)
        indexer = Indexer(root, config.layout, index, config.playback.segment_seconds)
        figures = []
        for n in range(3):
            if n == 2:  # the daily look at every file
                indexing._FULL_LOOK_SECONDS = 0.0
            cpu, wall = time.process_time(), time.perf_counter()
            await indexer.reconcile()
            figures.append((time.perf_counter() - wall, time.process_time() - cpu))
    finally:
        await index.close()
    (first_wall, first_cpu), (quiet_wall, quiet_cpu), (full_wall, full_cpu) = figures
    if replaced:
        print(
            "\n   (4.) the replaced recordings query, 31 days, the spans of every row:"
            f" {statistics.median(replaced) * 1e3:.0f} ms median of {len(replaced)}"
        )
    print("\n7. Reconciles (in this process, on the same index and files)")
    row("first after a start: names listed", f"{first_wall:.2f} s", "",
        f"{first_cpu:.2f} s CPU")  # fmt: skip
    row("next: nothing new (old directories)", f"{quiet_wall:.3f} s", "reads no file",
        f"{quiet_cpu:.3f} s CPU")  # fmt: skip
    row("once a day: every file looked at", f"{full_wall:.2f} s", "", f"{full_cpu:.2f} s CPU")
    average = idle_cpu + quiet_cpu / RECONCILE_SECONDS
    row("idle CPU with a reconcile each 5 min", f"{average * 100:.2f} %", "<= 1 %")


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
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--full", action="store_true", help="2,000,000 recordings over 8 cameras (a month)"
    )
    args = parser.parse_args()
    if args.full:
        args.files, args.cameras, args.rows = 2_000_000, 8, 0
    with tempfile.TemporaryDirectory(prefix="bench-index-") as name:
        work = Path(name)
        started = time.perf_counter()
        root, sources, copies = make_archive(work, args.files, args.cameras)
        made = time.perf_counter() - started
        print(
            f"archive of {args.files:,} hard links and {len(copies):,} copies made in {made:.0f} s"
        )
        bench_agent(work, root, sources, copies, args.files, args.cameras)
        if args.rows:
            asyncio.run(bench_queries(work, args.rows))
        bench_faults(work, sources)


if __name__ == "__main__":
    main()
