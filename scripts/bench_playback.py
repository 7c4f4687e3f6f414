#!/usr/bin/env python3
"""Playback benchmark: the replaced design's one-shot remux and this agent, side by side,
on the same footage in the same run. Prints figures; asserts nothing.

  .venv/bin/python scripts/bench_playback.py [--hours H]

Footage: 720p, 2 Mbit/s H.264 + AAC in 10 s MPEG-TS segments (2.5 MB each), a keyframe
every 2 s. Ten minutes are rendered once (about a minute on 2 cores) and cut into
segments; longer archives are hard links to those sixty files, so --hours 24 needs only
about 160 MB of disk under $TMPDIR, and the recorder's timestamps restart every ten
minutes, as after a recorder restart. The page cache is warm.

For ranges of 5 min, 1 h, 4 h (playback.max_seconds), 6 h and 24 h (those within --hours)
it measures:
- POST time, and time from the request to the first media segment served (the replaced
  design answers only after its remux of the whole range). The agent is measured once
  it has planned each camera's latest max_seconds ahead (raised to the footage's length
  for the run), as after any start, so these sessions are sliced from the camera's
  chain (chains.py; each row says how its session was planned). Then each range once
  more one minute later (sliced, or the chain grown by that minute) and from 50 s before
  the footage (before the chain kept: planned anew, what a session of older footage
  costs);
- bytes written before anyone watches;
- ffmpeg runs and ffmpeg CPU to fetch every segment of the session (from /healthz and
  the agent's children);
- the agent's own CPU per served segment (timestamps and counters rewritten in flight);
- the session's export (GET clip.mp4, laid out from the recordings' sample tables): time
  to its first byte when the tables are read on first use (cold) and when kept (warm),
  its size, throughput and the agent's CPU for it, the agent's RSS growth, and whether a
  download cut at 40 % and resumed (Range, If-Range) is the same file (SHA-256); beside
  ffmpeg's concat export of the same recordings (the design it replaced). Then, after a
  restart, each range's first byte again, the tables read from disk.
The replaced design's remux of 24 h takes minutes; it runs only with --hours 24.

Long recordings: the ten minutes six times over as one hour-long MPEG-TS file (camera
`long`, about 0.9 GB), and sessions of 5 minutes in its middle and of the whole hour:
POST, time to the first media segment, its size, bytes written, ffmpeg runs; beside what
one segment of the session was before long files were served in parts (the whole file
from the cut).

Fragmented MP4 (MediaMTX style, a fragment a second): the same hour as one file (camera
`hour`) and as six ten-minute files (camera `ten`), served by a second agent with the
mediamtx layout: the same figures, beside the remux to MPEG-TS of the file from the cut
that the agent made before fragmented MP4 was served as it is, timed in the same run; and
the clip.mp4 of each hour-long session, cold and warm.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from agent.containers import mpegts
from agent.containers.probe import probe
from agent.demo import render_run
from agent.layout import make_layout
from agent.times import format_us

T0 = 1_795_161_600_000_000  # 2026-11-20T08:00:00Z
S = 1_000_000
RANGES = [("5 min", 300), ("1 h", 3600), ("4 h", 14400), ("6 h", 21600), ("24 h", 86400)]


def say(text: str) -> None:
    print(text, flush=True)


def make_footage(work: Path, seconds: int) -> Path:
    """`seconds` of one camera's recording under work/recordings, in the ffmpeg layout."""
    started = time.perf_counter()
    say("Rendering ten minutes of 720p footage (about a minute) ...")
    segments = asyncio.run(
        render_run(work / "ten", 600, 10, size="1280x720", keyframe_seconds=2, video_bitrate="2M")
    )
    say(f"  rendered in {time.perf_counter() - started:.0f} s; linking {seconds / 3600:g} h ...")
    root = work / "recordings"
    layout = make_layout("ffmpeg", "UTC")
    durations = [probe(item.path).duration_us for item in segments]
    an_hour_ago = time.time() - 3600
    offset = 0
    n = 0
    while offset < seconds * S:  # then the agent's max_seconds covers it all
        item, duration = segments[n % len(segments)], durations[n % len(segments)]
        target = root / layout.format("cam", T0 + offset)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(item.path, target)
        offset += duration
        n += 1
    for item in segments:
        os.utime(item.path, (an_hour_ago, an_hour_ago))
    return root


