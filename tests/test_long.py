"""Long recordings (a file a minute here; an hour on some recorders) served as segments of
about `playback.segment_seconds`: MPEG-TS cut at keyframes found near where their times
lie, fragmented MP4 (MediaMTX style) between fragments that start with a keyframe. The
playlist covers the range asked for, not the whole file, and players see one stream,
without ffmpeg."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent import reboxed
from agent.containers.probe import fmp4_splits, probe, ts_splits
from agent.demo import Rendered, render_run
from agent.keys import CONFIG, INDEX, SESSIONS

from .conftest import (
    T0,
    S,
    at,
    camera_counts,
    fetch_all,
    got,
    make_config,
    place_old,
    post,
    run_in_thread,
    scan_complete,
    wait_for,
)
from .hls import parse, video_facts
from .players import ffmpeg_errors
from .test_continuity import every_player_plays

FILE_S = 60
AGAIN_S = 75  # the second file starts after a 15 s gap
STYLES: dict[str, dict[str, Any]] = {
    "ts": {},
    "hevc": {"codec": "hevc"},
    # MediaMTX: a fragment a second; this camera's keyframes every other second.
    "fmp4": {"kind": "fmp4_parts", "keyframe_seconds": 2},
    # ... and this one's every 1.6 s: most keyframes are inside a fragment.
    "fmp4_mid": {"kind": "fmp4_parts", "keyframe_seconds": 1.6},
}
LAYOUTS = {"fmp4": "mediamtx", "fmp4_mid": "mediamtx"}
FRAME = Fraction(1, 25)


@pytest.fixture(scope="module")
def minute_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Rendered]]:
    """One 60 s recording of each style (a keyframe a second unless the style says)."""
    base = tmp_path_factory.mktemp("minute")

    async def render() -> list[list[Rendered]]:
        return await asyncio.gather(
            *(
                render_run(
                    base / name, FILE_S, FILE_S, size="320x240", **{"keyframe_seconds": 1, **o}
                )
                for name, o in STYLES.items()
            )
        )

    rendered = dict(zip(STYLES, run_in_thread(render()), strict=True))
    assert all(len(files) == 1 for files in rendered.values()), rendered
    return rendered


async def agent_with(
    start_agent: Any, tmp_path: Path, files: list[Rendered], style: str = "ts"
) -> TestClient[Any, Any]:
    # No ffmpeg (the one configured does not exist): no recorder style needs it.
    config = make_config(
        tmp_path,
        recordings={"layout": LAYOUTS.get(style, "ffmpeg")},
        ffmpeg={"ffmpeg": "/nonexistent/ffmpeg"},
    )
    place_old(files, config.recordings.root, config.layout, "cam", T0)
    place_old(files, config.recordings.root, config.layout, "cam", T0 + AGAIN_S * S)
    client: TestClient[Any, Any] = await start_agent(config)

    async def indexed() -> bool:
        return await scan_complete(client) and await camera_counts(client) == {"cam": 2}

    await wait_for(indexed, what="footage indexed")
    return client


def _seconds(pdt: str | None) -> float:
    assert pdt is not None
    return datetime.fromisoformat(pdt).timestamp()


async def test_a_part_of_a_long_recording_reboxed_is_the_same_bytes_however_found(
    tmp_path: Path,
    minute_files: dict[str, list[Rendered]],
    start_agent: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A re-boxed part of a long recording (HEVC in MPEG-TS) works out the times of the
    samples near it only: its bytes are those made from the whole recording's times."""
    client = await agent_with(start_agent, tmp_path, minute_files["hevc"], "hevc")
    status, session = await post(client, {"camera_id": "cam", "from": at(10.5), "to": at(40.2)})
    assert status == 201, session
    entries = parse(await (await client.get(session["playlist_url"])).text()).entries
    base = session["playlist_url"].rsplit("/", 1)[0]
    near = [await (await client.get(f"{base}/{e.uri}")).read() for e in entries]
    monkeypatch.setattr(reboxed, "_MARGIN", 10**15)  # every part: the whole recording
    whole = [await (await client.get(f"{base}/{e.uri}")).read() for e in entries]
    assert len(near) >= 4
    assert near == whole


