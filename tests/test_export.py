"""clip.mp4: a session's range as one progressive MP4 made from the recordings' own
samples. Real footage of each recorder style, a real agent, real ffmpeg decoding, real
players, and no ffmpeg in the agent (its configured ffmpeg does not exist)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.containers.errors import ProbeError
from agent.containers.files import opened
from agent.containers.samples import decode, encode, read_recording, sample_bytes
from agent.demo import Rendered, place, render_run
from agent.keys import INDEX, PLAYBACK
from agent.samplestore import SampleStore
from agent.times import parse_rfc3339

from .conftest import (
    T0,
    S,
    at,
    camera_counts,
    make_config,
    place_old,
    post,
    start_with,
    started,
    wait_for,
)
from .hls import parse
from .players import chromium_plays, ffmpeg_errors, run, video_packets, vlc_video_packets

# The agent is given an ffmpeg that is not there: an export that needed it would fail.
NO_FFMPEG = {"ffmpeg": {"ffmpeg": "/nonexistent/ffmpeg"}}


async def frame_digests(source: str, *options: str) -> list[tuple[float, str]]:
    """(presentation time in seconds, MD5) of each decoded video frame of `source`, as
    ffmpeg decodes it (its timestamps kept as they are, each frame at its own size)."""
    code, out = await run(
        "ffmpeg", "-nostdin", "-v", "error", *options, "-i", source, "-map", "0:v:0",
        "-autoscale", "0", "-f", "framemd5", "-fps_mode", "passthrough",
        "-enc_time_base", "1/90000", "-",
    )  # fmt: skip
    assert code == 0, out
    frames = []
    for line in out.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        frames.append((int(fields[2]) / 90_000, fields[5]))
    return frames


async def clip_of(client: Any, session: dict[str, Any], into: Path) -> Path:
    response = await client.get(session["playlist_url"].replace("index.m3u8", "clip.mp4"))
    assert response.status == 200, await response.text()
    body = await response.read()
    assert int(response.headers["Content-Length"]) == len(body)
    path = into / "clip.mp4"
    path.write_bytes(body)
    return path


def shown(frames: list[tuple[float, str]], begin: float, end: float) -> list[str]:
    """The frames on screen from `begin` to `end` (seconds): the one showing at `begin`,
    those that start before `end`."""
    starts = [t for t, _ in frames] + [float("inf")]
    return [d for n, (t, d) in enumerate(frames) if t < end - 1e-6 and starts[n + 1] > begin + 1e-6]


async def window(client: Any, tmp_path: Path, session: dict[str, Any]) -> tuple[float, float]:
    """Where the session's `from` and `to` are on its HLS timeline (seconds, as ffmpeg
    reads the playlist with -copyts): `from` where the plan puts it, `to` by the wall
    clock of the segment it falls in (EXT-X-PROGRAM-DATE-TIME)."""
    plan = json.loads((tmp_path / "state" / "playback" / session["id"] / "plan.json").read_text())
    begin = 10 + plan["start_offset"]
    playlist = parse(await (await client.get(session["playlist_url"])).text())
    to = parse_rfc3339(session["to"], "to") / 1e6
    start, pdt, end = 10.0, 0.0, 10.0
    for entry in playlist.entries:
        pdt = parse_rfc3339(entry.pdt, "pdt") / 1e6 if entry.pdt else pdt
        if pdt <= to:
            end = min(start + entry.duration, start + to - pdt)
        start += entry.duration
        pdt += entry.duration
    return begin, end


KINDS = ["ts", "ts_reset", "mp4", "fmp4", "hevc", "hevc_fmp4", "hevc_mp4"]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_clip_shows_the_sessions_frames(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, kind: str
) -> None:
    """Frame for frame (MD5 of each decoded frame) what the session's HLS shows from
    `from` to `to`, across a gap, from every recorder style; ffmpeg reads it silently;
    its audio runs on with no overlap; its wall clock is in a text track.

    The HLS of MPEG-TS H.264 and of fragmented MP4 is served as recorded; that of plain
    MP4 and HEVC in MPEG-TS is re-boxed from the same sample tables (another writer, the
    same timeline): so the clip is also checked against the recordings decoded one by
    one, where each decodes whole alone (not HEVC's open GOPs)."""
    client = await start_with(start_agent, tmp_path, footage, kind, **NO_FFMPEG)
    _, session = await post(client, {"camera_id": "cam", "from": at(1.5), "to": at(23.2)})
    clip = await clip_of(client, session, tmp_path)
    assert await ffmpeg_errors(str(clip)) == ""
    url = str(client.make_url(session["playlist_url"]))
    hls = await frame_digests(url, "-copyts")
    begin, end = await window(client, tmp_path, session)
    wanted = shown(hls, begin, end)
    frames = await frame_digests(str(clip))
    got = [digest for _, digest in frames]
    assert got == wanted, (len(got), len(wanted))
    if not kind.startswith("hevc"):
        # The same run twice (08:00:00 and 08:00:20): from the frame on screen at 1.5 s
        # (the 38th, at 1.48 s) to its end, then its frames before 3.2 s.
        recorded = []
        for rendered in footage[kind]:
            recorded += [d for _, d in await frame_digests(str(rendered.path))]
        assert got == recorded[37:] + recorded[:80]
    await check_audio(clip)
    await check_wall_clock(clip, "2026-11-20 08:00:01 UTC", "2026-11-20 08:00:23 UTC")


async def check_audio(clip: Path) -> None:
    """The clip's audio packets follow one another, never overlapping, one AAC frame
    (1024 samples at 48 kHz) apart except where the footage has a gap or a hold."""
    code, out = await run(
        "ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
        "packet=pts,duration", "-of", "csv=p=0", str(clip),
    )  # fmt: skip
    assert code == 0, out
    packets = [tuple(map(int, line.split(",")[:2])) for line in out.split()]
    assert len(packets) > 100
    steps = [b[0] - a[0] for a, b in itertools.pairwise(packets)]
    assert min(steps) > 0
    assert sum(step != 1024 for step in steps) <= 4, steps


async def check_wall_clock(clip: Path, first: str, last: str) -> None:
    """The text track says the wall-clock time, a cue a second; the movie's creation
    time is `from`."""
    code, out = await run(
        "ffmpeg", "-v", "error", "-i", str(clip), "-map", "0:s:0", "-f", "srt", "-"
    )
    assert code == 0, out
    cues = re.findall(r"2026-[0-9-]+ [0-9:]+ UTC", out)
    assert cues[0] == first
    assert cues[-1] == last
    code, out = await run(
        "ffprobe", "-v", "error", "-show_entries", "format_tags=creation_time",
        "-of", "csv=p=0", str(clip),
    )  # fmt: skip
    assert out.strip() == "2026-11-20T08:00:01.000000Z"  # whole seconds (mvhd)


async def test_a_resolution_change_gets_a_sample_entry_of_its_own(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """A camera whose resolution changed between recordings: the clip has one sample
    entry per stream configuration and shows every frame of both."""
    larger = await render_run(tmp_path / "larger", 4, 2, size="480x270", keyframe_seconds=1)
    config = make_config(tmp_path, **NO_FFMPEG)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    place_old(larger, config.recordings.root, config.layout, "cam", T0 + 6 * S)
    client = await started(start_agent, config)
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(10)})
    clip = await clip_of(client, session, tmp_path)
    assert await ffmpeg_errors(str(clip)) == ""
    assert clip.read_bytes().count(b"avcC") == 2
    frames = [d for _, d in await frame_digests(str(clip))]
    sources = []
    for run_ in (footage["ts"], larger):
        for rendered in run_:
            sources += [d for _, d in await frame_digests(str(rendered.path))]
    assert frames == sources