@dataclass
class Exported:
    """One clip.mp4 measured: cold (sample tables read from the recordings on first use)
    and warm (read again, the page cache warm), with what ffmpeg's concat export of the
    same recordings (the design clip.mp4 replaced) took in the same run."""

    size: int
    cold_first_byte: float
    warm_first_byte: float
    warm_seconds: float
    agent_cpu: float  # the agent's CPU seconds for the warm download
    rss_growth: int  # the agent's largest RSS during the downloads, over its RSS before
    resumed_same: bool  # cut at 40 %, resumed with Range and If-Range: the same SHA-256
    ffmpeg_first_byte: float
    ffmpeg_seconds: float
    ffmpeg_size: int


def download(url: str, agent: psutil.Process, headers: dict[str, str] | None = None
             ) -> tuple[float, float, int, str, int]:  # fmt: skip
    """GET `url`: seconds to the first byte, in all, bytes, SHA-256, the agent's largest
    RSS meanwhile."""
    digest = hashlib.sha256()
    started = time.perf_counter()
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=600) as answer:
        chunk = answer.read(1)
        first_byte = time.perf_counter() - started
        size, rss = 0, agent.memory_info().rss
        while chunk:
            size += len(chunk)
            digest.update(chunk)
            rss = max(rss, agent.memory_info().rss)
            chunk = answer.read(1 << 20)
    return first_byte, time.perf_counter() - started, size, digest.hexdigest(), rss


def export(url: str, agent: psutil.Process, files: list[Path], seconds: int) -> Exported:
    before = agent.memory_info().rss
    cold, _, _, _, rss_cold = download(url, agent)
    cpu = agent.cpu_times()
    warm, took, size, whole, rss_warm = download(url, agent)
    after = agent.cpu_times()
    etag = urllib.request.urlopen(urllib.request.Request(url, method="HEAD")).headers["ETag"]
    cut = size * 4 // 10
    digest = hashlib.sha256()
    for wanted in (f"bytes=0-{cut - 1}", f"bytes={cut}-"):
        request = urllib.request.Request(url, headers={"Range": wanted, "If-Range": etag})
        with urllib.request.urlopen(request, timeout=600) as answer:
            while chunk := answer.read(1 << 20):
                digest.update(chunk)
    ffmpeg_first, ffmpeg_took, ffmpeg_size = ffmpeg_export(files, seconds)
    return Exported(
        size, cold, warm, took, (after.user + after.system) - (cpu.user + cpu.system),
        max(rss_cold, rss_warm) - before, digest.hexdigest() == whole,
        ffmpeg_first, ffmpeg_took, ffmpeg_size,
    )  # fmt: skip


def ffmpeg_export(files: list[Path], seconds: int) -> tuple[float, float, int]:
    """The export clip.mp4 replaced: ffmpeg's concat demuxer over the recordings, stream
    copy to fragmented MP4 on a pipe. Seconds to its first byte, in all, and bytes."""
    with tempfile.NamedTemporaryFile("w", suffix=".ffconcat", delete=False) as listing:
        listing.write("ffconcat version 1.0\n" + "".join(f"file '{f}'\n" for f in files))
    started = time.perf_counter()
    process = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "concat",
         "-safe", "0", "-i", listing.name, "-map", "0:v:0", "-map", "0:a?", "-c", "copy",
         "-bsf:a", "aac_adtstoasc", "-t", str(seconds), "-movflags",
         "frag_keyframe+empty_moov+default_base_moof+skip_trailer", "-f", "mp4", "pipe:1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    chunk = process.stdout.read(1)
    first_byte = time.perf_counter() - started
    size = 0
    while chunk:
        size += len(chunk)
        chunk = process.stdout.read(1 << 20)
    process.wait()
    os.unlink(listing.name)
    return first_byte, time.perf_counter() - started, size


