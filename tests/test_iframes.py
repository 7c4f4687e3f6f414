"""I-frame playlists and multivariant playlists of sessions (iframes.py): each keyframe
listed once as a byte range of the session's own media (MPEG-TS or fragmented MP4),
decoding alone to the picture the whole segment decodes to there."""

from __future__ import annotations

import re
import subprocess
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.containers.samples import Table
from agent.demo import Rendered, render_run
from agent.iframes import item_iframes, render
from agent.playlists import CUT, OUT_START, RECORDED, MediaItem, Plan

from .conftest import T0, at, camera_counts, make_config, place_old, post, start_with, wait_for
from .players import ffmpeg_errors, gstreamer

S = 1_000_000


@dataclass
class Frame:
    uri: str
    offset: int
    length: int
    duration: float
    pdt: str
    init: tuple[str, int | None]  # EXT-X-MAP's URI and bytes from its start (None: all)
    discontinuity: bool


def parse_iframes(text: str) -> tuple[dict[str, str], list[Frame]]:
    """The tags and the entries of an I-frame playlist, each tag checked for its form."""
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    tags: dict[str, str] = {}
    frames: list[Frame] = []
    init: tuple[str, int | None] | None = None
    duration: float | None = None
    pdt = byterange = None
    discontinuity = False
    for line in lines[1:]:
        if line.startswith("#EXT-X-MAP:"):
            match = re.fullmatch(r'#EXT-X-MAP:URI="([^"]+)"(?:,BYTERANGE="(\d+)@0")?', line)
            assert match is not None, line
            init = (match.group(1), int(match.group(2)) if match.group(2) else None)
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].rstrip(","))
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = line.split(":", 1)[1]
        elif line.startswith("#EXT-X-BYTERANGE:"):
            match = re.fullmatch(r"#EXT-X-BYTERANGE:(\d+)@(\d+)", line)
            assert match is not None, line
            byterange = (int(match.group(1)), int(match.group(2)))
        elif line.startswith("#"):
            name, _, value = line[1:].partition(":")
            tags[name] = value
        elif line:
            assert duration is not None, line
            assert pdt is not None, line
            assert init is not None, line
            length, offset = byterange or (-1, -1)  # none: the whole of its own URL
            frames.append(Frame(line, offset, length, duration, pdt, init, discontinuity))
            duration = pdt = byterange = None
            discontinuity = False
    return tags, frames


def _table(ats: list[int], sync: list[bool], end: int) -> Table:
    table = Table(b"vide", "h264", 90_000, b"")
    table.at = array("q", ats)
    table.dts = array("q", [3000 * n for n in range(len(ats))])
    table.cto = array("i", [3000] * len(ats))
    table.sizes = array("I", [100] * len(ats))
    table.sync = bytearray(sync)
    table.end = end
    return table


def test_keyframes_of_an_item_are_its_sync_samples_within_what_it_serves() -> None:
    """A cut item serves its PAT and PMT, then the recording from the cut to its stop:
    each keyframe's range is in those bytes, from its first packet to the next frame's."""
    sync = [True, False, True, False, True, False]
    table = _table([0, 1880, 3760, 5640, 7520, 9400], sync, 11280)
    item = MediaItem(source="cam/a.ts", kind=CUT, duration=0.2, pdt_us=0, discontinuity=False,
                     size=11280, cut_at=1880, stop_at=7520, prefix=(0, 188),
                     shift=OUT_START)  # fmt: skip
    frames = item_iframes(3, item, table, 376, OUT_START)
    # The keyframe at 3760 only: 0 is before the cut, 7520 at the stop.
    assert [(f.item, f.offset, f.length) for f in frames] == [(3, 376 + 3760 - 1880, 1880)]
    assert frames[0].tick == OUT_START + 2 * 3000 + 3000  # its decode time and offset
    # A recorded item, to the end of its file: the last keyframe runs to the table's end.
    whole = MediaItem(source="cam/a.ts", kind=RECORDED, duration=0.2, pdt_us=0,
                      discontinuity=False, size=11280)  # fmt: skip
    frames = item_iframes(0, whole, table, 0, OUT_START)
    assert [(f.offset, f.length) for f in frames] == [(0, 1880), (3760, 1880), (7520, 1880)]