async def test_byte_ranges_are_the_same_bytes_as_the_whole(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Content-Length, HEAD, Range (206, suffix, 416), If-Range and If-None-Match on a
    strong ETag; any range is the same bytes as the whole file's."""
    client = await start_with(start_agent, tmp_path, footage, "ts", **NO_FFMPEG)
    _, session = await post(client, {"camera_id": "cam", "from": at(1.5), "to": at(23.2)})
    url = session["playlist_url"].replace("index.m3u8", "clip.mp4")
    whole = await client.get(url)
    body = await whole.read()
    etag = whole.headers["ETag"]
    assert etag.startswith('"')
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert int(whole.headers["Content-Length"]) == len(body)
    assert body[4:8] == b"ftyp"
    assert body.find(b"moov") < body.find(b"mdat")
    head = await client.head(url)
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["ETag"] == etag
    spots = random.Random(7).sample(range(len(body)), 40)
    moov_end = body.find(b"mdat") + 12
    for low in [*sorted(spots), 0, moov_end - 1, moov_end, len(body) - 1]:
        high = min(len(body) - 1, low + random.Random(low).randrange(1, 300_000))
        part = await client.get(url, headers={"Range": f"bytes={low}-{high}"})
        assert part.status == 206
        assert part.headers["Content-Range"] == f"bytes {low}-{high}/{len(body)}"
        assert await part.read() == body[low : high + 1], low
    tail = await client.get(url, headers={"Range": "bytes=-1000"})
    assert await tail.read() == body[-1000:]
    past = await client.get(url, headers={"Range": f"bytes={len(body)}-"})
    assert past.status == 416
    assert past.headers["Content-Range"] == f"bytes */{len(body)}"
    same = await client.get(url, headers={"Range": "bytes=100-199", "If-Range": etag})
    assert (same.status, await same.read()) == (206, body[100:200])
    stale = await client.get(url, headers={"Range": "bytes=100-199", "If-Range": '"old"'})
    assert (stale.status, len(await stale.read())) == (200, len(body))
    cached = await client.get(url, headers={"If-None-Match": etag})
    assert cached.status == 304
    # Another range of the same footage is another file, with another tag.
    _, other = await post(client, {"camera_id": "cam", "from": at(2), "to": at(23.2)})
    response = await client.head(other["playlist_url"].replace("index.m3u8", "clip.mp4"))
    assert response.headers["ETag"] != etag


async def test_a_download_cut_at_40_percent_resumes_to_the_same_file(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """curl -C - after a download was cut: the file is identical (SHA-256) to one made
    in one go."""
    client = await start_with(start_agent, tmp_path, footage, "hevc", **NO_FFMPEG)
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    url = str(client.make_url(session["playlist_url"].replace("index.m3u8", "clip.mp4")))
    whole = tmp_path / "whole.mp4"
    code, out = await run("curl", "-sSf", "-o", str(whole), url)
    assert code == 0, out
    size = whole.stat().st_size
    cut = tmp_path / "cut.mp4"
    code, out = await run("curl", "-sSf", "-r", f"0-{size * 4 // 10 - 1}", "-o", str(cut), url)
    assert code == 0, out
    assert cut.stat().st_size == size * 4 // 10
    code, out = await run("curl", "-sSf", "-C", "-", "-o", str(cut), url)
    assert code == 0, out
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (whole, cut)]
    assert digest[0] == digest[1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ts", "mp4"])
async def test_players_play_the_clip(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, kind: str
) -> None:
    """VLC (as an ordinary user) receives every frame; Chromium's <video> plays it and
    seeks into the middle (by Range); the download's name says the camera and range."""
    client = await start_with(start_agent, tmp_path, footage, kind, **NO_FFMPEG)
    _, session = await post(client, {"camera_id": "cam", "from": at(1.5), "to": at(5.5)})
    response = await client.head(session["playlist_url"].replace("index.m3u8", "clip.mp4"))
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="cam_20261120T080001.5Z_20261120T080005.5Z.mp4"'
    )
    clip = await clip_of(client, session, tmp_path)
    url = str(client.make_url(session["playlist_url"].replace("index.m3u8", "clip.mp4")))
    frames = await video_packets(clip)
    received, said = await vlc_video_packets(url)
    assert received >= frames - 8, f"VLC received {received} of {frames} frames:\n{said}"
    seen = await chromium_plays(url, seek_to=2)
    assert seen["e"] is None, seen
    assert abs(seen["duration"] - 4.02) < 0.1, seen


async def _twenty_minutes(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> tuple[Any, list[Path], Any]:
    """An agent on twenty minutes of the 6 s run: its client, the files, a clip's URL."""
    config = make_config(tmp_path, **NO_FFMPEG)
    placed = []
    for copy in range(20 * 10):
        start = T0 + copy * 6 * S
        placed += place_old(footage["ts"], config.recordings.root, config.layout, "cam", start)
    client = await started(start_agent, config)
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(20 * 60)})
    return (
        client,
        placed,
        client.make_url(session["playlist_url"].replace("index.m3u8", "clip.mp4")),
    )