def clip_first_byte(base: str, seconds: int) -> float:
    """A new session's clip.mp4 from the footage's start: seconds from its GET to its
    first byte."""
    body = {"camera_id": "cam", "from": format_us(T0 + 3_500_000),
            "to": format_us(T0 + 3_500_000 + seconds * S)}  # fmt: skip
    session = json.loads(get(f"{base}/api/playback", "POST", body))
    url = base + session["playlist_url"].replace("index.m3u8", "clip.mp4")
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as answer:
        answer.read(1)
        return time.perf_counter() - started


def range_files(root: Path, start_us: int, seconds: int) -> list[Path]:
    """The recordings under `root` (ffmpeg layout, 10 s files) that a range touches."""
    layout = make_layout("ffmpeg", "UTC")
    end_us = start_us + seconds * S
    found = []
    for path in sorted(root.rglob("*.ts")):
        name = layout.parse(path.relative_to(root).as_posix())
        if name is not None and name.start_us < end_us and name.start_us + 11 * S > start_us:
            found.append(path)
    return found


def long_file(work: Path, root: Path) -> Path:
    """The rendered ten minutes, six times over, as one hour-long MPEG-TS file."""
    say("Writing one hour-long MPEG-TS file (ffmpeg -c copy, about 0.9 GB) ...")
    files = sorted((work / "ten").glob("*.ts"))
    listing = work / "hour.ffconcat"
    listing.write_text(
        "ffconcat version 1.0\n" + "".join(f"file '{f}'\n" for _ in range(6) for f in files)
    )
    target = root / make_layout("ffmpeg", "UTC").format("long", T0)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c", "copy", "-f", "mpegts", str(target)],
        check=True,
    )  # fmt: skip
    an_hour_ago = time.time() - 3600
    os.utime(target, (an_hour_ago, an_hour_ago))
    return target


def long_sessions(base: str, work: Path, target: Path) -> None:
    """Sessions over the hour-long file, timed as a player would use them."""
    size = target.stat().st_size
    print(f"\nOne {size / 1e9:.2f} GB, one-hour MPEG-TS recording:")
    for label, offset, seconds in (("5 min", 1200, 300), ("1 h", 0, 3590)):
        start_us = T0 + offset * S + 3_500_000
        runs_before = json.loads(get(f"{base}/healthz"))["admission"]["started"]
        started = time.perf_counter()
        body = {"camera_id": "long", "from": format_us(start_us),
                "to": format_us(start_us + seconds * S)}  # fmt: skip
        session = json.loads(get(f"{base}/api/playback", "POST", body))
        posted = time.perf_counter() - started
        playlist = get(base + session["playlist_url"]).decode()
        names = [line for line in playlist.splitlines() if line.endswith(".ts")]
        media = base + session["playlist_url"].rsplit("/", 1)[0]
        first_bytes = len(get(f"{media}/{names[0]}"))
        first = time.perf_counter() - started
        written = du(work / "playback" / session["id"])
        runs = json.loads(get(f"{base}/healthz"))["admission"]["started"] - runs_before
        whole = size * (3600 - offset) // 3600
        print(
            f"  {label:6} POST {posted * 1e3:4.0f} ms, first segment after {first:.3f} s"
            f" ({first_bytes / 1e6:.1f} MB; before: the whole file from the cut, about"
            f" {whole / 1e6:.0f} MB), {len(names)} segments, {written / 1e3:.0f} kB written,"
            f" {runs} ffmpeg runs"
        )
        get(f"{base}/api/playback/{session['id']}", "DELETE")