@pytest.mark.parametrize("style", list(STYLES))
async def test_a_long_recording_is_served_in_parts_of_the_range_asked_for(
    tmp_path: Path, minute_files: dict[str, list[Rendered]], start_agent: Any, style: str
) -> None:
    client = await agent_with(start_agent, tmp_path, minute_files[style], style)
    status, session = await post(client, {"camera_id": "cam", "from": at(10.5), "to": at(40.2)})
    assert status == 201, session
    playlist = parse(await (await client.get(session["playlist_url"])).text())
    entries = playlist.entries
    target = int(playlist.tags["EXT-X-TARGETDURATION"])
    gop = STYLES[style].get("keyframe_seconds", 1)
    assert target <= 8.5 + gop  # no part within half a step of `from`: up to 1.5 steps
    assert all(int(e.duration + 0.5) <= target for e in entries)
    assert 4 <= len(entries) <= 7  # about 6 s each, not one minute-long segment
    # From the keyframe at or before `from` to the end of the part that holds `to`, each
    # within one GOP of the range.
    first = _seconds(entries[0].pdt)
    end = first + sum(e.duration for e in entries)
    assert T0 / S + 10.5 - gop <= first <= T0 / S + 10.5
    assert T0 / S + 40.2 <= end <= T0 / S + 40.2 + gop + 0.001
    offset = T0 / S + 10.5 - first  # `from`, from the keyframe at or before it
    assert playlist.tags["EXT-X-START"] == f"TIME-OFFSET={offset:.3f},PRECISE=YES"
    for before, entry in itertools.pairwise(entries):
        assert abs(_seconds(entry.pdt) - _seconds(before.pdt) - before.duration) < 0.002
        assert not entry.discontinuity

    paths = await fetch_all(client, session, tmp_path / "got")
    facts = [video_facts(path) for path in paths]
    # The sound a muxer wrote after the keyframe but meant for before it goes with the
    # part before: no part's sound starts ahead of its picture. A fragment of MP4 is
    # served as recorded: its sound starts at the keyframe's decode time, ahead of its
    # presentation by the B-frame delay (two frames), and ends where the next one's starts.
    ahead = Fraction(1, 40) if not style.startswith("fmp4") else 2 * FRAME
    sound = [video_facts(path, "a") for path in paths]
    for entry, fact, audio in zip(entries, facts, sound, strict=True):
        assert fact.first_is_keyframe, entry.uri
        assert audio.start >= fact.start - ahead, entry.uri
    for before, after in itertools.pairwise(sound):
        assert abs(after.start - before.end) < Fraction(1024, 48000)
    for n in range(1, len(facts)):
        # One timeline: each part starts where the playlist says the one before ends.
        stated = facts[n - 1].start + Fraction(entries[n - 1].duration)
        assert abs(facts[n].start - stated) <= FRAME, f"EXTINF before {n}"
    whole = minute_files[style][0].path.stat().st_size
    assert sum(path.stat().st_size for path in paths) < 0.7 * whole  # just the range
    # The recordings were split once, when indexed: the parts inside the range are cut
    # where the index says, and what it says is what reading the file finds.
    app = client.server.app
    recordings = await app[INDEX].segments("cam", 0, T0 * 2)
    indexed = await app[INDEX].cuts(r.path for r in recordings)
    assert set(indexed) == {r.path for r in recordings}
    for recording in recordings:
        path = app[CONFIG].recordings.root / recording.path
        first, duration, step = recording.first_pts, recording.duration, recording.timescale * 6
        if style.startswith("fmp4"):
            found = fmp4_splits(probe(path).keyframes, first, duration, step)
        else:
            found = ts_splits(path, first, duration, step)
        assert indexed[recording.path] == found
    planned = await app[SESSIONS].load_plan(await app[SESSIONS].get(session["id"]))
    inside = [item.cut_at for item in planned.items[1:]]  # all but the cut at `from`
    assert len(inside) >= 3
    if style == "fmp4_mid":  # parts that start, and end, at a keyframe inside a fragment
        assert sum(1 for item in planned.items if item.cut_sample) >= 3
        assert sum(1 for item in planned.items if item.stop_sample) >= 3
    assert set(inside) <= {cut.offset for cut in indexed[recordings[0].path]}
    assert await ffmpeg_errors(str(client.make_url(session["playlist_url"]))) == ""


@pytest.mark.slow
@pytest.mark.parametrize("style", list(STYLES))
async def test_every_player_sees_one_stream_across_long_recordings(
    tmp_path: Path, minute_files: dict[str, list[Rendered]], start_agent: Any, style: str
) -> None:
    client = await agent_with(start_agent, tmp_path, minute_files[style], style)
    status, session = await post(
        client, {"camera_id": "cam", "from": at(45), "to": at(AGAIN_S + 40)}
    )
    assert status == 201, session
    # hls.js puts the first video decode time at 0 and nudges over the B-frame delay
    # before the first picture when a session starts at a keyframe (it does the same
    # with ffmpeg's own HLS output of this footage): that one event is allowed.
    await every_player_plays(
        client, session, tmp_path, hevc=style == "hevc",
        hlsjs_allows=lambda e: "bufferSeekOverHole" in e and "from 0 to" in e,
    )  # fmt: skip


