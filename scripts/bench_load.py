#!/usr/bin/env python3
"""Load benchmark: prints figures; asserts nothing. The client is aiohttp's (no wrk).

  .venv/bin/python scripts/bench_load.py [--sessions 0,1000,10000] [--seconds 10]

On one hour of 320x240 footage in 10 s TS segments (rendered in a few seconds, about
40 MB under $TMPDIR, plus about 25 MB per 1,000 sessions on disk):
1. /healthz and /api/cameras latency (p50, p99) with nothing else running, and while 32
   clients fetch media segments as fast as they can (media segments a second); /healthz
   latency while 200 clients read media at 1 KB a second;
2. POST /api/playback of one-hour sessions a second (16 clients);
3. for each number of sessions on disk (copies of one real session, with ids of their
   own): the agent's RSS after start and after serving one segment of each of up to
   1,000 of them, the time from start to /healthz answering, and to every session
   loaded (in the background; requests for a session wait for it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import psutil

from agent.demo import place, render_run
from agent.ids import new_session_id
from agent.layout import make_layout
from agent.times import format_us, parse_rfc3339

T0 = 1_795_161_600_000_000
S = 1_000_000


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(work: Path, root: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    (work / "agent.toml").write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[recordings]\nroot = "{root}"\n'
        f'[index]\ndatabase = "{work / "index.db"}"\n'
        f'[playback]\ndir = "{work / "pb"}"\nmax_sessions = 1000000\n'
    )
    started = time.perf_counter()
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(work / "agent.toml"),
         "--log-level", "WARNING"],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.02)
    return agent, base, time.perf_counter() - started


async def latencies(http: aiohttp.ClientSession, url: str, seconds: float) -> list[float]:
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        async with http.get(url) as answer:
            await answer.read()
        found.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return sorted(found)


def p(values: list[float], q: float) -> str:
    return f"{values[min(len(values) - 1, int(len(values) * q))] * 1e3:.1f} ms"


async def load(base: str, seconds: float) -> None:
    body = {"camera_id": "cam", "from": format_us(T0), "to": format_us(T0 + 3600 * S)}
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{base}/healthz") as answer:
                if (await answer.json())["index"]["scan"] == "complete":
                    break
            await asyncio.sleep(0.1)
        async with http.post(f"{base}/api/playback", json=body) as answer:
            session = await answer.json()
        media = base + session["playlist_url"].rsplit("/", 1)[0]
        for path in ("/healthz", "/api/cameras"):
            found = await latencies(http, base + path, seconds / 2)
            say(f"{path:14} unloaded:      p50 {p(found, 0.5)}, p99 {p(found, 0.99)}")
        # The media load runs in a process of its own, so that the latencies measured
        # here are the agent's, not this client's.
        fetcher = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--fetch", media, str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1)
        for path in ("/healthz", "/api/cameras"):
            found = await latencies(http, base + path, (seconds - 2) / 2)
            say(f"{path:14} media-loaded:  p50 {p(found, 0.5)}, p99 {p(found, 0.99)}")
        out, _ = await fetcher.communicate()
        say(f"media segments served: {float(out):.0f} a second (32 clients, 85 kB segments)")
        slow = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--slow", media, str(seconds + 2),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(2)  # all of them connected and reading
        found = await latencies(http, base + "/healthz", seconds)
        out, _ = await slow.communicate()
        say(
            f"/healthz       200 slow:      p50 {p(found, 0.5)}, p99 {p(found, 0.99)}"
            f" (200 clients reading media at 1 KB/s; {int(out)} of them still reading at the end)"
        )
        posted = 0
        stop = asyncio.Event()

        async def poster() -> None:
            nonlocal posted
            while not stop.is_set():
                async with http.post(f"{base}/api/playback", json=body) as answer:
                    await answer.read()
                    posted += answer.status == 201

        started = time.perf_counter()
        posters = [asyncio.create_task(poster()) for _ in range(16)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*posters, return_exceptions=True)
        say(f"POST of one-hour sessions: {posted / (time.perf_counter() - started):.0f} a second")


async def slow_readers(media: str, seconds: float) -> int:
    """200 clients each reading a media segment at 1 KB a second, with a 4 KB receive
    buffer so that the agent's writes wait on them; how many were still reading (not cut
    off) at the end."""
    url = urllib.parse.urlsplit(media)
    deadline = time.monotonic() + seconds
    reading = 0

    async def reader(n: int) -> None:
        nonlocal reading
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port))
        stream, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET {url.path}/s{n % 360:06d}.ts HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            while time.monotonic() < deadline:
                if not await stream.read(1024):
                    return
                await asyncio.sleep(1)
            reading += 1
        finally:
            writer.close()

    await asyncio.gather(*(reader(n) for n in range(200)), return_exceptions=True)
    return reading


async def touch_sessions(base: str, ids: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for session_id in ids:
            async with http.get(f"{base}/media/playback/{session_id}/s000000.ts") as answer:
                await answer.read()


async def fetch(media: str, seconds: float) -> float:
    """32 clients fetching the session's segments as fast as they can; segments a second."""
    served = 0
    deadline = time.monotonic() + seconds

    async def client(n: int) -> None:
        nonlocal served
        async with aiohttp.ClientSession() as http:
            k = n
            while time.monotonic() < deadline:
                async with http.get(f"{media}/s{k % 360:06d}.ts") as answer:
                    await answer.read()
                served += 1
                k += 32

    await asyncio.gather(*(client(n) for n in range(32)))
    return served / seconds


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--fetch":
        print(asyncio.run(fetch(sys.argv[2], float(sys.argv[3]))))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--slow":
        print(asyncio.run(slow_readers(sys.argv[2], float(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--sessions",
        default="0,1000,10000",
        help="numbers of sessions on disk to start with (0,1000,10000)",
    )
    parser.add_argument("--seconds", type=float, default=10, help="length of each load (10)")
    args = parser.parse_args()  # fmt: skip
    counts = [int(n) for n in args.sessions.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-load-") as name:
        work = Path(name)
        say("Rendering one minute of footage and linking an hour ...")
        run = asyncio.run(render_run(work / "render", 60, 10, size="320x240"))
        root = work / "rec"
        layout = make_layout("ffmpeg", "UTC")
        for minute in range(60):
            place(run, root, layout, "cam", T0 + minute * 60 * S)
        agent, base, _ = start(work, root)
        try:
            asyncio.run(load(base, args.seconds))
        finally:
            agent.terminate()
            agent.wait(30)
        made = next(p for p in (work / "pb").iterdir() if p.name.startswith("pbs_"))
        template = work / "template"
        shutil.copytree(made, template)
        meta = json.loads((template / "session.json").read_text())
        held = (parse_rfc3339(meta["from"], "from"), parse_rfc3339(meta["to"], "to"))
        say(f"\n{'sessions on disk':>18} {'to /healthz':>12} {'all loaded':>11}"
            f" {'RSS then':>9} {'RSS after a segment of each (up to 1,000)':>42}")  # fmt: skip
        for count in counts:
            playback = work / "pb"
            shutil.rmtree(playback)
            playback.mkdir()
            ids = []
            for _ in range(count):
                session_id = new_session_id()
                directory = playback / session_id
                shutil.copytree(template, directory)
                meta["id"] = session_id
                (directory / "session.json").write_text(json.dumps(meta))
                ids.append(session_id)
            # Their locks, as the agent that made them left them in the index.
            with sqlite3.connect(work / "index.db") as db:
                db.execute("DELETE FROM locks")
                db.executemany(
                    "INSERT INTO locks (session_id, camera, from_us, to_us) VALUES (?, ?, ?, ?)",
                    ((sid, meta["camera_id"], *held) for sid in ids),
                )
            began = time.perf_counter()
            agent, base, up = start(work, root)
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=60):
                    up_healthz = up
                while True:  # the sessions on disk load in the background
                    with urllib.request.urlopen(f"{base}/healthz", timeout=60) as answer:
                        if not json.load(answer)["sessions"]["loading"]:
                            break
                    time.sleep(0.05)
                loaded = time.perf_counter() - began
                rss = psutil.Process(agent.pid).memory_info().rss
                asyncio.run(touch_sessions(base, ids[:1000]))
                rss_after = psutil.Process(agent.pid).memory_info().rss
            finally:
                agent.terminate()
                agent.wait(60)
            say(
                f"{count:>18,} {up_healthz:>11.2f}s {loaded:>10.2f}s {rss / 2**20:>7.1f}MB"
                f" {rss_after / 2**20:>40.1f}MB"
            )


if __name__ == "__main__":
    main()
