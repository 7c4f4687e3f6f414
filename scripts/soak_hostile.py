#!/usr/bin/env python3
"""Soak of hostile probes against a real agent: prints figures; asserts nothing.

  .venv/bin/python scripts/soak_hostile.py [--seconds 60] [--files 256]

The agent runs as a process with a limit of --files open files, on 30 s of footage and a
hostile recordings root (a year-9999 name, a name that is not UTF-8, a symlinked folder,
every hostile recording in tests/regressions/ (memory bombs, random timestamps, empty
boxes), a sparse 20 GB file, and a FIFO put in place of an indexed recording). For
--seconds it is probed at once by: 300 connections from 127.0.0.2 that send half a
request and are reopened whenever the agent closes them; 20 slow readers taking media at
about 1 KB/s; 4 addresses each holding their share of connections on 720p media they
never read (4 KB receive buffers); exports cancelled after their first 64 KB; sessions,
media and exports of the FIFO's camera; malformed requests; and a client creating and
deleting sessions (some kept). Meanwhile /healthz is timed every 100 ms, on a new
connection each time, from a process of its own (the probes keep this one's event loop
too busy to time anything), and the agent's RSS sampled. As root, the playback and index
directories are small tmpfs mounts, each filled to the last byte for 2 s out of every 4.
At the end: /healthz latency (p50, p99, max, how many over 50 ms, failures), the agent's
largest RSS, what the guard did, the build slots still held once the probes stopped, and
whether every session that answered 201 and was kept still plays (ffmpeg -v error).
Needs about 100 MB under $TMPDIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from agent.demo import place, render_run
from agent.layout import make_layout
from agent.times import format_us

T0 = 1_795_161_600_000_000  # 2026-11-20T08:00:00Z
ATTACKER = "127.0.0.2"  # the half-sent requests come from another loopback address
# Every hostile recording the tests keep.
REGRESSIONS = Path(__file__).resolve().parent.parent / "tests" / "regressions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def half_requests(port: int, count: int, stop: asyncio.Event, tally: dict[str, int]) -> None:
    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(ATTACKER, 0)
                )
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(), 60)
                tally["half closed by agent"] += 1
                writer.close()
            except OSError:
                tally["half refused"] += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(one() for _ in range(count)))


async def slow_reader(url: str, stop: asyncio.Event, tally: dict[str, int]) -> None:
    host, _, rest = url.removeprefix("http://").partition("/")
    address, _, port = host.partition(":")
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(address, int(port))
            writer.write(f"GET /{rest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            while not stop.is_set():
                if not await reader.read(1024):
                    break
                await asyncio.sleep(1)  # about 1 KB a second
            writer.close()
            tally["slow reads ended"] += 1
        except OSError:
            await asyncio.sleep(0.5)


async def stalled_readers(
    url: str, addresses: list[str], each: int, stop: asyncio.Event, tally: dict[str, int]
) -> None:
    """From each of `addresses`, `each` connections that ask for `url` and never read
    (4 KB receive buffers), reopened whenever the agent closes them."""
    host, _, rest = url.removeprefix("http://").partition("/")
    address, _, port = host.partition(":")

    async def one(source: str) -> None:
        while not stop.is_set():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                sock.bind((source, 0))
                await asyncio.get_running_loop().sock_connect(sock, (address, int(port)))
                reader, writer = await asyncio.open_connection(sock=sock)
                writer.write(f"GET /{rest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await writer.drain()
                await reader.read(1)  # then nothing more, until the agent cuts it
                tally["stalled reads begun"] += 1
                while not writer.is_closing():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1)
                    if stop.is_set():
                        break
                else:
                    tally["stalled reads cut"] += 1
                writer.close()
            except OSError:
                sock.close()
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one(a) for a in addresses for _ in range(each)))


async def cancelled_exports(base: str, stop: asyncio.Event, tally: dict[str, int]) -> None:
    """Exports of the whole footage, each dropped after its first 64 KB."""
    body = {"camera_id": "cam", "from": format_us(T0), "to": format_us(T0 + 30_000_000)}
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/api/playback", json=body) as answer:
                    session = await answer.json()
                if answer.status != 201:  # the disk is being filled
                    await asyncio.sleep(0.5)
                    continue
                clip = base + session["playlist_url"].replace("index.m3u8", "clip.mp4")
                async with http.get(clip) as download:
                    tally[f"export {download.status}"] += 1
                    await download.content.read(65536)
                async with http.delete(f"{base}/api/playback/{session['id']}"):
                    pass
        await asyncio.sleep(0.5)


async def fifo_camera(base: str, stop: asyncio.Event, tally: dict[str, int]) -> None:
    """Sessions, media and exports of the camera one of whose recordings is a FIFO: each
    must answer (201, 404 or 503), never hang."""
    body = {"camera_id": "fifo", "from": format_us(T0 + 5_000_000),
            "to": format_us(T0 + 30_000_000)}  # fmt: skip
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while not stop.is_set():
            try:
                async with http.post(f"{base}/api/playback", json=body) as answer:
                    tally[f"FIFO POST {answer.status}"] += 1
                    session = await answer.json()
                if answer.status == 201:
                    for name in ("s000000.ts", "s000001.ts", "clip.mp4"):
                        url = base + session["playlist_url"].replace("index.m3u8", name)
                        async with http.get(url) as media:
                            await media.read()
                            tally[f"FIFO GET {media.status}"] += 1
                    async with http.delete(f"{base}/api/playback/{session['id']}"):
                        pass
            except TimeoutError:
                tally["FIFO hung"] += 1
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)


async def malformed(port: int, stop: asyncio.Event, tally: dict[str, int]) -> None:
    junk = [
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
        b"POST /api/playback HTTP/1.1\r\nContent-Length: 9\r\n\r\n{",
    ]
    n = 0
    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk[n % len(junk)])
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(), 15)
            writer.close()
            tally["malformed sent"] += 1
        n += 1
        await asyncio.sleep(0.05)


async def sessions(base: str, stop: asyncio.Event, kept: list[dict[str, str]],
                   tally: dict[str, int]) -> None:  # fmt: skip
    body = {"camera_id": "cam", "from": format_us(T0), "to": format_us(T0 + 30_000_000)}
    async with aiohttp.ClientSession() as http:
        n = 0
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(f"{base}/api/playback", json=body) as answer:
                    tally[f"POST {answer.status}"] += 1
                    if answer.status == 201:
                        session = await answer.json()
                        if n % 3:
                            async with http.delete(f"{base}/api/playback/{session['id']}") as gone:
                                tally[f"DELETE {gone.status}"] += 1
                        else:
                            kept.append(session)
            n += 1
            await asyncio.sleep(0.1)


async def fill(disks: list[Path], stop: asyncio.Event, tally: dict[str, int]) -> None:
    """Fill each small disk to the last byte for 2 s, then free it for 2 s, over and over."""
    while not stop.is_set():
        for disk in disks:
            await asyncio.to_thread(_fill, disk / "filler")
        tally["disks filled"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)
        for disk in disks:
            (disk / "filler").unlink(missing_ok=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


def _fill(path: Path) -> None:
    with contextlib.suppress(OSError), path.open("ab") as out:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
                    out.flush()


@contextlib.contextmanager
def small_disk(directory: Path, mib: int) -> Iterator[Path]:
    """`directory` on a tmpfs of `mib` MiB (mounting needs root)."""
    directory.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(directory)],
                   check=True)  # fmt: skip
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


async def soak(base: str, port: int, seconds: float, disks: list[Path]) -> list[dict[str, str]]:
    """Probe for `seconds`, print what was seen; the sessions that must still play."""
    stop = asyncio.Event()
    tally: dict[str, int] = {}

    class Counter(dict[str, int]):
        def __missing__(self, key: str) -> int:
            return 0

    tally = Counter()
    kept: list[dict[str, str]] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/playback", json={
            "camera_id": "cam", "from": format_us(T0), "to": format_us(T0 + 30_000_000)
        }) as answer:  # fmt: skip
            first = await answer.json()
        media = base + first["playlist_url"].replace("index.m3u8", "s000001.ts")
        async with http.post(f"{base}/api/playback", json={
            "camera_id": "big", "from": format_us(T0), "to": format_us(T0 + 20_000_000)
        }) as answer:  # fmt: skip
            big = await answer.json()
        big_media = base + big["playlist_url"].replace("index.m3u8", "s000000.ts")
        share = (await (await http.get(f"{base}/healthz")).json())["connections"]["per_client"]
        probes = [
            asyncio.create_task(half_requests(port, 300, stop, tally)),
            *(asyncio.create_task(slow_reader(media, stop, tally)) for _ in range(20)),
            asyncio.create_task(
                stalled_readers(
                    big_media, [f"127.0.0.{n}" for n in range(3, 7)], share, stop, tally
                )
            ),  # fmt: skip
            asyncio.create_task(cancelled_exports(base, stop, tally)),
            asyncio.create_task(fifo_camera(base, stop, tally)),
            asyncio.create_task(malformed(port, stop, tally)),
            asyncio.create_task(sessions(base, stop, kept, tally)),
            asyncio.create_task(fill(disks, stop, tally)),
        ]
        # Timed from a process of its own, as a monitor would.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            latencies, slow, failures, health = await asyncio.get_running_loop().run_in_executor(
                pool, time_healthz, base, seconds
            )
        stop.set()
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)

    after = await asyncio.to_thread(settled, base)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    print(f"\n/healthz, every 100 ms for {seconds:g} s under the probes: {len(latencies)} answers,"
          f" {failures} failures; p50 {statistics.median(latencies) * 1e3:.1f} ms,"
          f" p99 {p99 * 1e3:.1f} ms, max {latencies[-1] * 1e3:.1f} ms,"
          f" {sum(t > 0.05 for t in latencies)} over 50 ms")  # fmt: skip
    for at, took in slow:
        print(f"  {took * 1e3:.0f} ms, {at:.2f} s into the probes")
    print(f"guard: {health['connections']}; status {health['status']}: {health['problems']}")
    print(f"after the probes: build slots held {after['admission']['running']},"
          f" unreadable files {after['index']['unreadable_files']}")  # fmt: skip
    print("probes: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    return [first, *kept]


def settled(base: str) -> dict[str, Any]:
    """/healthz once the build slots the probes took are given back (at most 10 s)."""
    after: dict[str, Any] = {}
    for _ in range(100):
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as answer:
            after = json.load(answer)
        if after["admission"]["running"] == 0:
            break
        time.sleep(0.1)
    return after


def time_healthz(
    base: str, seconds: float
) -> tuple[list[float], list[tuple[float, float]], int, dict[str, Any]]:
    """GET /healthz on a new connection every 100 ms for `seconds`: each answer's time,
    when (seconds from the first) and how long each answer over 50 ms took, the failures,
    and the last answer."""
    latencies: list[float] = []
    slow: list[tuple[float, float]] = []
    failures = 0
    health: dict[str, Any] = {}
    began = time.monotonic()
    deadline = began + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
                health = json.load(answer)
            latencies.append(time.perf_counter() - started)
            if latencies[-1] > 0.05:
                slow.append((sent - began, latencies[-1]))
        except OSError:
            failures += 1
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))
    return latencies, slow, failures, health


def lost(base: str, sessions: list[dict[str, str]]) -> int:
    """How many of `sessions` no longer play to the end without an error."""
    count = 0
    for session in sessions:
        played = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", base + session["playlist_url"], "-f",
             "null", "-"], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        count += played.returncode != 0 or played.stderr != ""
    return count


class RssSampler(threading.Thread):
    """The largest resident set of a process, sampled every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> None:
        self._done.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--seconds", type=float, default=60, help="how long to probe (60)")
    parser.add_argument("--files", type=int, default=256, help="the agent's open-file limit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as name, contextlib.ExitStack() as stack:
        work = Path(name)
        print("Rendering 30 s of footage, and 20 s of 720p ...", flush=True)
        run = asyncio.run(render_run(work / "render", 30, 10, size="320x240"))
        big = asyncio.run(render_run(work / "big", 20, 10, size="1280x720", video_bitrate="8M"))
        root = work / "rec"
        layout = make_layout("ffmpeg", "UTC")
        place(run, root, layout, "cam", T0)
        place(big, root, layout, "big", T0)
        fifo = place(run, root, layout, "fifo", T0)[1]
        for n, regression in enumerate(sorted(REGRESSIONS.iterdir())):  # memory bombs, ...
            target = root / layout.format("bad", T0 + n * 1_000_000)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(regression, target)
        sparse = root / layout.format("sparse", T0)
        sparse.parent.mkdir(parents=True)
        shutil.copyfile(run[0].path, sparse)
        os.truncate(sparse, 20 << 30)
        hostile = root / "hcam" / "9999-12-31"
        hostile.mkdir(parents=True)
        shutil.copyfile(run[0].path, hostile / "23-59-55.ts")
        os.makedirs(os.fsencode(root) + b"/cam\xff/2024-06-01")
        (work / "elsewhere").mkdir()
        (root / "lcam").symlink_to(work / "elsewhere")
        port = free_port()
        disks = []
        if os.geteuid() == 0:  # the playback and index directories on small disks to fill
            disks = [stack.enter_context(small_disk(work / name, mib))
                     for name, mib in (("pb", 16), ("db", 8))]  # fmt: skip
        else:
            print("Not root: no small disks to fill (mounting a tmpfs needs root)")
        (work / "db").mkdir(exist_ok=True)
        (work / "agent.toml").write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n[recordings]\nroot = "{root}"\n'
            f'[index]\ndatabase = "{work / "db" / "index.db"}"\n'
            f'[playback]\ndir = "{work / "pb"}"\n'
            "[admission]\nmin_free_disk_mb = 2\n"  # the small disks are full only when filled
        )

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.files, args.files))

        log_file = stack.enter_context((work / "agent.log").open("w+"))

        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(work / "agent.toml"),
             "--log-level", "WARNING"],
            preexec_fn=limit, stderr=log_file, text=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    with contextlib.closing(socket.create_connection(("127.0.0.1", port))):
                        pass
                    with urllib.request.urlopen(f"{base}/healthz") as answer:
                        if json.load(answer)["index"]["scan"] == "complete":
                            break
                except OSError:
                    time.sleep(0.1)
            fifo.unlink()
            os.mkfifo(fifo)  # in place of a recording the index has
            print(f"Probing for {args.seconds:g} s (files limit {args.files}) ...", flush=True)
            rss = RssSampler(agent.pid)
            rss.start()
            try:
                kept = asyncio.run(soak(base, port, args.seconds, disks))
            finally:
                rss.stop()
            print(f"agent RSS: at most {rss.peak / (1 << 20):.0f} MB")
            print(f"sessions kept: {len(kept)}, of which lost or not playable: {lost(base, kept)}")
        finally:
            agent.terminate()
            agent.wait(timeout=30)
        # A file, not a pipe: a pipe nobody reads until the end fills, and the agent's
        # next log line would then block it (journald reads as it goes).
        log_file.seek(0)
        lines = log_file.read().splitlines()
        print(f"agent: exit {agent.returncode}, {len(lines)} log lines at WARNING or above,"
              f" {sum('Traceback' in line for line in lines)} tracebacks")  # fmt: skip
        for line in sorted({line for line in lines if line[:1].isupper() and ":" in line})[:10]:
            print(f"  {line[:160]}")


if __name__ == "__main__":
    main()
