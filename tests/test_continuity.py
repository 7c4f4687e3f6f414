"""One continuous stream per session, whatever the recorder did to its timestamps: every
recorder style played end to end in ffmpeg, VLC, GStreamer playbin3 and Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent.demo import Rendered, render_run

from .conftest import (
    T0,
    S,
    at,
    camera_counts,
    fetch_all,
    make_config,
    place_old,
    post,
    run_in_thread,
    scan_complete,
    wait_for,
)
from .hls import parse
from .players import (
    chromium_plays,
    ffmpeg_errors,
    gstreamer,
    hlsjs_plays,
    video_packets,
    vlc_video_packets,
)

LAYOUTS = {"mp4": "frigate", "fmp4": "mediamtx"}
RUN_S = 40  # VLC's file output drops a few frames at the very end of any stream: 1,000
# frames a run keep that under the 0.5 % the check allows
STYLES: dict[str, dict[str, Any]] = {
    "ts": {},
    "ts_reset": {"reset_timestamps": True},
    "hevc": {"codec": "hevc"},
    "mp4": {"kind": "mp4"},
    "fmp4": {"kind": "fmp4"},
}


@pytest.fixture(scope="module")
def long_footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Rendered]]:
    """RUN_S seconds of each recorder style in 2 s segments (a keyframe a second)."""
    base = tmp_path_factory.mktemp("long")

    async def render() -> list[list[Rendered]]:
        return await asyncio.gather(
            *(
                render_run(base / name, RUN_S, 2, size="320x240", keyframe_seconds=1, **options)
                for name, options in STYLES.items()
            )
        )

    return dict(zip(STYLES, run_in_thread(render()), strict=True))


async def agent_with(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]], style: str, after: int
) -> TestClient[Any, Any]:
    """Camera `cam`: one run of `style` at 08:00:00, the same files again `after` seconds
    later (the recorder restarted: its timestamps begin again)."""
    count = len(footage[style])
    # No ffmpeg (the one configured does not exist): no recorder style needs it.
    config = make_config(
        tmp_path,
        recordings={"layout": LAYOUTS.get(style, "ffmpeg")},
        ffmpeg={"ffmpeg": "/nonexistent/ffmpeg"},
    )
    place_old(footage[style], config.recordings.root, config.layout, "cam", T0)
    place_old(footage[style], config.recordings.root, config.layout, "cam", T0 + after * S)
    client: TestClient[Any, Any] = await start_agent(config)

    async def indexed() -> bool:
        return await scan_complete(client) and await camera_counts(client) == {"cam": 2 * count}

    await wait_for(indexed, what="footage indexed")
    return client


async def listed_frames(client: TestClient[Any, Any], session: dict[str, Any], into: Path) -> int:
    """The video frames of every segment the session's playlist lists."""
    return sum([await video_packets(path) for path in await fetch_all(client, session, into)])


async def every_player_plays(
    client: TestClient[Any, Any],
    session: dict[str, Any],
    tmp_path: Path,
    hevc: bool,
    hlsjs_allows: Callable[[str], bool] = lambda _: False,
) -> None:
    """The session plays as one stream: no DISCONTINUITY, `ffmpeg -v error` silent, VLC
    (as an ordinary user) keeps at least 99.5 % of the listed frames, playbin3 reaches EOS;
    Chromium's <video> plays and seeks, and hls.js buffers every segment with no ERROR
    event but those `hlsjs_allows` (not for HEVC: Chromium decodes it only in hardware)."""
    url = str(client.make_url(session["playlist_url"]))
    playlist = parse(await (await client.get(session["playlist_url"])).text())
    assert not any(entry.discontinuity for entry in playlist.entries)
    frames = await listed_frames(client, session, tmp_path / "listed")

    assert await ffmpeg_errors(url) == ""
    received, said = await vlc_video_packets(url)
    assert received >= 0.995 * frames, f"VLC received {received} of {frames} frames:\n{said}"
    code, out = await gstreamer(url)
    assert code == 0, out
    assert "EOS" in out, out
    assert "ERROR" not in out, out
    if not hevc:
        total = sum(e.duration for e in playlist.entries)
        seen = await chromium_plays(url, seek_to=total - 3)
        assert seen["e"] is None, seen
        assert abs(seen["duration"] - total) < 0.1, seen
        played = await hlsjs_plays(url, len(playlist.entries))
        assert [e for e in played["errors"] if not hlsjs_allows(e)] == [], played
        assert len(played["errors"]) <= 1, played
        assert played["buffered"] == len(playlist.entries), played


CASES = [
    ("ts", RUN_S + 15),  # continuous TS; a gap, then the recorder's timestamps start again
    ("ts", RUN_S),  # the recorder restarts with no gap
    ("ts_reset", RUN_S + 15),  # every segment's timestamps restart (-reset_timestamps 1)
    ("hevc", RUN_S + 15),  # x265 open GOPs in MPEG-TS, re-boxed as fragmented MP4 (hvc1)
    ("mp4", RUN_S + 15),  # Frigate style: MP4 segments, reset timestamps, AAC; re-boxed
    ("fmp4", RUN_S + 15),  # fragmented MP4 segments, served as they are (byte ranges)
]


@pytest.mark.slow
@pytest.mark.parametrize(("style", "after"), CASES)
async def test_every_player_sees_one_stream(
    tmp_path: Path,
    long_footage: dict[str, list[Rendered]],
    start_agent: Any,
    style: str,
    after: int,
) -> None:
    client = await agent_with(start_agent, tmp_path, long_footage, style, after)
    status, session = await post(
        client, {"camera_id": "cam", "from": at(0.5), "to": at(after + RUN_S)}
    )
    assert status == 201, session
    await every_player_plays(client, session, tmp_path, hevc=style == "hevc")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mpegts", "mp4"])
async def test_a_new_resolution_in_the_same_streams_is_a_discontinuity(
    tmp_path: Path, start_agent: Any, kind: str
) -> None:
    """A camera whose resolution changes keeps its PIDs (or its MP4 tracks) but has new
    parameter sets: a DISCONTINUITY there, and only there, and players play across it."""
    options: dict[str, Any] = {} if kind == "mpegts" else {"kind": "mp4"}

    async def render() -> list[list[Rendered]]:
        return await asyncio.gather(
            *(
                render_run(tmp_path / size, 6, 2, size=size, keyframe_seconds=1, **options)
                for size in ("320x240", "480x270")
            )
        )

    small, large = await render()
    config = make_config(
        tmp_path, recordings={"layout": "ffmpeg" if kind == "mpegts" else "frigate"}
    )
    for n, run in enumerate((small, large, small)):  # back to back: the same camera
        place_old(run, config.recordings.root, config.layout, "cam", T0 + n * 6 * S)
    client = await start_agent(config)

    async def indexed() -> bool:
        return await scan_complete(client) and await camera_counts(client) == {"cam": 9}

    await wait_for(indexed, what="footage indexed")
    status, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(18)})
    assert status == 201, session
    playlist = parse(await (await client.get(session["playlist_url"])).text())
    changes = [n for n, entry in enumerate(playlist.entries) if entry.discontinuity]
    assert changes == [3, 6], changes
    url = str(client.make_url(session["playlist_url"]))
    assert await ffmpeg_errors(url) == ""
    code, out = await gstreamer(url)
    assert code == 0, out
    assert "EOS" in out, out
    assert "ERROR" not in out, out
