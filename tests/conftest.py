"""Shared fixtures: footage rendered once per test session with real ffmpeg, configs on
tmp_path, a real agent on loopback, and polling against a deadline."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.app import create_app
from agent.config import Config, parse_config
from agent.demo import Rendered, place, render_run
from agent.layout import Layout
from agent.openapi import document
from agent.times import format_us, parse_rfc3339

from .hls import parse

SEGMENT_S = 2
T = TypeVar("T")


@pytest.fixture(scope="session")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Rendered]]:
    """Three 2-second segments (a keyframe each second) of each recorder style, rendered
    once: ts (continuous MPEG-TS, x264 with B-frames), ts_reset (timestamps restart in
    every segment), hevc (x265's open GOPs in MPEG-TS), mp4 (Frigate style: reset
    timestamps, AAC), fmp4 (fragmented MP4), and x265 in fragmented MP4 (hevc_fmp4) and
    in MP4 (hevc_mp4)."""
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is not installed (apt-get install ffmpeg)")
    base = tmp_path_factory.mktemp("footage")
    styles: dict[str, dict[str, Any]] = {
        "ts": {},
        "ts_reset": {"reset_timestamps": True},
        "hevc": {"codec": "hevc"},
        "mp4": {"kind": "mp4"},
        "fmp4": {"kind": "fmp4"},
        "hevc_fmp4": {"kind": "fmp4", "codec": "hevc"},
        "hevc_mp4": {"kind": "mp4", "codec": "hevc"},
    }

    async def render() -> list[list[Rendered]]:
        return await asyncio.gather(
            *(
                render_run(
                    base / name,
                    3 * SEGMENT_S,
                    SEGMENT_S,
                    size="320x240",
                    keyframe_seconds=1,
                    **options,
                )
                for name, options in styles.items()
            )
        )

    return dict(zip(styles, run_in_thread(render()), strict=True))


def run_in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, on a thread of its own, so
    that the test's own event loop is left alone."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class HeldProbe:
    """The indexer's reads of recordings, held: `reading` is set when one has begun,
    and each waits for `release`."""

    reading: threading.Event
    release: threading.Event

    async def started(self) -> None:
        assert await asyncio.to_thread(self.reading.wait, 30), "no recording was read"


def hold_probes(monkeypatch: pytest.MonkeyPatch) -> HeldProbe:
    """Hold every read of a recording by the indexer (the real `probe`, run once the
    test releases it): the test decides what happens while a file is being read."""
    from agent import indexer

    held = HeldProbe(threading.Event(), threading.Event())
    real = indexer.probe

    def probe(path: Path) -> Any:
        held.reading.set()
        held.release.wait(30)
        return real(path)

    monkeypatch.setattr(indexer, "probe", probe)
    return held


def place_old(
    run: list[Rendered], root: Path, layout: Layout, camera: str, start_us: int
) -> list[Path]:
    """`place`, with the files' times an hour in the past, as in a recorder's archive."""
    placed = place(run, root, layout, camera, start_us)
    an_hour_ago = time.time() - 3600
    for path in placed:
        os.utime(path, (an_hour_ago, an_hour_ago))
    return placed


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """A Config whose files all live under tmp_path; `sections` override keys."""
    raw: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "recordings": {"root": str(tmp_path / "recordings")},
        "index": {"database": str(tmp_path / "state" / "index.sqlite3")},
        "playback": {"dir": str(tmp_path / "state" / "playback")},
        # The tests share a noisy machine: only the admission tests exercise the CPU rule.
        "admission": {"max_cpu_percent": 100},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw)


@pytest.fixture
def start_agent(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> Callable[[Config], Awaitable[TestClient[Any, Any]]]:
    """Start the real app on loopback for a config; it is stopped after the test."""

    async def start(config: Config, clock: Callable[[], float] = time.time) -> TestClient[Any, Any]:
        config.recordings.root.mkdir(parents=True, exist_ok=True)
        app = create_app(config, clock)
        app.middlewares.insert(0, documented_statuses)
        return await aiohttp_client(app)

    return start


@web.middleware
async def documented_statuses(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer of every test's agent must be a status the OpenAPI document lists."""
    response: web.StreamResponse = await handler(request)
    route = request.match_info.route.resource
    if route is not None:
        operation = document()["paths"][route.canonical][
            request.method.lower() if request.method != "HEAD" else "get"
        ]
        assert str(response.status) in operation["responses"], (
            f"{request.method} {route.canonical} answered {response.status}, undocumented"
        )
    return response


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def camera_counts(client: TestClient[Any, Any]) -> dict[str, int]:
    response = await client.get("/api/cameras")
    assert response.status == 200
    return {c["id"]: c["segment_count"] for c in (await response.json())["cameras"]}