def fmp4_files(work: Path) -> Path:
    """The rendered ten minutes six times over as MediaMTX writes fragmented MP4 (a
    fragment a second): one hour-long file, and six ten-minute files."""
    say("Writing the hour as fragmented MP4: one file, and six of ten minutes ...")
    files = sorted((work / "ten").glob("*.ts"))
    listing = work / "hour.ffconcat"
    listing.write_text(
        "ffconcat version 1.0\n" + "".join(f"file '{f}'\n" for _ in range(6) for f in files)
    )
    root = work / "mediamtx"
    layout = make_layout("mediamtx", "UTC")
    hour = root / layout.format("hour", T0)
    tens = root / "ten"
    for directory in (hour.parent, tens, work / "split"):
        directory.mkdir(parents=True, exist_ok=True)
    fragments = ["-movflags", "+empty_moov+default_base_moof", "-frag_duration", "1000000"]
    # The sound encoded anew: an MP4 whose moov is written first (empty_moov) gets no AAC
    # configuration from MPEG-TS's ADTS, which only the packets carry.
    codecs = ["-c:v", "copy", "-c:a", "aac", "-b:a", "64k"]
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
         *codecs, *fragments, "-f", "mp4", str(hour)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
         *codecs, "-f", "segment", "-segment_time", "600", "-segment_format", "mp4",
         "-segment_format_options", "movflags=+empty_moov+default_base_moof:frag_duration=1000000",
         "-segment_list", str(work / "split" / "list.csv"), "-segment_list_type", "csv",
         str(work / "split" / "part%d.mp4")],
        check=True,
    )  # fmt: skip
    offset = 0
    for row in (work / "split" / "list.csv").read_text().splitlines():
        part = work / "split" / row.split(",")[0]
        os.replace(part, root / layout.format("ten", T0 + offset))
        offset += probe(root / layout.format("ten", T0 + offset)).duration_us
    an_hour_ago = time.time() - 3600
    for path in root.rglob("*.mp4"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    return root


def remux_ts(source: Path, work: Path, seek: float) -> tuple[float, int]:
    """What the agent did before fragmented MP4 was served as it is: the recording from
    the keyframe at `seek` remuxed to MPEG-TS, as one segment. Seconds and bytes."""
    target = work / "remuxed.ts"
    started = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{seek:.3f}", "-copyts",
         "-i", str(source), "-map", "0:v:0", "-map", "0:a?", "-c", "copy",
         "-f", "mpegts", str(target)],
        check=True,
    )  # fmt: skip
    took, size = time.perf_counter() - started, target.stat().st_size
    target.unlink()
    os.sync()  # its writes are not left to the disk while the agent is measured
    return took, size


