"""Playback sessions end to end: real footage, real ffmpeg, a real server, real players."""

from __future__ import annotations

import gzip
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from agent.demo import Rendered
from agent.keys import INDEX

from .conftest import (
    FRAME,
    at,
    fetch_all,
    post,
    start_with,
)
from .hls import parse, video_facts
from .players import (
    ffmpeg_errors,
    gstreamer,
    run,
)

# The agent is given an ffmpeg that is not there: anything that needed it would fail.
NO_FFMPEG = {"ffmpeg": {"ffmpeg": "/nonexistent/ffmpeg"}}
HOLD = 3 * FRAME  # the footage's audio starts up to 80 ms ahead of its video
MICROSECOND = Fraction(1, 1_000_000)


@pytest.mark.parametrize("kind", ["ts", "mp4", "fmp4"])
async def test_playlist_follows_the_rules(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, kind: str
) -> None:
    client = await start_with(start_agent, tmp_path, footage, kind)
    status, session = await post(client, {"camera_id": "cam", "from": at(1.5), "to": at(25)})
    assert status == 201, session
    assert session["segment_count"] == 6
    assert session["duration_s"] == 23.5
    assert (session["from"], session["to"]) == (at(1.5), at(25))
    response = await client.get(session["playlist_url"])
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    playlist = parse(await response.text())
    assert playlist.ended
    assert playlist.tags["EXT-X-PLAYLIST-TYPE"] == "VOD"
    assert "EXT-X-INDEPENDENT-SEGMENTS" in playlist.tags
    target = int(playlist.tags["EXT-X-TARGETDURATION"])
    assert all(int(e.duration + 0.5) <= target for e in playlist.entries)
    # The first segment starts at the keyframe before `from` (one a second in this footage).
    assert playlist.tags["EXT-X-START"] == "TIME-OFFSET=0.500,PRECISE=YES"
    # One timeline across the gap and the recorder's restart: no DISCONTINUITY, the wall
    # clock after the gap from PROGRAM-DATE-TIME.
    assert [e.discontinuity for e in playlist.entries] == [False] * 6
    assert playlist.entries[0].pdt == "2026-11-20T08:00:01.000Z"
    assert playlist.entries[1].pdt == "2026-11-20T08:00:02.000Z"  # after a cut one
    assert playlist.entries[3].pdt == "2026-11-20T08:00:20.000Z"
    assert playlist.entries[0].duration == 1.0

    paths = await fetch_all(client, session, tmp_path / "got")
    facts = [video_facts(p) for p in paths]
    for entry, fact in zip(playlist.entries, facts, strict=True):
        assert fact.first_is_keyframe, entry.uri
        # A segment may wait up to a few frames for audio that its recorder started early.
        assert 0 <= Fraction(entry.duration) - fact.duration <= HOLD, entry.uri
    # Exact to the tick: MPEG-TS's 90 kHz, or the MP4 video's own (ffmpeg's 12,800 Hz).
    tick = Fraction(1, 90000) if kind != "fmp4" else Fraction(1, 12800)
    for n in range(1, len(facts)):
        # Each segment starts where the one before ends (audio may hold it back a frame),
        # and where the playlist's durations say it does.
        assert 0 <= facts[n].start - facts[n - 1].end <= HOLD, f"jump before {n}"
        stated = facts[n - 1].start + Fraction(playlist.entries[n - 1].duration)
        assert abs(facts[n].start - stated) <= tick, f"EXTINF before {n}"


@pytest.mark.parametrize("kind", ["hevc", "hevc_fmp4", "hevc_mp4"])
async def test_hevc_is_fragmented_mp4_tagged_hvc1_for_safari(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, kind: str
) -> None:
    """An HEVC session is fragmented MP4 (version 7, an EXT-X-MAP for each init section)
    with an `hvc1` sample entry, as Apple's authoring rules ask, whether recorded as
    MPEG-TS or plain MP4 (re-boxed from the recordings' samples as each is asked for) or
    as fragmented MP4 (served as recorded, its `hev1` named `hvc1` in flight); with no
    ffmpeg at all (the one configured does not exist)."""
    client = await start_with(start_agent, tmp_path, footage, kind, **NO_FFMPEG)
    status, session = await post(client, {"camera_id": "cam", "from": at(1.5), "to": at(25)})
    assert status == 201, session
    playlist = parse(await (await client.get(session["playlist_url"])).text())
    assert playlist.tags["EXT-X-VERSION"] == "7"
    target = int(playlist.tags["EXT-X-TARGETDURATION"])
    assert all(int(e.duration + 0.5) <= target for e in playlist.entries)
    assert all(e.init is not None and e.uri.endswith(".m4s") for e in playlist.entries)
    base = session["playlist_url"].rsplit("/", 1)[0]
    for init in {e.init for e in playlist.entries}:
        response = await client.get(f"{base}/{init}")
        assert response.content_type == "video/mp4"
        section = await response.read()
        assert b"hvc1" in section
        assert b"hev1" not in section
        assert b"moof" not in section  # an init section is never served as media
    paths = await fetch_all(client, session, tmp_path / "got")
    paths += await fetch_all(client, session, tmp_path / "again")
    for entry, path in zip(playlist.entries * 2, paths, strict=True):
        fact = video_facts(path)
        assert fact.first_is_keyframe, entry.uri
        # EXTINF is exact to the microsecond it is written with.
        assert -MICROSECOND <= Fraction(entry.duration) - fact.duration <= HOLD, entry.uri
    assert await ffmpeg_errors(str(client.make_url(session["playlist_url"]))) == ""
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"  # no ffmpeg is no problem


