"""Demo footage and a demo run: `python -m agent.demo` renders a few minutes of footage
for two cameras with ffmpeg (one with a gap), writes a configuration for it, starts the
agent and prints the URLs to try. The tests render their footage with the same code."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import ffmpeg
from .containers.probe import probe
from .layout import Layout, make_layout

_FORMATS = {
    "ts": ("mpegts", ".ts", []),
    "mp4": ("mp4", ".mp4", ["-reset_timestamps", "1"]),
    "fmp4": (
        "mp4",
        ".mp4",
        ["-segment_format_options", "movflags=+frag_keyframe+empty_moov+default_base_moof"],
    ),
    # MediaMTX's way: a fragment ("part") every interval, whether or not a keyframe
    # starts it (a second, as MediaMTX by default).
    "fmp4_parts": (
        "mp4",
        ".mp4",
        [
            "-segment_format_options",
            "movflags=+empty_moov+default_base_moof:frag_duration=1000000",
        ],
    ),
}


@dataclass(frozen=True)
class Rendered:
    """One rendered segment file and where it starts within its run, in microseconds."""

    path: Path
    offset_us: int


async def render_run(
    out_dir: Path,
    seconds: float,
    segment_seconds: float,
    kind: str = "ts",
    size: str = "640x360",
    rate: int = 25,
    ffmpeg_bin: str = "ffmpeg",
    keyframe_seconds: float | None = None,
    video_bitrate: str | None = None,
    codec: str = "h264",
    reset_timestamps: bool = False,
) -> list[Rendered]:
    """Render one continuous recording (testsrc2 + a tone, AAC audio) cut into segments.

    `codec` "h264" is x264 with B-frames; "hevc" is x265 with its default open GOPs
    (leading pictures shown before each keyframe). `reset_timestamps` restarts every
    segment's timestamps at zero, as many recorders do (MP4 segments always do)."""
    segment_format, suffix, extra = _FORMATS[kind]
    if reset_timestamps and "-reset_timestamps" not in extra:
        extra = [*extra, "-reset_timestamps", "1"]
    keyint = round((keyframe_seconds or segment_seconds) * rate)
    if codec == "hevc":  # x265's own keyframe placement: open GOPs with leading pictures
        video = ["-c:v", "libx265", "-x265-params", f"log-level=error:keyint={keyint}"]
    else:
        video = [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-bf",
            "2",
            "-force_key_frames",
            f"expr:gte(t,n_forced*{keyframe_seconds or segment_seconds:g})",
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    listing = out_dir / "segments.csv"
    argv = [
        ffmpeg_bin,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        f"{seconds:g}",
        *video,
        "-pix_fmt",
        "yuv420p",
        *(
            ["-b:v", video_bitrate, "-maxrate", video_bitrate, "-bufsize", video_bitrate]
            if video_bitrate
            else []
        ),
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "segment",
        "-segment_format",
        segment_format,
        "-segment_time",
        f"{segment_seconds:g}",
        "-segment_list",
        str(listing),
        "-segment_list_type",
        "csv",
        *extra,
        str(out_dir / f"seg%05d{suffix}"),
    ]
    await ffmpeg.run(argv, time_limit=600)
    rows = list(csv.reader((await asyncio.to_thread(listing.read_text)).splitlines()))
    # Each segment starts where the video of the one before ends, as a recorder names them.
    rendered, offset = [], 0
    for row in rows:
        rendered.append(Rendered(out_dir / row[0], offset))
        offset += (await asyncio.to_thread(probe, out_dir / row[0])).duration_us
    return rendered


def place(
    run: list[Rendered], root: Path, layout: Layout, camera: str, start_us: int
) -> list[Path]:
    """Copy a rendered run into `root` as `camera`'s recording starting at `start_us`."""
    placed = []
    for item in run:
        target = root / layout.format(camera, start_us + item.offset_us)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)
        placed.append(target)
    return placed


