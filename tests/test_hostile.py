"""Hostile and broken input, as an attacker on the LAN or a misbehaving recorder would send
it: each answered with a clear error or ignored with one log line, nothing changed, the
agent up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent import routes
from agent.demo import Rendered, place
from agent.indexer import Indexer
from agent.keys import CONFIG, INDEXER
from agent.layout import make_layout

from .conftest import (
    T0,
    S,
    at,
    camera_counts,
    got,
    hold_probes,
    make_config,
    place_old,
    post,
    scan_complete,
    start_with,
    started,
    wait_for,
)
from .hls import parse
from .hostile_media import REGRESSIONS, all_regressions, ts_of_timestamps


async def test_a_body_of_exactly_64_kib_is_read(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    head = json.dumps({"camera_id": "cam", "from": at(0), "to": at(4)})[:-1]
    body = (head + ', "pad": "').encode()
    body += b"x" * (64 * 1024 - len(body) - 2) + b'"}'
    assert len(body) == 64 * 1024
    response = await client.post("/api/playback", data=body)
    assert response.status == 400  # read, then refused for its unknown field
    assert "unknown field `pad`" in (await response.json())["error"]
    response = await client.post("/api/playback", data=body + b" ")
    assert response.status == 413


async def test_json_nested_a_thousand_deep_is_400(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    response = await client.post("/api/playback", data="[" * 1000 + "]" * 1000)
    assert response.status == 400
    response = await client.post("/api/playback", data='{"a":' * 50_000 + "1" + "}" * 50_000)
    assert response.status in (400, 413)
    assert list(await response.json()) == ["error"]


async def test_names_outside_sane_years_are_not_indexed(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    hostile = config.recordings.root / "hcam" / "9999-12-31" / "23-59-55.ts"
    hostile.parent.mkdir(parents=True)
    shutil.copyfile(footage["ts"][0].path, hostile)
    client = await started(start_agent, config)
    response = await client.get("/api/cameras")
    assert response.status == 200
    assert await camera_counts(client) == {"cam": 3}
    said = [r for r in caplog.records if "outside 1970-2200" in r.getMessage()]
    assert len(said) == 1


async def test_a_date_folder_swapped_for_a_symlink_is_not_served(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(5)})
    day = tmp_path / "recordings" / "cam" / "2026-11-20"
    elsewhere = tmp_path / "elsewhere"
    shutil.move(day, elsewhere)
    day.symlink_to(elsewhere, target_is_directory=True)
    media = session["playlist_url"].replace("index.m3u8", "s000001.ts")
    response = await client.get(media)
    assert response.status == 404
    assert list(await response.json()) == ["error"]
    # The export reads the recordings by the same rule: refused, not read through it.
    await _export_refused(client, session)


async def _export_refused(client: Any, session: dict[str, Any]) -> None:
    clip = await client.get(session["playlist_url"].replace("index.m3u8", "clip.mp4"))
    assert clip.status == 404
    assert list(await clip.json()) == ["error"]


async def test_a_symlinked_recording_is_never_exported(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(5)})
    recording = sorted((tmp_path / "recordings").rglob("*.ts"))[1]
    outside = tmp_path / "outside.ts"
    shutil.copyfile(recording, outside)
    recording.unlink()
    recording.symlink_to(outside)
    await _export_refused(client, session)


async def test_a_fifo_in_place_of_a_recording_holds_nothing_up(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """A FIFO where an indexed recording was: a POST that cuts it, its media and the
    export each answer at once (a blocking open would hang a worker thread, and the
    camera's planning lock, for good), and the agent goes on answering."""
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, before = await post(client, {"camera_id": "cam", "from": at(0), "to": at(5)})
    recording = sorted((tmp_path / "recordings").rglob("*.ts"))[0]
    recording.unlink()
    os.mkfifo(recording)
    try:
        body = {"camera_id": "cam", "from": at(0.5), "to": at(5)}  # cut inside the FIFO
        answer = await asyncio.wait_for(client.post("/api/playback", json=body), 10)
        assert answer.status in (201, 404), await answer.text()
        await answer.read()
        for name in ("s000000.ts", "clip.mp4"):
            url = before["playlist_url"].replace("index.m3u8", name)
            response = await asyncio.wait_for(client.get(url), 10)
            assert response.status == 404, name
            await response.read()
        for _ in range(3):  # the worker threads are free: other cameras' work goes on
            status, _ = await asyncio.wait_for(post(client, body), 10)
            assert status in (201, 404)
        health = await asyncio.wait_for(client.get("/healthz"), 5)
        assert health.status == 200
        await health.read()
    finally:
        recording.unlink()


async def test_a_post_during_the_first_scan_is_503_never_a_short_session(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large archive takes a while to scan: until it is done, sessions are refused with
    Retry-After rather than planned from half an index. (The scan is held at its first
    file until the POST has answered, so the test does not depend on who is faster.)"""
    config = make_config(tmp_path)
    for hour in range(4):
        place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0 + hour * 6 * S)
    held = hold_probes(monkeypatch)
    try:
        client = await start_agent(config)
        await held.started()
        body = {"camera_id": "cam", "from": at(0), "to": at(24)}
        first = await client.post("/api/playback", json=body)
        assert first.status == 503
        assert first.headers.get("Retry-After") is not None
        assert "indexing" in (await first.json())["error"]
    finally:
        held.release.set()
    await wait_for(lambda: scan_complete(client), what="the first scan")
    status, session = await post(client, body)
    assert status == 201
    assert session["segment_count"] == 12


async def test_malformed_requests_are_one_warning_line(
    tmp_path: Path, start_agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_agent(make_config(tmp_path))
    for request in (
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == b"400"
    assert (await client.get("/healthz")).status == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    warned = [
        r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno == logging.WARNING
    ]
    assert len(warned) == 2
    assert all(record.exc_info is None for record in warned)
    assert "Content-Length" in warned[0].getMessage()


async def test_healthz_says_degraded_when_the_disk_is_under_the_floor(
    tmp_path: Path, start_agent: Any
) -> None:
    client = await start_agent(make_config(tmp_path, admission={"min_free_disk_mb": 1 << 30}))
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "degraded"
    assert any(problem.startswith("disk:") for problem in body["problems"])


def _small_disk(directory: Path) -> Any:
    """`directory` on a 1 MiB tmpfs of its own for the test (mounting needs root)."""
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    directory.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)], check=True)
    yield directory
    subprocess.run(["umount", "-l", str(directory)], check=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """The playback directory on a 1 MiB tmpfs."""
    yield from _small_disk(tmp_path / "state" / "playback")


@pytest.fixture
def small_index_disk(tmp_path: Path) -> Any:
    """The index's directory on a 1 MiB tmpfs."""
    yield from _small_disk(tmp_path / "state" / "index")


async def test_a_full_playback_disk_is_507_and_leaves_nothing(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, small_disk: Path
) -> None:
    """The disk fills between the free-space samples: the write's own ENOSPC answers 507.
    Sessions already made play on: serving media writes nothing."""
    client = await start_with(start_agent, tmp_path, footage, "mp4",
                              admission={"min_free_disk_mb": 0})  # fmt: skip
    _, kept = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    filler = _fill(small_disk)
    before = sorted(p.name for p in small_disk.iterdir())
    status, body = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    assert status == 507, body
    assert list(body) == ["error"]
    media = kept["playlist_url"].replace("index.m3u8", "s000001.m4s")
    assert await got(client, media) == 200
    assert sorted(p.name for p in small_disk.iterdir()) == before  # nothing half-written
    assert not list((small_disk / kept["id"]).glob(".*.tmp"))
    filler.unlink()
    status, _ = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    assert status == 201


async def test_a_folder_name_that_is_not_utf8_is_skipped_and_watching_goes_on(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path)
    root = config.recordings.root
    os.makedirs(os.fsencode(root) + b"/cam\xff/2024-06-01")
    os.makedirs(os.fsencode(root) + b"/cam/2024\xfe")
    place_old(footage["ts"], root, config.layout, "cam", T0)
    client = await started(start_agent, config)

    async def watching() -> bool:
        body = await (await client.get("/healthz")).json()
        return bool(body["index"]["watching"] and body["status"] == "ok")

    await wait_for(watching, what="the watcher to run")
    place(footage["ts"], root, config.layout, "live", T0)  # seen by the watcher, not a scan
    await wait_for(lambda: _counts_are(client, {"cam": 3, "live": 3}), what="new files")
    # The new camera's directory is watched too, for files that come later.
    place(footage["ts"], root, config.layout, "live", T0 + 6 * S)
    await wait_for(lambda: _counts_are(client, {"cam": 3, "live": 6}), what="later files")
    said = [r for r in caplog.records if "is not UTF-8" in r.getMessage()]
    assert len(said) == 2
    assert not [
        r for r in caplog.records if "watching" in r.getMessage() and "failed" in r.getMessage()
    ]


async def test_a_file_name_that_is_not_utf8_is_said_once_and_its_folder_still_followed(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """watchfiles stops on such a name: its folder is looked at every few seconds
    instead, the others are watched as before, and the watcher never fails."""
    config = make_config(tmp_path)
    root = config.recordings.root
    place_old(footage["ts"], root, config.layout, "cam", T0)
    client = await started(start_agent, config)

    async def watching() -> bool:
        body = await (await client.get("/healthz")).json()
        return bool(body["index"]["watching"])

    await wait_for(watching, what="the watcher to run")
    day = os.fsencode(root / "cam" / "2026-11-20")
    for _ in range(3):  # a change to it, again and again
        with open(day + b"/\xff.ts", "ab") as handle:
            handle.write(b"x")
    indexer = client.server.app[INDEXER]

    async def polled() -> bool:
        return "cam/2026-11-20" in indexer._polled and bool(
            (await (await client.get("/healthz")).json())["index"]["watching"]
        )

    await wait_for(polled, what="its folder polled and the rest watched")
    # Files the watcher no longer sees (their folder is not watched): the poll finds them.
    place(footage["ts"], root, config.layout, "cam", T0 + 6 * S)
    place(footage["ts"], root, config.layout, "other", T0)  # elsewhere: the watcher
    await wait_for(lambda: _counts_are(client, {"cam": 6, "other": 3}), what="new files")
    said = [r for r in caplog.records if "is not UTF-8" in r.getMessage()]
    assert len(said) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "ok", body
    # The name gone, its folder is watched again.
    os.unlink(day + b"/\xff.ts")
    await wait_for(lambda: _not_polled(indexer), what="its folder watched again")


async def _not_polled(indexer: Any) -> bool:
    return not indexer._polled


async def test_a_root_with_nothing_to_watch_but_a_bad_name_does_not_spin(
    tmp_path: Path, start_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root holding only a file whose name is not UTF-8: nothing can be watched, all
    of it is polled, and the watcher waits for the poll instead of planning anew in a
    loop."""
    config = make_config(tmp_path)
    root = config.recordings.root
    root.mkdir(parents=True)
    with open(os.fsencode(root) + b"/\xfe", "wb"):
        pass
    plans: list[float] = []
    polls: list[float] = []
    real_plan, real_poll = Indexer._watch_plan, Indexer._poll

    def counted_plan(self: Indexer) -> Any:
        plans.append(time.monotonic())
        return real_plan(self)

    async def counted_poll(self: Indexer) -> bool:
        polls.append(time.monotonic())
        return await real_poll(self)

    monkeypatch.setattr(Indexer, "_watch_plan", counted_plan)
    monkeypatch.setattr(Indexer, "_poll", counted_poll)
    client = await started(start_agent, config)
    indexer = client.server.app[INDEXER]

    async def root_polled() -> bool:
        return "" in indexer._polled

    await wait_for(root_polled, what="the root polled")
    settled = len(plans)
    seen = len(polls)

    async def two_more_polls() -> bool:
        return len(polls) >= seen + 2

    await wait_for(two_more_polls, what="two more polls")
    assert len(plans) == settled  # no plan between: it waits for the poll


async def _counts_are(client: Any, expected: dict[str, int]) -> bool:
    return bool(await camera_counts(client) == expected)


async def test_a_full_index_disk_is_507_and_loses_no_session(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    small_index_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = str(small_index_disk / "index.sqlite3")
    client = await start_with(start_agent, tmp_path, footage, "ts", index={"database": database})
    _, kept = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    filler = _fill(small_index_disk)
    for _ in range(20):  # until the index's free pages are used up
        status, body = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
        if status == 507:
            break
        assert status == 201, body
    assert status == 507
    assert list(body) == ["error"]
    deleted = await client.delete(f"/api/playback/{kept['id']}")
    if deleted.status == 507:  # refused whole: the session is still there and plays
        assert (await client.get(f"/api/playback/{kept['id']}")).status == 200
        assert (await client.get(kept["playlist_url"])).status == 200
    else:
        assert deleted.status == 204
    assert not [p for p in (tmp_path / "state" / "playback").iterdir() if p.name.startswith(".")]
    # A recording that arrives meanwhile waits, said once and in /healthz, no traceback.
    config = client.server.app[CONFIG]
    place_old(footage["ts"][:1], config.recordings.root, config.layout, "late", T0)

    async def full() -> bool:
        body = await (await client.get("/healthz")).json()
        return any("index's disk is full" in problem for problem in body["problems"])

    await wait_for(full, what="/healthz to say the index's disk is full")
    filler.unlink()
    assert (await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)}))[0] == 201
    if deleted.status == 507:
        assert (await client.delete(f"/api/playback/{kept['id']}")).status == 204

    async def indexed() -> bool:
        return "late" in await camera_counts(client)

    await wait_for(indexed, what="the late recording to be indexed")
    assert not await full()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_full_width_digits_name_nothing(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Unicode digits are digits to \\d: names must be ASCII to mean a segment."""
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(5)})
    wide = session["playlist_url"].replace("index.m3u8", "s\uff10\uff10\uff10\uff10\uff10\uff11.ts")
    assert (await client.get(wide)).status == 404
    assert (
        make_config(tmp_path).layout.parse("cam/\uff12\uff10\uff12\uff16-11-20/08-00-00.ts") is None
    )


async def test_hostile_recordings_leave_the_rest_indexed_and_played(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Every hostile file ever found, in a camera's folder before its real footage: each
    is refused once (unreadable), the real recordings are indexed and play, no background
    task fails, and a camera added later is indexed by the watcher."""
    config = make_config(tmp_path)
    root = config.recordings.root
    place_old(footage["ts"], root, config.layout, "cam", T0 + 60 * S)
    for n, name in enumerate(sorted(all_regressions())):
        if name.endswith(".ts"):  # before the real footage, as if it held hours
            target = root / config.layout.format("cam", T0 + n * S)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REGRESSIONS / name, target)
    client = await started(start_agent, config)
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok", health
    assert health["index"]["unreadable_files"] == 1
    assert await camera_counts(client) == {"cam": 3}
    status, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(70)})
    assert status == 201, session
    assert session["segment_count"] == 3
    place_old(footage["mp4"], root, make_layout("frigate", "UTC"), "ignored", T0)  # no match
    place_old(footage["ts"], root, config.layout, "later", T0)

    async def later_indexed() -> bool:
        return (await camera_counts(client)).get("later") == 3

    await wait_for(later_indexed, what="a camera added beside the hostile files")
    health = await (await client.get("/healthz")).json()
    assert health["problems"] == [], health


async def test_a_file_claiming_hours_its_bytes_cannot_hold_hides_no_footage(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """376 kB of MPEG-TS whose frames are 9 s apart (5 h, each step within what one
    packet may span), named before a camera's real footage: sessions play the footage,
    and the file is said once."""
    config = make_config(tmp_path)
    root = config.recordings.root
    place_old(footage["ts"], root, config.layout, "cam", T0 + 60 * S)
    target = root / config.layout.format("cam", T0)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(ts_of_timestamps([n * 9 * 90_000 for n in range(2000)]))
    old = time.time() - 3600
    os.utime(target, (old, old))
    client = await started(start_agent, config)
    assert await camera_counts(client) == {"cam": 4}  # indexed: its steps are each possible
    for _ in range(2):
        status, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(70)})
        assert status == 201, session
        playlist = parse(await (await client.get(session["playlist_url"])).text())
        assert len(playlist.entries) == 3
        assert abs(sum(entry.duration for entry in playlist.entries) - 6) < 0.5
    said = [r.getMessage() for r in caplog.records if "claims 18000 s in" in r.getMessage()]
    assert len(said) == 1
    assert target.name in said[0]


async def test_a_recording_replaced_under_a_session_is_refused_never_served_as_garbage(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a session was made: its first recording replaced by another file of the same
    size, its second rewritten in place at its size, its third grown. The first two's
    segments and the export answer 404 with a sentence, each said once; the grown one
    plays."""
    config = make_config(tmp_path)
    root = config.recordings.root
    paths = place_old(footage["ts"], root, config.layout, "cam", T0)
    client = await started(start_agent, config)
    status, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(6)})
    assert status == 201, session
    entries = parse(await (await client.get(session["playlist_url"])).text()).entries
    assert len(entries) == 3
    base = session["playlist_url"].rsplit("/", 1)[0]
    first, second, third = paths
    other = tmp_path / "other.ts"
    other.write_bytes(second.read_bytes()[: first.stat().st_size].ljust(first.stat().st_size))
    os.utime(other, ns=(first.stat().st_mtime_ns, first.stat().st_mtime_ns))
    os.replace(other, first)  # another file, of the same size and mtime
    with second.open("r+b") as handle:  # the same file, other bytes, the same size
        handle.seek(10_000)
        handle.write(bytes(188))
    with third.open("ab") as handle:
        handle.write(bytes(188))
    for _ in range(2):
        for entry, words in ((entries[0], "replaced by another file"), (entries[1], "rewritten")):
            response = await client.get(f"{base}/{entry.uri}")
            assert response.status == 404
            assert words in (await response.json())["error"]
        assert await got(client, f"{base}/{entries[2].uri}") == 200
    response = await client.get(f"{base}/clip.mp4")
    assert response.status == 404
    assert "create the session again" in (await response.json())["error"]
    said = [m for r in caplog.records if "since a session was planned" in (m := r.getMessage())]
    assert len(said) == 2  # each once
    assert (await client.get("/healthz")).status == 200


async def test_hostile_mp4s_in_a_mediamtx_folder_leave_the_rest_indexed(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    config = make_config(tmp_path, recordings={"layout": "mediamtx"})
    root = config.recordings.root
    place_old(footage["fmp4"], root, config.layout, "cam", T0 + 60 * S)
    # (samples-*: hostile to the export's sample tables alone; the index reads them.)
    mp4s = [
        name
        for name in sorted(all_regressions())
        if name.endswith(".mp4") and not name.startswith("samples-")
    ]
    for n, name in enumerate(mp4s):
        target = root / config.layout.format("cam", T0 + n * S)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REGRESSIONS / name, target)
        old = time.time() - 3600
        os.utime(target, (old, old))
    client = await started(start_agent, config)
    health = await (await client.get("/healthz")).json()
    assert health["index"]["unreadable_files"] == len(mp4s), health
    assert health["problems"] == [], health
    assert await camera_counts(client) == {"cam": 3}


async def test_a_flood_of_malformed_requests_is_a_few_lines(
    tmp_path: Path,
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two hundred malformed requests: at most ten warning lines in ten seconds, and the
    next line says how many went unsaid."""
    monkeypatch.setattr(routes, "MALFORMED_SECONDS", 3600.0)  # one window, however slow
    client = await start_agent(make_config(tmp_path))

    async def malformed() -> None:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
        await writer.wait_closed()

    for _ in range(200):
        await malformed()
    warned = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert 1 <= len(warned) <= 10
    assert (await client.get("/healthz")).status == 200
    # A window later (shortened here), the first line counts those not logged.
    monkeypatch.setattr(routes, "MALFORMED_SECONDS", 0.2)

    async def counted() -> bool:
        await malformed()
        return any("not logged" in r.getMessage() for r in caplog.records)

    await wait_for(counted, what="the count of the lines not logged")


@pytest.fixture
def read_only_playback(tmp_path: Path) -> Any:
    """The playback directory, bind-mounted onto itself, to be made read-only with the
    function this yields (mounting needs root); unmounted after the test."""
    if os.getuid() != 0:
        pytest.skip("mounting needs root (CI runs as root)")
    directory = tmp_path / "state" / "playback"
    directory.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)

    def remount(mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode},bind", str(directory)], check=True)

    yield remount
    subprocess.run(["umount", "-l", str(directory)], check=True)


async def test_a_read_only_playback_dir_is_said_and_refused_with_a_sentence(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    read_only_playback: Any,
) -> None:
    """An SD card remounted read-only: /healthz says so at start, a POST is 507 with a
    sentence (not 500 and a traceback), and once it can be written again, sessions are."""
    read_only_playback("ro")
    client = await start_with(start_agent, tmp_path, footage, "ts")
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "degraded"
    assert any("cannot be written to" in p for p in health["problems"]), health
    body = {"camera_id": "cam", "from": at(0), "to": at(4)}
    status, answer = await post(client, body)
    assert status == 507, answer
    assert "cannot be written to" in answer["error"]
    read_only_playback("rw")
    status, answer = await post(client, body)
    assert status == 201, answer
    health = await (await client.get("/healthz")).json()
    assert health["problems"] == [], health
