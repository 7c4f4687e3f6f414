#!/usr/bin/env python3
"""Scrub previews: prints figures; asserts nothing.

  .venv/bin/python scripts/bench_preview.py [--hovers 40]

Two minutes of 720p H.264 (2 Mbit/s, 10 s MPEG-TS files, a keyframe every 2 s) under a
real agent; headless Chromium opens the page on that camera, zoomed to 10 minutes, and
the pointer is moved over the timeline to --hovers times spread over the footage, twice
(the first pass reads each recording's sample tables on first use; the second finds the
page's own answers kept, so it measures the decode alone). For each pass: the time from
the pointer's move to the picture drawn (the page's own measure: the keyframe asked of
the box, decoded by the browser with WebCodecs), p50, p95 and max; and the agent's CPU
per preview. Beside it, what the
box-side way would cost: ffmpeg decoding the same moment of the recording and writing
a 192-pixel JPEG, its time and CPU per thumbnail. Then 16x play from the start: the
page's scan of keyframes, and (beside it) the browser decoding every frame at
playbackRate 16, each in a browser of its own (nothing cached): the agent's CPU a minute
of each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_playback import start_agent

from agent.demo import place, render_run
from agent.layout import make_layout
from tests.players import Chromium

T0 = 1_795_161_600_000_000  # 2026-11-20T08:00:00Z
SECONDS = 120


async def hover_pass(browser: Chromium, times: list[int]) -> list[float]:
    """Move the pointer over each time; the page's milliseconds to each picture."""
    took = []
    for t_us in times:
        spot = await browser.evaluate(
            f"""(() => {{ const r = document.getElementById('timeline').getBoundingClientRect();
            const s = document.querySelector('#spans .span');
            const from = Date.parse(s.dataset.from), to = Date.parse(s.dataset.to);
            const b = s.getBoundingClientRect();
            return {{x: b.left + b.width * ({t_us // 1000} - from) / (to - from),
                     y: r.top + r.height / 2}}; }})()"""
        )
        await browser.evaluate("delete document.getElementById('preview').dataset.ms")
        await browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=spot["x"], y=spot["y"])
        ms = await browser.wait_for("document.getElementById('preview').dataset.ms", timeout=30)
        took.append(float(ms))
    return took


async def scan_cost(browser: Chromium, process: psutil.Process, how: str) -> str:
    """The agent's CPU a minute of 16x play from the footage's start: the page's scan of
    keyframes (its 16x button), or the browser decoding every frame (playbackRate 16)."""
    video = "document.getElementById('video')"
    await browser.evaluate(f"{video}.pause(); {video}.currentTime = 0")
    await browser.wait_for(f"!{video}.seeking && {video}.currentTime < 0.5")
    before = process.cpu_times()
    started = time.perf_counter()
    if how == "keyframes":
        await browser.evaluate("document.querySelector('#speeds [data-speed=\"16\"]').click()")
    else:
        await browser.evaluate(f"{video}.playbackRate = 16; {video}.play()")
    end = SECONDS - 12
    await browser.wait_for(f"{video}.currentTime > {end}", timeout=120)
    seconds = time.perf_counter() - started
    after = process.cpu_times()
    await browser.evaluate("document.querySelector('#speeds [data-speed=\"1\"]').click()")
    await browser.evaluate(f"{video}.pause(); {video}.playbackRate = 1")
    used = (after.user - before.user) + (after.system - before.system)
    return (
        f"  16x, {how}: {end} s of footage in {seconds:.1f} s; agent CPU"
        f" {used / seconds * 60:.2f} s a minute of it"
    )


def ffmpeg_thumbnail(path: Path, seconds: float, out: Path) -> tuple[float, float]:
    """Seconds and CPU seconds for ffmpeg to make a 192-pixel JPEG of a moment."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", f"{seconds:.3f}", "-i", str(path),
         "-frames:v", "1", "-vf", "scale=192:-2", str(out)],
        check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def figures(label: str, took: list[float], cpu: float) -> str:
    took = sorted(took)
    p95 = took[max(0, int(len(took) * 0.95) - 1)]
    return (
        f"  {label}: pointer to picture p50 {statistics.median(took):.0f} ms, p95 {p95:.0f} ms,"
        f" max {took[-1]:.0f} ms; agent CPU {cpu * 1e3:.1f} ms a preview"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hovers", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-preview.") as name:
        work = Path(name)
        print(f"Rendering {SECONDS} s of 720p footage ...", flush=True)
        runs = await render_run(
            work / "render", SECONDS, 10, size="1280x720", keyframe_seconds=2,
            video_bitrate="2M",
        )  # fmt: skip
        root = work / "recordings"
        placed = place(runs, root, make_layout("ffmpeg", "UTC"), "cam", T0)
        an_hour_ago = time.time() - 3600  # an archive: every file indexed at the first scan
        for path in placed:
            os.utime(path, (an_hour_ago, an_hour_ago))
        agent, base = start_agent(work, "state", root, "ffmpeg", 3600, "WARNING")
        process = psutil.Process(agent.pid)
        step = SECONDS * 1_000_000 // (args.hovers + 1)
        times = [T0 + step * (n + 1) for n in range(args.hovers)]
        lines = []
        try:
            async with Chromium() as browser:
                await browser.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=1200, height=860, deviceScaleFactor=1, mobile=False,
                )  # fmt: skip
                await browser.navigate(f"{base}/#camera=cam&t=2026-11-20T08:00:00Z")
                await browser.wait_for("!!document.querySelector('#spans .span')")
                await browser.evaluate(
                    "document.querySelector('#zoom [data-zoom=\"600000\"]').click()"
                )
                for label in ("first pass (tables read on first use)", "second pass (kept)"):
                    before = process.cpu_times()
                    took = await hover_pass(browser, times)
                    after = process.cpu_times()
                    used = (after.user - before.user) + (after.system - before.system)
                    lines.append(figures(label, took, used / len(times)))
            for how in ("keyframes", "every frame"):  # each in a browser of its own (cache)
                async with Chromium() as fresh:
                    await fresh.navigate(f"{base}/#camera=cam&t=2026-11-20T08:00:00Z")
                    await fresh.wait_for(
                        "(v => v && v.readyState >= 2)(document.getElementById('video'))"
                    )
                    lines.append(await scan_cost(fresh, process, how))
        finally:
            agent.terminate()
            agent.wait()
        walls: list[float] = []
        cpus: list[float] = []
        for t_us in times[:10]:
            k = (t_us - T0) // 10_000_000
            wall, cpu = ffmpeg_thumbnail(placed[k], (t_us - T0) / 1e6 - 10 * k, work / "t.jpg")
            walls.append(wall)
            cpus.append(cpu)
        print(f"\nScrub previews, {args.hovers} moments of {SECONDS} s of 720p, in Chromium:")
        print("\n".join(lines))
        print(
            f"  beside it, ffmpeg making a 192-pixel JPEG of the moment on the box: "
            f"{statistics.median(walls) * 1e3:.0f} ms and {statistics.median(cpus) * 1e3:.0f} ms"
            " of CPU a thumbnail (median of 10)"
        )


if __name__ == "__main__":
    asyncio.run(main())