async def _ends_broken(response: aiohttp.ClientResponse) -> bool:
    """Whether the rest of a download ends broken (the connection cut)."""
    try:
        async with asyncio.timeout(60):
            while await response.content.read(65536):
                pass
    except aiohttp.ClientPayloadError:
        return True
    finally:
        response.close()
    return False


async def test_an_export_whose_recordings_vanish_ends_and_is_logged(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The recorder's retention deletes the footage while it is being exported: the
    download ends (broken, not passed off as whole), the agent says why and stays up."""
    client, placed, url = await _twenty_minutes(tmp_path, footage, start_agent)
    async with aiohttp.ClientSession() as other:
        response = await other.get(url)
        assert response.status == 200
        await response.content.read(65536)
        for path in placed[len(placed) // 5 :]:
            path.unlink()
        assert await _ends_broken(response)  # not as if it were whole
    said = [r.getMessage() for r in caplog.records if "export of" in r.getMessage()]
    assert len(said) == 1, said
    assert (await client.get("/healthz")).status == 200
    assert (await client.get(url.path.replace("clip.mp4", "index.m3u8"))).status == 200


async def test_a_directory_swapped_for_a_symlink_mid_download_is_not_read_through(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """A recording's path is checked for symlinks once a clip; a directory on the way
    turned into a symlink to copies of its files during the download breaks it (the files
    opened are not the ones laid out) rather than serving the copies."""
    client, placed, url = await _twenty_minutes(tmp_path, footage, start_agent)
    async with aiohttp.ClientSession() as other:
        response = await other.get(url)
        assert response.status == 200
        await response.content.read(65536)
        directory = placed[-1].parent
        copies = tmp_path / "copies"
        shutil.copytree(directory, copies)
        directory.rename(tmp_path / "moved")
        directory.symlink_to(copies, target_is_directory=True)
        assert await _ends_broken(response)
    assert (await client.get(url.path)).status == 404  # and refused from then on


@pytest.mark.parametrize("kind", KINDS)
def test_sample_tables_kept_on_disk_read_back_the_same(
    footage: dict[str, list[Rendered]], kind: str
) -> None:
    """encode/decode keep every field of every table; damaged bytes are a ProbeError."""
    with opened(footage[kind][0].path) as (fd, size):
        recording = read_recording(fd, size)
    back = decode(encode(recording))
    for table, again in ((recording.video, back.video), (recording.audio, back.audio)):
        assert table is not None
        assert again is not None
        for name in ("handler", "codec", "timescale", "entry", "width", "height", "end",
                     "last_duration", "pid", "shift"):  # fmt: skip
            assert getattr(again, name) == getattr(table, name), name
        for name in ("dts", "cto", "sizes", "sync", "at", "sub"):
            assert list(getattr(again, name)) == list(getattr(table, name)), name
    data = encode(recording)
    for damaged in (data[:-10], data[:20] + bytes(10) + data[30:], b"", b"x" * 100):
        with pytest.raises(ProbeError):
            decode(damaged)


def test_the_store_keeps_the_latest_within_its_budget(
    tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    with opened(footage["ts"][0].path) as (fd, size):
        recording = read_recording(fd, size)
    one = len(encode(recording))
    store = SampleStore(tmp_path / "samples.sqlite3", budget=3 * one)
    store.open()
    for n in range(5):
        store.put(f"cam/{n}.ts", (size, n, 1, 7), recording)
    assert store.get("cam/4.ts", (size, 4, 1, 7)) is not None
    assert store.get("cam/4.ts", (size, 5, 1, 7)) is None  # another mtime: another file
    assert store.get("cam/4.ts", (size, 4, 1, 8)) is None  # another ctime: rewritten
    # The least recently used dropped, just as many as the budget needs.
    kept = [store.has(f"cam/{n}.ts", (size, n, 1, 7)) for n in range(5)]
    assert kept == [False, False] + [True] * 3
    # A row used lately is kept over one used before it, across a restart too (its use
    # written at close).
    assert store.get("cam/2.ts", (size, 2, 1, 7)) is not None
    store.close()
    again = SampleStore(tmp_path / "samples.sqlite3", budget=3 * one)
    again.open()
    assert again.has("cam/4.ts", (size, 4, 1, 7))
    again.put("cam/5.ts", (size, 5, 1, 7), recording)
    kept = [again.has(f"cam/{n}.ts", (size, n, 1, 7)) for n in (2, 3, 4, 5)]
    assert kept == [True, False, True, True]
    again.close()
    # A file of the format before ctime was kept is emptied, not misread.
    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE tables (source TEXT PRIMARY KEY, size INTEGER, mtime_ns"
                   " INTEGER, inode INTEGER, used INTEGER, data BLOB)")  # fmt: skip
        db.execute("INSERT INTO tables VALUES ('cam/0.ts', 1, 2, 3, 4, x'00')")
    emptied = SampleStore(old)
    emptied.open()
    assert not emptied.has("cam/0.ts", (1, 2, 3, 0))
    emptied.put("cam/0.ts", (size, 0, 1, 7), recording)
    assert emptied.has("cam/0.ts", (size, 0, 1, 7))
    emptied.close()
    # A store that cannot be opened (a directory in its place) is no store: no error.
    (tmp_path / "broken").mkdir()
    broken = SampleStore(tmp_path / "broken")
    broken.open()
    assert broken.get("cam/4.ts", (size, 4, 1)) is None
    broken.put("cam/4.ts", (size, 4, 1), recording)


async def test_recordings_that_arrive_are_ready_to_export(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Recordings written while the agent runs have their sample tables kept as they
    arrive: an export of them reads no recording whole. The archive found at start is
    read on first use (then kept on disk)."""
    config = make_config(tmp_path, **NO_FFMPEG)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    now = T0 / S + 3600  # an hour after the archive

    client = await start_agent(config, lambda: now)
    playback = client.server.app[PLAYBACK]
    await wait_for(lambda: camera_counts_are(client, 3), what="the archive indexed")
    place(footage["ts"], config.recordings.root, config.layout, "cam", T0 + 3590 * S)
    await wait_for(lambda: camera_counts_are(client, 6), what="the new recordings indexed")
    store = playback.exporter.store

    async def prepared() -> bool:
        found = await client.server.app[INDEX].segments("cam", T0 + 3000 * S, T0 + 4000 * S)
        return len(found) == 3 and all(
            store.has(s.path, (s.size, s.mtime_ns, s.inode, s.ctime_ns)) for s in found
        )

    await wait_for(prepared, what="the new recordings' tables kept")
    assert playback.exporter.read_whole == 3  # the new ones, as they arrived
    _, session = await post(client, {"camera_id": "cam", "from": at(3590), "to": at(3596)})
    await clip_of(client, session, tmp_path)
    assert playback.exporter.read_whole == 3
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(6)})
    await clip_of(client, session, tmp_path)
    assert playback.exporter.read_whole == 6  # the archive: read on first use