async def started(start_agent: Any, config: Config) -> TestClient[Any, Any]:
    """The agent on `config`, once its first scan of the recordings is done."""
    client: TestClient[Any, Any] = await start_agent(config)
    await wait_for(lambda: scan_complete(client), what="first scan")
    return client


async def scan_complete(client: TestClient[Any, Any]) -> bool:
    body = await (await client.get("/healthz")).json()
    return bool(body["index"]["scan"] == "complete")


# -- playback sessions over a real agent ---------------------------------------------------

T0 = parse_rfc3339("2026-11-20T08:00:00Z", "t")
S = 1_000_000
FRAME = Fraction(1, 25)


async def start_with(
    start_agent: Any,
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    kind: str = "ts",
    clock: Callable[[], float] = time.time,
    **sections: dict[str, Any],
) -> TestClient[Any, Any]:
    """An agent on camera `cam`: footage at 08:00:00-08:00:06 and 08:00:20-08:00:26."""
    layout = {"mp4": "frigate", "fmp4": "mediamtx", "hevc_fmp4": "mediamtx", "hevc_mp4": "frigate"}
    layout = layout.get(kind, "ffmpeg")
    sections.setdefault("recordings", {})["layout"] = layout
    config = make_config(tmp_path, **sections)
    place_old(footage[kind], config.recordings.root, config.layout, "cam", T0)
    place_old(footage[kind], config.recordings.root, config.layout, "cam", T0 + 20 * S)
    client: TestClient[Any, Any] = await start_agent(config, clock)

    async def indexed() -> bool:
        return await scan_complete(client) and await camera_counts(client) == {"cam": 6}

    await wait_for(indexed, what="footage indexed")
    return client


async def post(client: TestClient[Any, Any], body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/playback", json=body)
    return response.status, await response.json()


def at(seconds: float) -> str:
    return format_us(T0 + int(seconds * S))


async def fetch_all(
    client: TestClient[Any, Any], session: dict[str, Any], into: Path
) -> list[Path]:
    """Download the playlist's every segment; returns their paths, in order. A fragmented
    MP4 segment is stored after its init section (EXT-X-MAP), as a file of its own."""
    text = await (await client.get(session["playlist_url"])).text()
    base = session["playlist_url"].rsplit("/", 1)[0]
    paths = []
    into.mkdir(parents=True, exist_ok=True)
    for entry in parse(text).entries:
        media = await fetch(client, f"{base}/{entry.uri}", "video/mp2t")
        path = into / entry.uri
        if entry.init is None:
            path.write_bytes(media)
        else:
            init = await fetch(client, f"{base}/{entry.init}", "video/mp4")
            path.write_bytes(init + media)
        paths.append(path)
    return paths


async def got(client: TestClient[Any, Any], url: str) -> int:
    """The status of a GET whose body is read to its end: a response left unread keeps
    its connection, which warns when collected (in whichever test runs then)."""
    response = await client.get(url)
    await response.read()
    return response.status


async def fetch(client: TestClient[Any, Any], url: str, content_type: str) -> bytes:
    """A media URL's body, checked to be a whole answer of `content_type` (or, for a
    fragmented MP4 media segment, video/iso.segment)."""
    response = await client.get(url)
    assert response.status == 200, await response.text()
    wanted = "video/iso.segment" if url.endswith(".m4s") else content_type
    assert response.content_type == wanted
    body = await response.read()
    if url.endswith(".m4s"):  # media, never an init section
        assert body[4:8] == b"moof", url
    return body


SEGMENT_US = 2 * S  # each of the footage fixture's segments


def utc(text: str) -> int:
    return parse_rfc3339(text, "t")


def record(
    run: list[Rendered], root: Path, layout: Layout, camera: str, start_us: int, until_us: int
) -> list[Path]:
    """The run copied over and over from `start_us` to `until_us`, each file named by
    `layout` (in its zone) and modified when its segment ends, as a recorder leaves them:
    a name written twice (the repeated hour) holds the later file."""
    written = []
    at = start_us
    while at < until_us:
        for item in run:
            target = root / layout.format(camera, at + item.offset_us)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.path, target)
            end_ns = (at + item.offset_us + SEGMENT_US) * 1000
            os.utime(target, ns=(end_ns, end_ns))
            written.append(target)
        at += len(run) * SEGMENT_US
    return written