@pytest.mark.parametrize(("style", "keep"), [("ts", 0.5), ("fmp4", 0.5), ("fmp4", 0.0002)])
async def test_a_recording_that_shrinks_under_a_session_gives_short_answers(
    tmp_path: Path,
    minute_files: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: Any,
    style: str,
    keep: float,
) -> None:
    """A recording cut short after its session was planned (a recorder that rewrote it, a
    disk that failed): its parts past the new end answer short or not found, never 500,
    with ranges too, even when its init section is gone; the agent goes on and the rest
    still plays."""
    client = await agent_with(start_agent, tmp_path, minute_files[style], style)
    status, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(130)})
    assert status == 201, session
    text = await (await client.get(session["playlist_url"])).text()
    entries = parse(text).entries
    names = [entry.uri for entry in entries]
    names += sorted({entry.init for entry in entries if entry.init is not None})
    base = session["playlist_url"].rsplit("/", 1)[0]
    recording = (
        client.server.app[CONFIG].recordings.root
        / (await client.server.app[INDEX].segments("cam", 0, T0 * 2))[0].path
    )
    size = recording.stat().st_size
    with recording.open("r+b") as handle:
        handle.truncate(int(size * keep) + 100)  # mid-file, mid-packet or mid-box
    for name in names:
        for headers in ({}, {"Range": "bytes=1000-"}, {"Range": "bytes=-500"}):
            response = await client.get(f"{base}/{name}", headers=headers)
            assert response.status in (200, 206, 404, 416), (name, headers, response.status)
            await response.read()
    assert (await client.get("/healthz")).status == 200
    # The second recording is whole: its parts still play.
    second = [entry.uri for entry in entries[-3:]]
    for name in second:
        assert await got(client, f"{base}/{name}") == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
async def test_a_fragmented_recording_cut_short_plays_to_its_last_whole_fragment(
    tmp_path: Path,
    minute_files: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: Any,
    damage: str,
) -> None:
    """A fragmented MP4 recording whose boxes stop mid-file (cut short, or a box size
    that is garbage) is indexed and served up to its last whole fragment, with a log
    line; the index says where it stops."""
    source = minute_files["fmp4"][0].path
    facts = probe(source)
    broken_at = next(
        offset for offset, _, pts in facts.keyframes
        if pts - facts.first_pts >= 30 * facts.timescale
    )  # fmt: skip
    data = bytearray(source.read_bytes())
    if damage == "truncated":
        del data[broken_at + 5000 :]
    else:
        data[broken_at : broken_at + 4] = (0xFFFFFFF0).to_bytes(4, "big")
    damaged = tmp_path / "damaged" / "seg.mp4"
    damaged.parent.mkdir()
    damaged.write_bytes(data)
    client = await agent_with(start_agent, tmp_path, [Rendered(damaged, 0)], "fmp4")
    recordings = await client.server.app[INDEX].segments("cam", 0, T0 * 2)
    assert [r.media_end for r in recordings] == [broken_at, broken_at]
    assert all(29 * S <= r.end_us - r.start_us <= 31 * S for r in recordings)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("served up to its last whole fragment" in line for line in said) == 2, said
    status, session = await post(client, {"camera_id": "cam", "from": at(20), "to": at(100)})
    assert status == 201, session
    assert await ffmpeg_errors(str(client.make_url(session["playlist_url"]))) == ""
    paths = await fetch_all(client, session, tmp_path / "got")
    # 20 s to the damage at 30 s, then 75 s to 100 s in the second copy.
    assert 35 <= sum(video_facts(path).duration for path in paths) <= 37


def _frame_hashes(path: Path) -> list[str]:
    """The MD5 of each decoded video frame of a file, in order."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line[:1].isdigit()]


@pytest.mark.parametrize("style", ["ts", "fmp4"])
async def test_the_export_of_a_long_recording_has_its_frames_in_order(
    tmp_path: Path, minute_files: dict[str, list[Rendered]], start_agent: Any, style: str
) -> None:
    """clip.mp4 of a session over the parts of long recordings shows the recording's own
    frames, each once and in order: every part from where it begins, not from its
    recording's start."""
    client = await agent_with(start_agent, tmp_path, minute_files[style], style)
    status, session = await post(client, {"camera_id": "cam", "from": at(20), "to": at(50)})
    assert status == 201, session
    response = await client.get(session["playlist_url"].replace("index.m3u8", "clip.mp4"))
    assert response.status == 200
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(await response.read())
    got = _frame_hashes(clip)
    source = _frame_hashes(minute_files[style][0].path)
    # From the keyframe before `from` (20 s), every frame to `to`, in order.
    assert got == source[25 * 20 : 25 * 50]
    # Across the gap into the next recording (the same minute again, from 75 s): the first
    # one's parts from 44 s (a keyframe) to its end, then the next from its start to
    # `to` (100 s, 25 s into it), no frame lost or repeated at the join.
    status, session = await post(client, {"camera_id": "cam", "from": at(44), "to": at(100)})
    assert status == 201, session
    response = await client.get(session["playlist_url"].replace("index.m3u8", "clip.mp4"))
    clip.write_bytes(await response.read())
    assert _frame_hashes(clip) == source[25 * 44 :] + source[: 25 * 25]