async def make_demo_footage(root: Path, work: Path, now_us: int) -> None:
    """Four minutes for `front-door`; `yard` has a 40 s gap in the middle of its four."""
    layout = make_layout("ffmpeg", "UTC")
    start = now_us - 240_000_000
    start -= start % 10_000_000
    whole, first, second = await asyncio.gather(
        render_run(work / "whole", 240, 10, size="640x360"),
        render_run(work / "first", 100, 10, size="640x360"),
        render_run(work / "second", 100, 10, size="640x360"),
    )
    place(whole, root, layout, "front-door", start)
    place(first, root, layout, "yard", start)
    place(second, root, layout, "yard", start + 140_000_000)


_CONFIG = """# Demo configuration written by `python -m agent.demo`.
[server]
host = "{host}"
port = {port}

[recordings]
root = "{root}"
layout = "ffmpeg"

[index]
database = "{database}"

[playback]
dir = "{playback}"
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="where to put it all")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on: 127.0.0.1 (the default) for this machine only, 0.0.0.0 to"
        " open the URLs from other machines on the LAN (VLC or Safari on a laptop or phone)",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    args = parser.parse_args(argv)
    base = args.dir.resolve()
    root = base / "recordings"
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed: apt-get install ffmpeg", file=sys.stderr)
        return 1
    # Every run starts clean: the last run's footage, index and sessions go.
    for leftover in (root, base / "render", base / "playback"):
        shutil.rmtree(leftover, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        (base / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    print(f"Rendering demo footage into {root} ...", flush=True)
    asyncio.run(make_demo_footage(root, base / "render", int(time.time() * 1e6)))
    shutil.rmtree(base / "render", ignore_errors=True)
    config = base / "agent.toml"
    config.write_text(
        _CONFIG.format(
            host=args.host,
            port=args.port,
            root=root,
            database=base / "index.sqlite3",
            playback=base / "playback",
        )
    )
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{'localhost' if local == '127.0.0.1' else local}:{args.port}"
    shown = [url]
    if args.host in ("0.0.0.0", "::"):
        shown = [f"http://{address}:{args.port}" for address in _lan_addresses()] or shown
    print(f"\nStarting the agent with {config} ...", flush=True)
    helper = threading.Thread(target=_announce, args=(url, shown), daemon=True)
    helper.start()
    from .__main__ import main as agent_main

    os.chdir(base)
    return agent_main(["--config", str(config)])


def _lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, for URLs that work from the LAN."""
    return sorted(
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET and not address.address.startswith("127.")
    )


def _announce(url: str, shown: list[str]) -> None:
    """Once the agent has indexed the footage, open a session across the gap and print
    the URLs to try (`shown`: the bases a viewer can reach)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310
                index = json.load(response)["index"]
                if index["scan"] == "complete" and index["segments"] >= 44:
                    break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        print("The agent did not index the demo footage in time.", file=sys.stderr)
        return
    with urllib.request.urlopen(f"{url}/api/cameras", timeout=5) as response:  # noqa: S310
        yard = next(c for c in json.load(response)["cameras"] if c["id"] == "yard")
    body = json.dumps(
        {"camera_id": "yard", "from": yard["first_start"], "to": yard["last_end"]}
    ).encode()
    request = urllib.request.Request(f"{url}/api/playback", body, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        session = json.load(response)
    playlists = "".join(f"  {base}{session['playlist_url']}\n" for base in shown)
    where = shown[0]
    pages = "".join(f"  {base}/#camera=yard&t={yard['first_start']}\n" for base in shown)
    print(
        f"\nThe agent is running. Its page, in Chromium, Chrome, Edge or Safari:\n\n{pages}\n"
        "The playback session (yard, four minutes with a 40 s gap), to open in VLC or Safari:"
        f"\n\n{playlists}\n"
        f"  {where}/healthz\n"
        f"  {where}/api/cameras\n"
        f"  {where}/api/cameras/yard/recordings\n"
        f"  {where}/api/playback/{session['id']}\n\n"
        "Stop it with Ctrl-C.\n",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