def fmp4_sessions(base: str, work: Path, root: Path, agent: psutil.Process) -> None:
    """Sessions over the fragmented MP4 recordings, timed as a player would use them, and
    the hour's clip.mp4 (its samples read with pread, no packets to strip)."""
    hour = root / make_layout("mediamtx", "UTC").format("hour", T0)
    print(f"\nFragmented MP4 (MediaMTX style), {hour.stat().st_size / 1e9:.2f} GB an hour:")
    for camera, label, offset, seconds in (
        ("hour", "5 min", 1200, 300), ("hour", "1 h", 0, 3590),
        ("ten", "5 min", 1200, 300), ("ten", "1 h", 0, 3590),
    ):  # fmt: skip
        start_us = T0 + offset * S + 3_500_000
        runs_before = json.loads(get(f"{base}/healthz"))["admission"]["started"]
        started = time.perf_counter()
        body = {"camera_id": camera, "from": format_us(start_us),
                "to": format_us(start_us + seconds * S)}  # fmt: skip
        session = json.loads(get(f"{base}/api/playback", "POST", body))
        posted = time.perf_counter() - started
        lines = get(base + session["playlist_url"]).decode().splitlines()
        names = [line for line in lines if line.endswith(".m4s")]
        init = next(line for line in lines if line.startswith("#EXT-X-MAP:")).split('"')[1]
        media = base + session["playlist_url"].rsplit("/", 1)[0]
        first_bytes = len(get(f"{media}/{init}")) + len(get(f"{media}/{names[0]}"))
        first = time.perf_counter() - started
        written = du(work / "playback" / session["id"])
        for name in names[1:]:
            get(f"{media}/{name}")
        runs = json.loads(get(f"{base}/healthz"))["admission"]["started"] - runs_before
        if camera == "hour":
            source, seek = hour, offset + 3.5
        else:
            source, seek = sorted((root / "ten").glob("*.mp4"))[offset // 600], 3.5 + offset % 600
        old_time, old_bytes = remux_ts(source, work, seek)
        print(
            f"  {camera:4} {label:6} POST {posted * 1e3:4.0f} ms, first segment after"
            f" {first:.3f} s ({first_bytes / 1e6:.1f} MB), {written / 1e3:.0f} kB written,"
            f" {len(names)} segments, {runs} ffmpeg runs watching it all; before: the"
            f" recording from the cut remuxed first, {old_time:.2f} s, {old_bytes / 1e6:.0f} MB"
        )
        if label == "1 h":
            cold, *_ = download(f"{media}/clip.mp4", agent)
            cpu = agent.cpu_times()
            warm, took, size, _, _ = download(f"{media}/clip.mp4", agent)
            after = agent.cpu_times()
            used = (after.user + after.system) - (cpu.user + cpu.system)
            print(
                f"  {camera:4} {label:6} clip.mp4: first byte cold {cold:.3f} s, warm"
                f" {warm:.3f} s; {size / 1e6:.0f} MB in {took:.1f} s ({size / 1e6 / took:.0f}"
                f" MB/s, {size / 1e6 / max(used, 1e-9):.0f} MB per agent CPU second)"
            )
        get(f"{base}/api/playback/{session['id']}", "DELETE")


def timed_post(base: str, start_us: int, seconds: int) -> tuple[float, float]:
    """Seconds to answer a session's POST, and to its first media segment (playlist and
    first segment fetched); the session is deleted after."""
    body = {"camera_id": "cam", "from": format_us(start_us),
            "to": format_us(start_us + seconds * S)}  # fmt: skip
    started = time.perf_counter()
    session = json.loads(get(f"{base}/api/playback", "POST", body))
    posted = time.perf_counter() - started
    playlist = get(base + session["playlist_url"]).decode()
    first_name = next(line for line in playlist.splitlines() if line.endswith(".ts"))
    get(base + session["playlist_url"].rsplit("/", 1)[0] + "/" + first_name)
    first = time.perf_counter() - started
    get(f"{base}/api/playback/{session['id']}", "DELETE")
    return posted, first


def start_agent(
    work: Path, name: str, root: Path, layout: str, longest: int, log_level: str
) -> tuple[subprocess.Popen[bytes], str]:
    """An agent on `root` (its state under work/name), once it has planned ahead after
    its first scan."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = work / name
    state.mkdir(exist_ok=True)
    (state / "agent.toml").write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[recordings]\nroot = "{root}"\nlayout = "{layout}"\n'
        f'[index]\ndatabase = "{state / "index.db"}"\n'
        f'[playback]\ndir = "{work / "playback"}"\nmax_seconds = {longest + 60}\n'
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(state / "agent.toml"),
         "--log-level", log_level],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            health = json.loads(get(f"{base}/healthz"))
            # Planned ahead after the first scan: every camera's latest max_seconds.
            if health["sessions"]["plans"]["planned_ahead"]:
                return agent, base
        except OSError:
            pass
        if agent.poll() is not None:
            raise SystemExit(f"the agent on {root} stopped")
        time.sleep(0.1)


def rewrite_ms(root: Path) -> tuple[float, int]:
    """Milliseconds of CPU for one segment's in-flight rewrite (timestamps and every PID's
    counters), in this process, and the segment's size."""
    path = min(root.rglob("*.ts"))
    data = path.read_bytes()
    shift, counters = 123_456_789, {0: 1, 17: 2, 256: 3, 257: 4, 4096: 5}
    started = time.process_time()
    for _ in range(50):
        mpegts.rewrite(bytearray(data), shift, counters)
    return (time.process_time() - started) / 50 * 1e3, len(data)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def original(root: Path, work: Path, start_us: int, seconds: int) -> tuple[float, int, float]:
    """The replaced design: one ffmpeg concat + HLS remux of the whole range, then answer."""
    layout = make_layout("ffmpeg", "UTC")
    end_us = start_us + seconds * S
    files, first_start = [], None
    for path in sorted(root.rglob("*.ts")):
        name = layout.parse(path.relative_to(root).as_posix())
        assert name is not None
        if name.start_us < end_us and name.start_us + 11 * S > start_us:
            files.append(path)
            first_start = name.start_us if first_start is None else first_start
    assert first_start is not None
    out = work / "original"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    listing = out / "concat.txt"
    listing.write_text("".join(f"file '{f}'\n" for f in files))
    ss = (start_us - first_start) / S
    cpu = children_cpu()
    started = time.perf_counter()
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-ss",
            f"{ss:.3f}",
            "-t",
            f"{seconds:.3f}",
            "-c",
            "copy",
            "-avoid_negative_ts",
            "make_zero",
            "-f",
            "hls",
            "-hls_time",
            "10",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            str(out / "seg_%05d.ts"),
            str(out / "index.m3u8"),
        ],
        check=True,
    )
    elapsed = time.perf_counter() - started
    listing.unlink()
    written = du(out)
    shutil.rmtree(out)
    # Its gigabytes are not left to the disk while the agent is measured next: the
    # agent's fsync of a new session's files would wait behind them.
    os.sync()
    return elapsed, written, children_cpu() - cpu


