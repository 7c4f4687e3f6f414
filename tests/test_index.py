"""The SQLite index: writes, range queries, camera summaries, rebuilds."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import StartupError
from agent.index import Index, Segment

S = 1_000_000
FINGERPRINT = {"root": "/r", "layout": "{camera}/%Y-%m-%d/%H-%M-%S.ts", "timezone": "UTC"}


def seg(camera: str, start_s: int, dur_s: int = 10) -> Segment:
    return Segment(
        path=f"{camera}/{start_s:08d}.ts",
        camera=camera,
        start_us=start_s * S,
        end_us=(start_s + dur_s) * S,
        size=1000,
        mtime_ns=5,
        inode=1,
        container="mpegts",
        video_codec="h264",
        has_audio=True,
        timescale=90000,
        first_pts=0,
        duration=dur_s * 90000,
        frame_ticks=3600,
    )


@pytest.fixture
async def index(tmp_path: Path) -> Index:
    found = Index(tmp_path / "db" / "index.sqlite3", FINGERPRINT)
    await found.open()
    yield found  # type: ignore[misc]
    await found.close()


async def test_range_query_returns_overlapping_segments_in_order(index: Index) -> None:
    await index.put([seg("a", t) for t in (30, 0, 10, 20, 100)] + [seg("b", 5)])
    got = await index.segments("a", 15 * S, 30 * S)
    assert [s.start_us // S for s in got] == [10, 20]
    assert [s.start_us // S for s in await index.segments("a", 0, 1000 * S)] == [0, 10, 20, 30, 100]
    assert await index.segments("a", 40 * S, 100 * S) == []
    assert await index.segments("nobody", 0, 10 * S) == []
    # A long segment that started well before `from` still overlaps it.
    await index.put([seg("a", 200, dur_s=3600)])
    assert [s.start_us // S for s in await index.segments("a", 3000 * S, 3001 * S)] == [200]


async def test_camera_summaries_follow_writes(index: Index) -> None:
    await index.put([seg("a", t) for t in (0, 10, 20)] + [seg("b", 100, 5)])
    summary = {c.id: c for c in await index.cameras()}
    assert summary["a"].segment_count == 3
    assert (summary["a"].first_start_us, summary["a"].last_end_us) == (0, 30 * S)
    assert summary["a"].mean_segment_us == 10 * S
    assert index.counts() == (4, 2)
    assert await index.remove(["a/00000000.ts", "nope"]) == 1
    assert await index.remove_under("b") == 1
    summary = {c.id: c for c in await index.cameras()}
    assert list(summary) == ["a"]
    assert (summary["a"].segment_count, summary["a"].first_start_us) == (2, 10 * S)
    assert not await index.has_camera("b")


async def test_put_replaces_by_path(index: Index) -> None:
    await index.put([seg("a", 0)])
    await index.put([seg("a", 0, dur_s=4)])
    assert index.counts() == (1, 1)
    (only,) = await index.segments("a", 0, S)
    assert only.end_us == 4 * S
    assert await index.files() == {"a/00000000.ts": (1000, 5, 1, 0)}


async def test_other_settings_rebuild_the_index(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    first = Index(path, FINGERPRINT)
    await first.open()
    await first.put([seg("a", 0)])
    await first.close()
    same = Index(path, FINGERPRINT)
    await same.open()
    assert same.counts() == (1, 1)
    await same.close()
    other = Index(path, {**FINGERPRINT, "timezone": "Europe/Paris"})
    await other.open()
    assert other.counts() == (0, 0)
    await other.close()


async def test_unreadable_database_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    index = Index(path, FINGERPRINT)
    await index.open()
    await index.put([seg("a", 0)])
    assert index.counts() == (1, 1)
    await index.close()


async def test_locks_are_readable_by_another_process(index: Index) -> None:
    assert await index.locked_paths() == {}
    outside = sqlite3.connect(index.path)
    try:
        rows = outside.execute("SELECT path, sessions FROM locked_segments").fetchall()
        assert rows == []
        assert outside.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        outside.close()


async def test_a_lock_holds_the_segments_its_range_overlaps(index: Index) -> None:
    """One row a session: the view lists the camera's segments that overlap its range,
    each with the number of sessions holding it, as a retention process reads it."""
    await index.put([seg("a", t) for t in (0, 10, 20, 30)] + [seg("b", 10)])
    await index.lock("one", ("a", 15 * S, 25 * S))  # overlaps [10, 20) and [20, 30)
    await index.lock("two", ("a", 0, 20 * S))  # [0, 10) and [10, 20)
    assert await index.locked_paths() == {
        seg("a", 0).path: 1,
        seg("a", 10).path: 2,
        seg("a", 20).path: 1,
    }
    await index.put([seg("a", 5, 2)])  # a recording added to a held range is held too
    assert (await index.locked_paths())[seg("a", 5, 2).path] == 1
    assert await index.lock_holders() == {"one", "two"}
    await index.unlock("two")
    assert await index.locked_paths() == {seg("a", 10).path: 1, seg("a", 20).path: 1}
    await index.relock(["one"], {"three": ("b", 0, 100 * S)})
    assert await index.locked_paths() == {seg("b", 10).path: 1}


async def test_a_locked_index_is_never_deleted(tmp_path: Path) -> None:
    """Another process holding the database: start-up fails with one line, files intact."""
    path = tmp_path / "index.sqlite3"
    script = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('CREATE TABLE mine (x)')\n"
        "db.execute('BEGIN EXCLUSIVE')\n"
        "db.execute('INSERT INTO mine VALUES (42)')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "db.execute('COMMIT')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        index = Index(path, FINGERPRINT)
        with pytest.raises(StartupError, match="locked"):
            await index.open()
        await index.close()
        assert path.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT x FROM mine").fetchall() == [(42,)]