def test_the_playlist_lasts_as_long_as_the_session_each_frame_to_the_next() -> None:
    # Each recording's first frame (presented at 3000) placed where its item starts.
    items = tuple(
        MediaItem(source=f"cam/{n}.ts", kind=RECORDED, duration=2.0,
                  pdt_us=1_795_161_600_000_000 + 2 * S * n, discontinuity=n == 1, size=11280,
                  shift=OUT_START + 180_000 * n - 3000)
        for n in range(2)
    )  # fmt: skip
    plan = Plan(items, 0.0, 0)
    table = _table([0, 1880, 3760], [True, False, True], 5640)
    table.dts = array("q", [0, 45_000, 90_000])
    frames = [
        *item_iframes(0, plan.at(0), table, 0, plan.starts[0]),
        *item_iframes(1, plan.at(1), table, 0, plan.starts[1]),
    ]
    maps = [f'URI="s{n:06d}.ts",BYTERANGE="{b}@0"' for n, b in enumerate([376, 564])]
    text = render(plan, frames, maps)
    tags, parsed = parse_iframes(text)
    assert tags["EXT-X-VERSION"] == "5"
    assert "EXT-X-I-FRAMES-ONLY" in tags
    assert [f.duration for f in parsed] == [1.0, 1.0, 1.0, 1.0]
    assert [f.init[1] for f in parsed] == [376, 376, 564, 564]
    assert [f.discontinuity for f in parsed] == [False, False, True, False]
    assert [f.pdt for f in parsed][1:3] == ["2026-11-20T08:00:01.000Z", "2026-11-20T08:00:02.000Z"]


def _fetch(client: Any, url: str, first: int, length: int) -> Any:
    return client.get(url, headers={"Range": f"bytes={first}-{first + length - 1}"})


def _frames(path: Path) -> list[tuple[str, str]]:
    """(pts, MD5) of each decoded video frame of a file."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [
        (fields[2].strip(), fields[-1].strip())
        for line in out.splitlines()
        if line[:1].isdigit() and len(fields := line.split(",")) >= 6
    ]


def _timed_frames(path: Path) -> list[tuple[float, str]]:
    """(presentation time in seconds, as in the file, MD5) of each decoded video frame of
    a file."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-copyts", "-i", str(path), "-map", "0:v", "-f", "framemd5",
         "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    base = re.search(r"^#tb 0: (\d+)/(\d+)$", out, re.MULTILINE)
    assert base is not None, out[:500]
    tick = int(base.group(1)) / int(base.group(2))
    return [
        (int(fields[2]) * tick, fields[-1].strip())
        for line in out.splitlines()
        if line[:1].isdigit() and len(fields := line.split(",")) >= 6
    ]


def _walls(run: list[Rendered]) -> dict[str, set[float]]:
    """Each picture of a run of recordings (testsrc draws every frame differently): the
    seconds after 08:00:00 it is shown at, placed as `start_with` places the run (at 0
    and at 20 s)."""
    walls: dict[str, set[float]] = {}
    for recording in run:
        frames = _timed_frames(recording.path)
        # The recording starts with its earliest video packet, one a decoder alone may
        # not show (x265's leading pictures before an open GOP's keyframe).
        first = min(float(t) for t in _column(recording.path, "packet=pts_time"))
        for t, md5 in frames:
            shown = recording.offset_us / S + t - first
            walls.setdefault(md5, set()).update({round(shown, 4), round(20 + shown, 4)})
    return walls


def _column(path: Path, entries: str) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", entries,
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.strip().rstrip(",") for line in out.splitlines() if line.strip()]


def _audio_profiles(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries",
         "stream=profile", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.strip() for line in out.splitlines() if line.strip()]