def get(url: str, method: str = "GET", body: object = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        return bytes(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=1,
        help="longest range to measure, in hours (ranges: 5 min, 1 h, 4 h, 6 h, 24 h; default 1)",
    )
    parser.add_argument(
        "--agent-log-level",
        default="WARNING",
        help="the agents' --log-level (INFO shows how long each session took to plan and write)",
    )
    args = parser.parse_args()
    longest = int(args.hours * 3600)
    ranges = [(name, s) for name, s in RANGES if s <= longest]
    with tempfile.TemporaryDirectory(prefix="bench-playback-") as name:
        work = Path(name)
        root = make_footage(work, longest + 20)
        hour = long_file(work, root)
        per_segment_ms, segment_bytes = rewrite_ms(root)
        mediamtx = fmp4_files(work)
        say("Starting the agent and waiting for its first scan ...")
        agent, base = start_agent(work, "ts", root, "ffmpeg", longest, args.agent_log_level)
        try:
            process = psutil.Process(agent.pid)
            rows = []
            exports: list[tuple[str, Exported]] = []
            for label, seconds in ranges:
                say(f"Session of {label}: the agent, then the replaced design's remux ...")
                start_us = T0 + 3_500_000  # mid-segment, between keyframes
                health = json.loads(get(f"{base}/healthz"))
                runs_before = health["admission"]["started"]
                plans_before = health["sessions"]["plans"]
                before = process.cpu_times()
                started = time.perf_counter()
                session = json.loads(
                    get(
                        f"{base}/api/playback",
                        "POST",
                        {
                            "camera_id": "cam",
                            "from": format_us(start_us),
                            "to": format_us(start_us + seconds * S),
                        },
                    )
                )
                posted = time.perf_counter() - started
                plans = json.loads(get(f"{base}/healthz"))["sessions"]["plans"]
                how = next(k for k in ("sliced", "grown", "planned") if plans[k] > plans_before[k])
                written = du(work / "playback" / session["id"])
                playlist = get(base + session["playlist_url"]).decode()
                names = [line for line in playlist.splitlines() if line.endswith(".ts")]
                media = base + session["playlist_url"].rsplit("/", 1)[0]
                get(f"{media}/{names[0]}")
                first = time.perf_counter() - started
                for name in names[1:]:
                    get(f"{media}/{name}")
                after = process.cpu_times()
                ffmpeg_cpu = (after.children_user + after.children_system) - (
                    before.children_user + before.children_system
                )
                agent_cpu = (after.user + after.system) - (before.user + before.system)
                runs = json.loads(get(f"{base}/healthz"))["admission"]["started"] - runs_before
                files = range_files(root, start_us, seconds)
                exports.append((label, export(f"{media}/clip.mp4", process, files, seconds)))
                old_time, old_bytes, old_cpu = original(root, work, start_us, seconds)
                rows.append(
                    (
                        label,
                        posted,
                        first,
                        written,
                        ffmpeg_cpu,
                        agent_cpu,
                        old_time,
                        old_bytes,
                        old_cpu,
                        len(names),
                        runs,
                        how,
                    )
                )
                get(f"{base}/api/playback/{session['id']}", "DELETE")
            # Each from before the footage, a little earlier than the last: each starts
            # before the chain kept.
            later = [timed_post(base, T0 + 63_500_000, seconds) for _, seconds in ranges]
            anew = [
                timed_post(base, T0 - (50 + n) * S, seconds)
                for n, (_, seconds) in enumerate(ranges)
            ]
            chained = list(zip([label for label, _ in ranges], later, anew, strict=True))
            long_sessions(base, work, hour)
        finally:
            agent.terminate()
            agent.wait(10)
        say("Restarting the agent: clips whose sample tables are kept on disk ...")
        agent, base = start_agent(work, "ts", root, "ffmpeg", longest, args.agent_log_level)
        try:
            from_disk = [(label, clip_first_byte(base, seconds)) for label, seconds in ranges]
        finally:
            agent.terminate()
            agent.wait(10)
        say("Starting an agent on the fragmented MP4 (mediamtx layout) ...")
        agent, base = start_agent(
            work, "mediamtx", mediamtx, "mediamtx", longest, args.agent_log_level
        )
        try:
            fmp4_sessions(base, work, mediamtx, psutil.Process(agent.pid))
        finally:
            agent.terminate()
            agent.wait(10)
    print()
    print(
        f"{'range':7}| {'to first segment':>22} | {'written before watching':>25} |"
        f" {'ffmpeg CPU, whole session':>27} | agent, serving every segment"
    )
    print(
        f"{'':7}| {'original':>10} {'agent':>11} | {'original':>12} {'agent':>12} |"
        f" {'original':>13} {'agent':>13} |"
    )
    for row in rows:
        label, posted, first, written, cpu, agent_cpu, o_time, o_bytes, o_cpu, n, runs, how = row
        print(
            f"{label:7}| {o_time:>9.2f}s {first:>10.3f}s | {o_bytes / 1e6:>10.1f}MB"
            f" {written / 1e6:>10.3f}MB | {o_cpu:>12.2f}s {cpu:>12.2f}s |"
            f" {agent_cpu / n * 1e3:.1f} ms CPU a segment, {runs} ffmpeg runs"
            f" ({n} segments; POST {posted * 1e3:.0f} ms, {how})"
        )
    print(
        "\nPOST to first segment, one minute later (the camera's chain kept: sliced, or grown"
        " by a minute) and from before the footage (before the chain kept: planned anew)"
    )
    for label, (kept_post, kept_first), (anew_post, anew_first) in chained:
        print(
            f"  {label:6} kept chain {kept_first:.3f} s (POST {kept_post * 1e3:.0f} ms),"
            f" planned anew {anew_first:.3f} s (POST {anew_post * 1e3:.0f} ms)"
        )
    print(
        "\nclip.mp4 (progressive MP4 from the recordings' samples) beside ffmpeg's concat"
        " export of the same recordings (fragmented MP4 on a pipe):"
    )
    for label, e in exports:
        print(
            f"  {label:6} first byte cold {e.cold_first_byte:.3f} s, warm"
            f" {e.warm_first_byte:.3f} s; {e.size / 1e6:.0f} MB in {e.warm_seconds:.1f} s"
            f" ({e.size / 1e6 / e.warm_seconds:.0f} MB/s,"
            f" {e.size / 1e6 / max(e.agent_cpu, 1e-9):.0f} MB per agent CPU second);"
            f" RSS +{e.rss_growth / 2**20:.0f} MB; resumed at 40 %:"
            f" {'identical' if e.resumed_same else 'DIFFERENT'} | ffmpeg: first byte"
            f" {e.ffmpeg_first_byte:.3f} s, {e.ffmpeg_size / 1e6:.0f} MB"
            f" in {e.ffmpeg_seconds:.1f} s"
        )
    print(
        "  after a restart, the sample tables read from disk (samples.sqlite3): first byte "
        + ", ".join(f"{label} {first:.3f} s" for label, first in from_disk)
    )
    print(
        f"\nIn-flight rewrite of one {segment_bytes / 1e6:.1f} MB segment (timestamps and every"
        f" PID's counters), in-process: {per_segment_ms:.1f} ms CPU"
    )


if __name__ == "__main__":
    main()