async def test_continuity_counters_run_on_across_segments(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(1.5), "to": at(5)})
    paths = await fetch_all(client, session, tmp_path / "got")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in paths))
    code, out = await run(
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-v",
        "warning",
        "-i",
        str(joined),
        "-c",
        "copy",
        "-f",
        "null",
        "-",
    )
    assert code == 0
    assert out == ""


async def test_unwatched_session_writes_only_its_playlist(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "mp4")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    directory = tmp_path / "state" / "playback" / session["id"]
    assert sorted(p.name for p in directory.iterdir()) == [
        "index.m3u8",
        "index.m3u8.gz",
        "plan.json",
        "session.json",
    ]
    assert sum(p.stat().st_size for p in directory.iterdir()) < 64 * 1024


async def test_serving_headers(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(2), "to": at(6)})
    url = session["playlist_url"]
    plain = await client.get(url, headers={"Accept-Encoding": "identity"})
    zipped = await client.get(url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert gzip.decompress(await zipped.read()) == await plain.read()
    assert plain.headers["Access-Control-Allow-Origin"] == "*"
    assert "max-age=" in plain.headers["Cache-Control"]

    media = url.replace("index.m3u8", "s000000.ts")
    whole = await client.get(media, headers={"Accept-Encoding": "gzip"})
    body = await whole.read()
    assert whole.status == 200
    assert "Content-Encoding" not in whole.headers
    assert whole.headers["Content-Type"] == "video/mp2t"
    assert whole.headers["Access-Control-Allow-Origin"] == "*"
    assert int(whole.headers["Content-Length"]) == len(body)
    assert len(body) % 188 == 0
    part = await client.get(media, headers={"Range": "bytes=188-375"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 188-375/{len(body)}"
    assert await part.read() == body[188:376]
    tail = await client.get(media, headers={"Range": "bytes=-188"})
    assert await tail.read() == body[-188:]
    head = await client.head(media)
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(body)
    beyond = await client.get(media, headers={"Range": f"bytes={len(body)}-"})
    assert beyond.status == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(body)}"
    empty = await client.get(media, headers={"Range": "bytes=-0"})
    assert empty.status == 416
    etag = whole.headers["ETag"]
    assert (await client.get(media, headers={"If-None-Match": etag})).status == 304
    # A list, and weak tags: compared weakly, as RFC 9110 13.1.2 asks of If-None-Match.
    listed = f'"other", W/{etag}'
    assert (await client.get(media, headers={"If-None-Match": listed})).status == 304
    other = await client.get(media, headers={"If-None-Match": '"other", W/"else"'})
    assert other.status == 200
    assert await other.read() == body
    # An invalid range-spec (last before first) is ignored: the whole file (14.1.1).
    backwards = await client.get(media, headers={"Range": "bytes=5-3"})
    assert backwards.status == 200
    assert await backwards.read() == body
    stale = await client.get(media, headers={"Range": "bytes=0-187", "If-Range": '"other"'})
    assert stale.status == 200
    assert await stale.read() == body
    fresh = await client.get(media, headers={"Range": "bytes=0-187", "If-Range": etag})
    assert fresh.status == 206
    preflight = await client.options(
        media,
        headers={
            "Origin": "http://other.lan",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Range" in preflight.headers["Access-Control-Allow-Headers"]
    malformed = await client.options("/media/playback/pbs_nope/index.m3u8")
    assert malformed.status == 400
    assert list(await malformed.json()) == ["error"]


async def test_a_vanished_session_directory_is_a_json_404(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(2), "to": at(6)})
    shutil.rmtree(tmp_path / "state" / "playback" / session["id"])
    for headers in ({}, {"Accept-Encoding": "gzip"}):
        response = await client.get(session["playlist_url"], headers=headers)
        assert response.status == 404
        assert "gone" in (await response.json())["error"]
    assert (await client.get("/healthz")).status == 200


async def test_overlapping_sessions_count_their_locks(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    index = client.server.app[INDEX]
    _, first = await post(client, {"camera_id": "cam", "from": at(0), "to": at(4.5)})
    _, second = await post(client, {"camera_id": "cam", "from": at(3), "to": at(21)})
    locks = await index.locked_paths()
    assert sorted(locks.values()) == [1, 1, 2, 2]  # 08:00:02 and 08:00:04 are shared
    assert (await client.delete(f"/api/playback/{first['id']}")).status == 204
    locks = await index.locked_paths()
    assert sorted(locks.values()) == [1, 1, 1]  # the shared ones stay locked
    assert (await client.delete(f"/api/playback/{first['id']}")).status == 404
    assert (await client.delete(f"/api/playback/{second['id']}")).status == 204
    assert await index.locked_paths() == {}
    assert not (tmp_path / "state" / "playback" / second["id"]).exists()


async def test_get_session_and_it_is_gone_after_delete(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    status, created = await post(client, {"camera_id": "cam", "from": at(0), "to": at(4)})
    assert status == 201
    assert created["id"].startswith("pbs_")
    assert created["playlist_url"] == f"/media/playback/{created['id']}/index.m3u8"
    got = await client.get(f"/api/playback/{created['id']}")
    assert got.status == 200
    assert await got.json() == created
    await client.delete(f"/api/playback/{created['id']}")
    assert (await client.get(f"/api/playback/{created['id']}")).status == 404
    assert (await client.get(created["playlist_url"])).status == 404


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("not json", 400, "JSON object"),
        ([1, 2], 400, "JSON object"),
        ({"camera_id": "cam", "from": "2026-11-20T08:00:00Z"}, 400, "missing field `to`"),
        (
            {
                "camera_id": "cam",
                "from": "2026-11-20T08:00:00Z",
                "to": "2026-11-20T08:00:05Z",
                "speed": 2,
            },
            400,
            "unknown field `speed`",
        ),
        (
            {"camera_id": "cam", "from": "2026-11-20T08:00:00", "to": "2026-11-20T08:00:05Z"},
            400,
            "`from`",
        ),
        (
            {"camera_id": "cam", "from": "2026-11-20T08:00:05Z", "to": "2026-11-20T08:00:05Z"},
            400,
            "after",
        ),
        (
            {"camera_id": "cam", "from": "2026-11-20T08:00:00Z", "to": "2026-11-20T12:00:01Z"},
            400,
            "at most 14400 s",
        ),
        (
            {"camera_id": "../cam", "from": "2026-11-20T08:00:00Z", "to": "2026-11-20T08:00:05Z"},
            400,
            "camera_id",
        ),
        (
            {"camera_id": 7, "from": "2026-11-20T08:00:00Z", "to": "2026-11-20T08:00:05Z"},
            400,
            "camera_id",
        ),
        (
            {"camera_id": "nobody", "from": "2026-11-20T08:00:00Z", "to": "2026-11-20T08:00:05Z"},
            404,
            "nobody",
        ),
        (
            {"camera_id": "cam", "from": "2026-11-20T08:00:07Z", "to": "2026-11-20T08:00:19Z"},
            404,
            "no recorded footage",
        ),
        (
            {"camera_id": "cam", "from": "2026-11-20T07:00:00Z", "to": "2026-11-20T07:59:00Z"},
            404,
            "no recorded footage",
        ),
    ],
)
async def test_bad_requests_change_nothing(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    body: Any,
    status: int,
    words: str,
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    if isinstance(body, str):
        response = await client.post("/api/playback", data=body)
    else:
        response = await client.post("/api/playback", json=body)
    assert response.status == status
    error = await response.json()
    assert list(error) == ["error"]
    assert words in error["error"]
    assert list((tmp_path / "state" / "playback").iterdir()) == []
    assert await client.server.app[INDEX].locked_paths() == {}


async def test_body_over_64_kib_is_413(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    body = {"camera_id": "cam", "from": at(0), "to": at(4), "pad": "x" * 70000}
    response = await client.post("/api/playback", json=body)
    assert response.status == 413
    assert list(await response.json()) == ["error"]


async def test_only_the_sessions_own_files_are_served(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(4)})
    sid = session["id"]
    (tmp_path / "state" / "playback" / sid / "s000009.ts").symlink_to("/etc/passwd")
    for path, status in [
        (f"/media/playback/{sid}/session.json", 404),
        (f"/media/playback/{sid}/index.m3u8.gz", 404),
        (f"/media/playback/{sid}/s000002.ts", 404),  # not in this session's playlist
        (f"/media/playback/{sid}/s000009.ts", 404),
        (f"/media/playback/{sid}/..%2Fsession.json", 404),
        (f"/media/playback/{sid}/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),
        (f"/media/playback/{sid}/../{sid}/session.json", 404),
        (f"/media/playback/{sid[:-1]}/index.m3u8", 400),
        (f"/media/playback/{sid.upper()}/index.m3u8", 400),
        ("/media/playback/pbs_" + "0" * 32 + "/index.m3u8", 404),
        ("/api/playback/..%2F..%2Fetc", 400),
    ]:
        response = await client.get(path)
        assert response.status == status, path
        assert b"root:" not in await response.read()


async def test_a_recording_cut_short_after_planning_is_404_and_grown_is_served(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A recording whose last packet was cut after its session was planned: its segment
    is 404 with a sentence (said once), never a short or empty body; one that grew (a
    recorder still writing it) is served as it is now (said once)."""
    client = await start_with(start_agent, tmp_path, footage, "ts_reset")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    recordings = sorted((tmp_path / "recordings").rglob("*.ts"))
    planned = recordings[2].read_bytes()
    size = recordings[1].stat().st_size
    os.truncate(recordings[1], size - 100)  # the last packet cut short
    with recordings[2].open("ab") as handle:
        handle.write(bytes(188))
    base = session["playlist_url"].rsplit("/", 1)[0]
    for _ in range(2):
        response = await client.get(f"{base}/s000001.ts")
        assert response.status == 404
        assert f"cut short ({size - 100} of {size} bytes)" in (await response.json())["error"]
        response = await client.get(f"{base}/s000002.ts")
        assert response.status == 200
        assert len(await response.read()) == len(planned) + 188
    said = [r for r in caplog.records if "since a session was planned" in r.getMessage()]
    assert len(said) == 1
    said = [r for r in caplog.records if "when its session was planned" in r.getMessage()]
    assert len(said) == 1
    assert (await client.get("/healthz")).status == 200


@pytest.mark.slow
async def test_a_playlist_url_alone_creates_a_session_and_plays(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """VLC, players and scripts open one URL: 303 See Other to a new session's playlist."""
    client = await start_with(start_agent, tmp_path, footage, "ts")
    query = f"from={at(0.5)}&to={at(26)}".replace("+", "%2B")
    path = f"/api/cameras/cam/playlist.m3u8?{query}"
    response = await client.get(path, allow_redirects=False)
    assert response.status == 303
    location = response.headers["Location"]
    assert location.startswith("/media/playback/pbs_")
    assert (await client.get(location)).status == 200
    bad = await client.get("/api/cameras/cam/playlist.m3u8?from=2026-11-20T08:00:00Z")
    assert bad.status == 400
    assert "`to`" in (await bad.json())["error"]
    url = str(client.make_url(path))
    assert await ffmpeg_errors(url) == ""
    code, out = await gstreamer(url)
    assert code == 0, out
    assert "EOS" in out, out


async def test_the_etag_of_rewritten_media_names_its_rewrite(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Two sessions serve one recording on different timelines: the same file, mtime and
    length, other bytes. Their ETags differ, so no If-Range splices one with the other."""
    client = await start_with(start_agent, tmp_path, footage, "ts")
    bodies, tags = [], []
    for start, name in ((0, "s000001.ts"), (2, "s000000.ts")):  # both 08:00:02's recording
        _, session = await post(client, {"camera_id": "cam", "from": at(start), "to": at(26)})
        url = session["playlist_url"].replace("index.m3u8", name)
        response = await client.get(url)
        bodies.append(await response.read())
        tags.append(response.headers["ETag"])
    assert bodies[0] != bodies[1]
    assert len(bodies[0]) == len(bodies[1])  # one recording, rewritten in place
    assert tags[0] != tags[1]


def test_a_recording_is_changed_when_cut_short_replaced_or_rewritten_not_when_grown() -> None:
    from agent.playlists import RECORDED, MediaItem

    item = MediaItem(source="cam/a.ts", kind=RECORDED, duration=2.0, pdt_us=0,
                     discontinuity=False, size=1000, inode=7, mtime_ns=50, ctime_ns=60)  # fmt: skip
    assert item.changed(1000, 50, 7, 60) == ""
    assert item.changed(1188, 90, 7, 90) == ""  # grown: a recorder still writing it
    assert item.changed(999, 90, 7, 90) == "cut short (999 of 1000 bytes)"
    assert item.changed(1000, 50, 8, 95) == "replaced by another file"  # its times kept
    assert item.changed(1000, 90, 7, 90) == "rewritten"
    # FAT file systems number a file anew when they read it again: nothing else moves.
    assert item.changed(1000, 50, 8, 60) == ""
    # A plan from before the stamp was kept is not checked.
    old = MediaItem(source="cam/a.ts", kind=RECORDED, duration=2.0, pdt_us=0,
                    discontinuity=False, size=1000)  # fmt: skip
    assert old.changed(10, 1, 2, 3) == ""