async def camera_counts_are(client: Any, count: int) -> bool:
    return await camera_counts(client) == {"cam": count}


async def test_garbage_written_into_a_recording_ends_the_download_broken(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A recording overwritten in place while its clip is downloaded (same size, its mtime
    put back; its ctime says so): the download is cut before its bytes, never passed off
    as whole, and one line is logged; the clip asked for again is 404 with a sentence."""
    client, placed, url = await _twenty_minutes(tmp_path, footage, start_agent)
    async with aiohttp.ClientSession() as other:
        response = await other.get(url)
        assert response.status == 200
        await response.content.read(65536)
        victim = placed[-1]
        info = victim.stat()
        data = bytearray(victim.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 20_000] = random.Random(3).randbytes(20_000)
        victim.write_bytes(bytes(data))
        os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))
        assert await _ends_broken(response)  # not as if it were whole
    said = [r.getMessage() for r in caplog.records if "export of" in r.getMessage()]
    assert len(said) == 1, said
    assert "ended early" in said[0]
    again = await client.get(url.path)
    assert again.status == 404
    assert "cannot" in (await again.json())["error"]


def split_every_frame(data: bytes, video_pid: int) -> bytes:
    """The MPEG-TS with each video access unit carried on in a second PES (one without a
    PTS, as some cameras write): the packet after each PES start becomes a PES start of
    its own, its last 9 bytes moved into a packet of their own (stuffed)."""
    out = bytearray()
    follows = False  # the packet before was a PES start of the video
    for offset in range(0, len(data) - len(data) % 188, 188):
        packet = data[offset : offset + 188]
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid != video_pid:
            out += packet
            continue
        plain = packet[3] & 0x30 == 0x10 and not packet[1] & 0x40
        if follows and plain:
            header = b"\0\0\1\xe0\0\0\x80\0\0"  # a PES header without a PTS
            payload = packet[4:]
            out += bytes([0x47, packet[1] | 0x40, packet[2], packet[3]]) + header + payload[:175]
            stuffing = bytes([174, 0]) + b"\xff" * 173
            out += bytes([0x47, packet[1] & ~0x40 & 0xFF, packet[2], (packet[3] & 0xCF) | 0x30])
            out += stuffing + payload[175:]
        else:
            out += packet
        follows = bool(packet[1] & 0x40)
    return bytes(out)


async def test_frames_carried_on_in_a_second_pes_export_whole(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """A camera that carries each frame on in a PES without a PTS: its clip shows every
    frame of the recordings, as ffmpeg decodes them from the files."""
    config = make_config(tmp_path, **NO_FFMPEG)
    placed = place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    video_pid = 0x100
    for path in placed:
        split = split_every_frame(path.read_bytes(), video_pid)
        assert len(split) > path.stat().st_size
        info = path.stat()
        path.write_bytes(split)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    client = await started(start_agent, config)
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(6)})
    clip = await clip_of(client, session, tmp_path)
    assert await ffmpeg_errors(str(clip)) == ""
    sources = []
    for rendered in footage["ts"]:
        sources += [d for _, d in await frame_digests(str(rendered.path))]
    got = [d for _, d in await frame_digests(str(clip))]
    assert got == sources[: len(got)]
    assert len(got) >= len(sources) - 1
    # Each sample's bytes, read alone (as a re-boxed segment reads them), are the
    # unsplit recording's.
    for rendered, path in zip(footage["ts"], placed, strict=True):
        samples = []
        for source in (rendered.path, path):
            with opened(source) as (fd, size):
                recording = read_recording(fd, size)
                video = recording.video
                samples.append([b"".join(sample_bytes(fd, recording, video, n, n + 1))
                                for n in range(len(video))])  # fmt: skip
        assert samples[0] == samples[1]


@pytest.mark.parametrize("kind", ["ts", "mp4"])
async def test_footage_without_sound_exports(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, kind: str
) -> None:
    """Many cameras record no sound: the clip has video and the wall clock only."""
    silent = []
    for rendered in footage[kind]:
        target = tmp_path / "silent" / rendered.path.name
        target.parent.mkdir(exist_ok=True)
        code, out = await run("ffmpeg", "-v", "error", "-i", str(rendered.path), "-map", "0:v",
                              "-c", "copy", *(["-f", "mpegts"] if kind == "ts" else []),
                              str(target))  # fmt: skip
        assert code == 0, out
        silent.append(Rendered(target, rendered.offset_us))
    layout = {"mp4": {"layout": "frigate"}}.get(kind, {})
    config = make_config(tmp_path, recordings=layout, **NO_FFMPEG)
    place_old(silent, config.recordings.root, config.layout, "cam", T0)
    client = await started(start_agent, config)
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(6)})
    clip = await clip_of(client, session, tmp_path)
    assert await ffmpeg_errors(str(clip)) == ""
    code, out = await run("ffprobe", "-v", "error", "-show_entries", "stream=codec_type",
                          "-of", "csv=p=0", str(clip))  # fmt: skip
    assert out.split() == ["video", "subtitle"]
    if kind == "mp4":  # its session is re-boxed: it plays too
        assert await ffmpeg_errors(str(client.make_url(session["playlist_url"]))) == ""