def _keyframes(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=flags", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum("K" in line for line in out.splitlines())


async def _segments(
    client: Any, base: str, media: str, into: Path
) -> dict[str, tuple[bytes, bytes]]:
    """Each media URI of a media playlist: (the init section that applies, its bytes)."""
    found: dict[str, tuple[bytes, bytes]] = {}
    init = b""
    for line in media.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            uri = re.search(r'URI="([^"]+)"', line)
            assert uri is not None
            init = await (await client.get(f"{base}/{uri.group(1)}")).read()
        elif line and not line.startswith("#"):
            found[line] = (init, await (await client.get(f"{base}/{line}")).read())
    return found


@pytest.mark.parametrize("kind", ["ts", "fmp4", "mp4", "hevc", "hevc_fmp4", "hevc_mp4"])
async def test_each_keyframe_is_listed_once_and_decodes_alone_to_its_picture(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, kind: str
) -> None:
    """x264 with B-frames in MPEG-TS (served as recorded), fragmented MP4 of x264 and
    x265 (its own fragments) and MP4 and x265 in MPEG-TS (re-boxed), a session cut at
    1 s and across a gap: every keyframe of every segment is one entry; its range,
    after its EXT-X-MAP (its item's PAT and PMT, or its init section), decodes alone to
    one picture, the one the whole segment decodes to at that time; the entries last as
    long as the session and keep its wall clock."""
    client = await start_with(start_agent, tmp_path, footage, kind)
    status, session = await post(client, {"camera_id": "cam", "from": at(1), "to": at(26)})
    assert status == 201, session
    base = session["playlist_url"].rsplit("/", 1)[0]
    assert session["multivariant_url"] == f"{base}/multivariant.m3u8"
    response = await client.get(f"{base}/iframes.m3u8")
    assert response.status == 200, await response.text()
    assert response.content_type == "application/vnd.apple.mpegurl"
    tags, frames = parse_iframes(await response.text())
    assert "EXT-X-I-FRAMES-ONLY" in tags
    # The multivariant lists both, the picture's size known once the tables were read.
    multivariant = await (await client.get(session["multivariant_url"])).text()
    assert "\nindex.m3u8\n" in multivariant
    video = "hvc1" if kind.startswith("hevc") else "avc1"
    stream = (
        r"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=\d+,RESOLUTION=320x240,"
        rf'CODECS="{video}\.[^",]+",URI="iframes.m3u8"'
    )
    assert re.search(stream, multivariant), multivariant
    media = await (await client.get(session["playlist_url"])).text()
    mp4 = ".m4s\n" in media
    segments = await _segments(client, base, media, tmp_path)
    walls = _walls(footage[kind])
    # The media playlist's codecs: the video's, and AAC-LC's if the footage has audio.
    named = re.search(r'#EXT-X-STREAM-INF:[^\n]*CODECS="([^"]+)"', multivariant)
    assert named is not None, multivariant
    first = tmp_path / "first"
    first.write_bytes(b"".join(next(iter(segments.values()))))
    profiles = _audio_profiles(first)
    assert named.group(1).split(",")[1:] == (["mp4a.40.2"] if profiles else [])
    assert set(profiles) <= {"LC"}  # each format named once, whatever its streams
    wanted = 0
    pictures: dict[str, list[tuple[str, str]]] = {}
    for n, (uri, (init, data)) in enumerate(segments.items()):
        whole = tmp_path / f"whole{n}{'.mp4' if mp4 else '.ts'}"
        whole.write_bytes(init + data)
        wanted += _keyframes(whole)
        pictures[uri] = _frames(whole)
    assert wanted > len(segments)  # several keyframes a segment
    assert len(frames) == wanted  # each keyframe once
    assert len({(f.uri, f.offset) for f in frames}) == len(frames)
    for n, frame in enumerate(frames):
        alone = tmp_path / f"alone{n}{'.mp4' if mp4 else '.ts'}"
        if mp4:
            assert frame.init[1] is None  # the whole init section
            assert frame.init[0].startswith("i")
            head = await client.get(f"{base}/{frame.init[0]}")
            assert head.status == 200
        else:
            assert frame.init[0] == frame.uri  # its own PAT and PMT
            head = await _fetch(client, f"{base}/{frame.uri}", 0, frame.init[1])
            assert head.status == 206
        body = await _fetch(client, f"{base}/{frame.uri}", frame.offset, frame.length)
        assert body.status == 206
        alone.write_bytes(await head.read() + await body.read())
        decoded = _frames(alone)
        assert len(decoded) == 1, (frame, decoded)
        # testsrc draws each frame's time: a picture of the segment, and a keyframe's,
        # the one the recording shows at the entry's wall-clock time.
        assert decoded[0][1] in {md5 for _, md5 in pictures[frame.uri]}, frame
        pdt = (datetime.fromisoformat(frame.pdt).timestamp() * S - T0) / S
        assert any(abs(pdt - wall) < 0.002 for wall in walls[decoded[0][1]]), (
            frame,
            walls[decoded[0][1]],
        )
    total = sum(f.duration for f in frames)
    # As long as the session from its first keyframe (the media playlist's start).
    extinf = sum(float(x) for x in re.findall(r"#EXTINF:([\d.]+),", media))
    offset = re.search(r"#EXT-X-START:TIME-OFFSET=([\d.]+)", media)
    assert abs(total - (extinf - float(offset.group(1) if offset else 0))) < 0.001
    if kind == "ts":
        assert abs(total - (25 - 14)) < 0.1  # 08:00:01-06 and 20-26 (the gap is no footage)
    assert frames[0].pdt == "2026-11-20T08:00:01.000Z"
    # One timeline across the gap, as the media playlist has it (no discontinuity).
    breaks = media.count("#EXT-X-DISCONTINUITY")
    assert [f.discontinuity for f in frames].count(True) == breaks == 0


async def test_fragments_cut_by_time_list_every_keyframe_once(
    tmp_path: Path, start_agent: Any
) -> None:
    """MediaMTX's way: a fragment every second, a keyframe every 1.5 s. A keyframe that
    starts its fragment is a byte range of its segment; one inside a fragment, after
    other pictures, a URL of its own: every keyframe once, each decoding alone to the
    picture at its time. A keyframe URL the playlist does not give is 404."""
    run = await render_run(
        tmp_path / "parts", 6, 2, kind="fmp4_parts", size="320x240", keyframe_seconds=1.5
    )
    config = make_config(tmp_path, recordings={"layout": "mediamtx"})
    place_old(run, config.recordings.root, config.layout, "cam", T0)
    place_old(run, config.recordings.root, config.layout, "cam", T0 + 20 * S)
    client = await start_agent(config)

    async def indexed() -> bool:
        return await camera_counts(client) == {"cam": 2 * len(run)}

    await wait_for(indexed, what="footage indexed")
    walls = _walls(run)
    # From 08:00:00, and from 08:00:02: its first keyframe (at 1.52 s) inside a fragment,
    # from which that fragment's part is made a fragment of its own, listed first.
    for start in (0, 2):
        body = {"camera_id": "cam", "from": at(start), "to": at(26)}
        status, session = await post(client, body)
        assert status == 201, session
        base = session["playlist_url"].rsplit("/", 1)[0]
        response = await client.get(f"{base}/iframes.m3u8")
        assert response.status == 200, await response.text()
        text = await response.text()
        _, frames = parse_iframes(text)
        own = [frame for frame in frames if frame.uri.startswith("k")]
        assert own  # keyframes inside their fragments
        shown = [round((datetime.fromisoformat(f.pdt).timestamp() * S - T0) / S, 2) for f in frames]
        assert len(set(shown)) == len(shown)  # each once
        if not start:  # every keyframe of the footage (placed twice)
            keyframes = sum(_keyframes(recording.path) for recording in run)
            assert len(frames) == 2 * keyframes
        if start:
            assert (frames[0].uri, frames[0].offset) == ("s000000.m4s", 0)
            assert frames[0].pdt == "2026-11-20T08:00:01.520Z"  # the first frame from 1.5 s
        for n, frame in enumerate(frames):
            head = await client.get(f"{base}/{frame.init[0]}")
            if frame.uri.startswith("k"):
                assert frame.offset == -1
                part = await client.get(f"{base}/{frame.uri}")
                assert part.status == 200
            else:
                part = await _fetch(client, f"{base}/{frame.uri}", frame.offset, frame.length)
                assert part.status == 206
            alone = tmp_path / f"alone{start}-{n}.mp4"
            alone.write_bytes(await head.read() + await part.read())
            decoded = _frames(alone)
            assert len(decoded) == 1, (frame, decoded)
            pdt = (datetime.fromisoformat(frame.pdt).timestamp() * S - T0) / S
            assert any(abs(pdt - wall) < 0.002 for wall in walls[decoded[0][1]]), frame
    item, moof, sample = own[0].uri[1:-4].split("-")
    for name in (
        f"k{item}-{moof}-1",  # not a keyframe there
        f"k{item}-{int(moof) + 8}-{sample}",  # inside the moof: no box starts there
        f"k{item}-{int(moof) + 40_000}-{sample}",  # inside its mdat, or past it
        f"k{item}-999999999-{sample}",  # past the end of the file
        f"k{item}-{moof}-{int(sample) + 1_000}",  # past the fragment's samples
        "k000000-1-1",  # before the item
    ):
        answer = await client.get(f"{base}/{name}.m4s")
        assert answer.status == 404, name
        assert "no such keyframe" in (await answer.json())["error"] or name.startswith("k000000-1-")


@pytest.mark.slow  # real players
@pytest.mark.parametrize("kind", ["ts", "mp4"])
async def test_ffmpeg_and_playbin3_play_the_multivariant_playlist(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, kind: str
) -> None:
    client = await start_with(start_agent, tmp_path, footage, kind)
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    url = str(client.make_url(session["multivariant_url"]))
    assert await ffmpeg_errors(url) == ""
    code, said = await gstreamer(url)
    assert code == 0, said[-2000:]
