"""The live index: startup scan, real file watching, recorders writing in place or
renaming into place, deletions, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from watchfiles import Change

from agent import indexer
from agent.demo import Rendered, place
from agent.index import Index
from agent.indexer import FileState, Indexer, _Candidate, share_watches
from agent.keys import INDEX, INDEXER
from agent.layout import Layout
from agent.times import format_us, parse_rfc3339

from .conftest import (
    camera_counts,
    hold_probes,
    make_config,
    place_old,
    scan_complete,
    started,
    wait_for,
)

T0 = parse_rfc3339("2026-11-20T08:00:00Z", "t")
S = 1_000_000
LAYOUT_KIND = {"ffmpeg": "ts", "mediamtx": "fmp4", "frigate": "mp4"}


async def cameras(client: TestClient[Any, Any]) -> dict[str, dict[str, Any]]:
    body = await (await client.get("/api/cameras")).json()
    return {c["id"]: c for c in body["cameras"]}


@pytest.mark.parametrize("preset", ["ffmpeg", "mediamtx", "frigate"])
async def test_startup_scan_indexes_each_preset(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, preset: str
) -> None:
    config = make_config(tmp_path, recordings={"layout": preset})
    run = footage[LAYOUT_KIND[preset]]
    files = place_old(run, config.recordings.root, config.layout, "front", T0)
    place_old(run, config.recordings.root, config.layout, "back.yard_2", T0 + 3600 * S)
    last = config.layout.parse(files[-1].relative_to(config.recordings.root).as_posix())
    assert last is not None
    client = await started(start_agent, config)
    found = await cameras(client)
    assert set(found) == {"front", "back.yard_2"}
    front = found["front"]
    assert front["segment_count"] == 3
    assert front["first_start"] == "2026-11-20T08:00:00Z"
    assert front["last_end"] == format_us(last.start_us + 2 * S)  # exact media durations
    assert front["segment_seconds"] == 2.0
    assert found["back.yard_2"]["first_start"] == "2026-11-20T09:00:00Z"


async def test_files_that_do_not_match_are_ignored(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    config = make_config(tmp_path)
    root = config.recordings.root
    (good,) = place(footage["ts"][:1], root, config.layout, "cam", T0)
    day = good.parent
    for name in ("08-00-10.ts.part", "garbage.ts", "08-00-20.mp4", ".08-00-30.ts"):
        shutil.copyfile(good, day / name)
    (root / "notes.txt").write_text("not footage")
    (root / "cam" / "2026-11-20" / "deeper").mkdir()
    shutil.copyfile(good, root / "cam" / "2026-11-20" / "deeper" / "08-00-40.ts")
    (day / "08-00-50.ts").write_bytes(b"matches the layout but is not video" * 50)
    os.utime(day / "08-00-50.ts", (time.time() - 3600, time.time() - 3600))
    (day / "08-01-00.ts").symlink_to(good)
    client = await started(start_agent, config)
    assert await camera_counts(client) == {"cam": 1}
    health = await (await client.get("/healthz")).json()
    assert health["index"]["unreadable_files"] == 1


async def test_write_then_rename_appears(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    config = make_config(tmp_path)
    client = await started(start_agent, config)
    target = config.recordings.root / config.layout.format("cam", T0)
    target.parent.mkdir(parents=True)
    temporary = target.with_name(target.name + ".tmp")
    shutil.copyfile(footage["ts"][0].path, temporary)
    os.rename(temporary, target)
    renamed = time.monotonic()
    await wait_for(lambda: _count_is(client, "cam", 1), what="renamed segment in the index")
    print(f"write-then-rename indexed after {time.monotonic() - renamed:.2f} s")


async def test_symlinks_are_never_indexed(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    config = make_config(tmp_path)
    client = await started(start_agent, config)
    link = config.recordings.root / config.layout.format("linked", T0)
    link.parent.mkdir(parents=True)
    link.symlink_to(footage["ts"][0].path)
    place_old(footage["ts"][:1], config.recordings.root, config.layout, "s", T0)
    await wait_for(lambda: _count_is(client, "s", 1), what="sentinel")
    assert "linked" not in await camera_counts(client)


async def _count_is(client: TestClient[Any, Any], camera: str, count: int) -> bool:
    return (await camera_counts(client)).get(camera, 0) == count


async def test_ffmpeg_segment_muxer_writing_in_place(tmp_path: Path, start_agent: Any) -> None:
    """A real recorder: ffmpeg in real time, writing each segment in place, then the next.
    No observation of the index ever shows a segment at other than its final size."""
    config = make_config(tmp_path)
    client = await started(start_agent, config)
    index = client.server.app[INDEX]
    day = config.recordings.root / "live" / datetime.now(UTC).strftime("%Y-%m-%d")
    day.mkdir(parents=True)
    recorder = await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "6.5",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-force_key_frames",
        "expr:gte(t,n_forced*2)",
        "-f",
        "segment",
        "-segment_time",
        "2",
        "-strftime",
        "1",
        str(day / "%H-%M-%S.ts"),
        env={**os.environ, "TZ": "UTC"},
    )
    seen: dict[str, set[int]] = {}
    try:
        while recorder.returncode is None:
            for path, (size, *_) in (await index.files()).items():
                seen.setdefault(path, set()).add(size)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recorder.wait(), 0.05)
    finally:
        if recorder.returncode is None:
            recorder.kill()
            await recorder.wait()
    assert recorder.returncode == 0
    on_disk = {f"live/{day.name}/{p.name}": p.stat().st_size for p in day.iterdir()}
    assert len(on_disk) == 4
    await wait_for(lambda: _count_is(client, "live", 4), what="all four segments")
    for path, sizes in seen.items():
        assert sizes == {on_disk[path]}, f"{path} was indexed while incomplete"
    assert len(seen) >= 2, "completed segments appear while the recorder is still running"


async def test_partial_files_wait_until_complete(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """An MP4 without its moov yet, and a TS cut mid-packet, are not indexed until whole."""
    client = None
    for preset, kind in (("frigate", "mp4"), ("ffmpeg", "ts")):
        config = make_config(tmp_path / preset, recordings={"layout": preset})
        client = await start_agent(config)
        await wait_for(lambda c=client: scan_complete(c), what="first scan")
        data = footage[kind][0].path.read_bytes()
        partial = config.recordings.root / config.layout.format("partial", T0)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data[: 32768 * 2])
        # A complete file of another camera, written now: once it is indexed, the partial
        # one has been judged after the same quiet time.
        (sentinel,) = place(footage[kind][:1], config.recordings.root, config.layout, "s", T0)
        await wait_for(lambda c=client: _count_is(c, "s", 1), what="sentinel")
        assert "partial" not in await camera_counts(client)
        with open(partial, "ab") as handle:
            handle.write(data[32768 * 2 :])
        await wait_for(lambda c=client: _count_is(c, "partial", 1), what="completed file")


async def test_delete_and_recreate(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    config = make_config(tmp_path)
    files = place(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    client = await start_agent(config)
    await wait_for(lambda: _count_is(client, "cam", 3), what="initial segments")
    files[1].unlink()
    await wait_for(lambda: _count_is(client, "cam", 2), what="deletion")
    shutil.copyfile(footage["ts"][1].path, files[1])
    await wait_for(lambda: _count_is(client, "cam", 3), what="re-creation")
    shutil.rmtree(config.recordings.root / "cam")
    await wait_for(lambda: _count_is(client, "cam", 0), what="removed directory")
    assert (await cameras(client)) == {}


async def test_directory_moved_in_is_indexed(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    config = make_config(tmp_path)
    client = await started(start_agent, config)
    outside = tmp_path / "elsewhere"
    place(footage["ts"], outside, config.layout, "moved", T0)
    os.rename(outside / "moved", config.recordings.root / "moved")
    await wait_for(lambda: _count_is(client, "moved", 3), what="moved-in directory")


async def test_a_new_directory_is_reconciled_alone(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """A new day's directory is read by itself, not by a reconcile of the whole archive."""
    config = make_config(tmp_path)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    client = await started(start_agent, config)
    status = client.server.app[INDEXER].status
    scans = status.scans
    outside = tmp_path / "elsewhere"
    place(footage["ts"], outside, config.layout, "cam", T0 + 86_400 * S)
    day = config.layout.format("cam", T0 + 86_400 * S).split("/")[1]
    os.rename(outside / "cam" / day, config.recordings.root / "cam" / day)
    await wait_for(lambda: _count_is(client, "cam", 6), what="the new day indexed")
    assert status.scans == scans


@pytest.mark.parametrize("watcher_weight", [indexer.WATCHER_WEIGHT, 2])
async def test_directories_made_one_inside_another_are_watched_at_once(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    monkeypatch: pytest.MonkeyPatch,
    watcher_weight: int,
) -> None:
    """Frigate's layout makes an hour's directory and a camera's inside it each hour,
    then writes into it: each directory is watched as soon as it is made (a new plan of
    watches each time), and files written meanwhile into the directory watched before
    are not lost, all long before a periodic reconcile would find them. With watchers of
    two directories each, the new directories fill new watchers while the earlier ones
    run on, and files written into the directories of each are found."""
    monkeypatch.setattr(indexer, "WATCHER_WEIGHT", watcher_weight)
    config = make_config(tmp_path, recordings={"layout": "frigate"})
    root = config.recordings.root
    place_old(footage["mp4"], root, config.layout, "cam", T0)
    client = await started(start_agent, config)
    status = client.server.app[INDEXER].status
    scans = status.scans
    for hour in (1, 2, 3):  # the next hours, each written as its directories are made
        place(footage["mp4"], root, config.layout, "cam", T0 + hour * 3_600 * S)
        place(footage["mp4"], root, config.layout, "cam", T0 + (hour * 3_600 - 600) * S)
    await wait_for(lambda: _count_is(client, "cam", 21), timeout=30, what="every hour indexed")
    assert status.scans == scans  # found by watching, not by a reconcile of everything
    assert status.watching
    if watcher_weight == 2:  # the root, a day, four hours and their cameras' directories
        assert status.watchers >= 4
    # Into the first directories, watched by the first watchers: still followed.
    place(footage["mp4"], root, config.layout, "cam", T0 + 1_200 * S)
    await wait_for(lambda: _count_is(client, "cam", 24), timeout=30, what="the first hour's")
    assert status.scans == scans


async def test_changed_file_is_read_again(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    config = make_config(tmp_path)
    (target,) = place(footage["ts"][:1], config.recordings.root, config.layout, "cam", T0)
    client = await start_agent(config)
    await wait_for(lambda: _count_is(client, "cam", 1), what="first version")
    # Replace it with two segments' worth of footage: the end moves by two seconds.
    joined = footage["ts"][0].path.read_bytes() + footage["ts"][1].path.read_bytes()
    target.write_bytes(joined)

    async def end_moved() -> bool:
        return bool((await cameras(client))["cam"]["last_end"] == format_us(T0 + 4 * S))

    await wait_for(end_moved, what="re-read of the changed file")


async def test_restart_reconciles_with_disk(
    tmp_path: Path, footage: dict[str, list[Rendered]], aiohttp_client: Any
) -> None:
    from agent.app import create_app

    config = make_config(tmp_path)
    files = place(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    client = await aiohttp_client(create_app(config))
    await wait_for(lambda: _count_is(client, "cam", 3), what="first run")
    await client.close()
    files[0].unlink()
    place(footage["ts"], config.recordings.root, config.layout, "other", T0)
    place(footage["ts"], config.recordings.root, config.layout, "gone", T0)
    client = await aiohttp_client(create_app(config))
    await wait_for(lambda: _count_is(client, "gone", 3), what="second run")
    await client.close()
    shutil.rmtree(config.recordings.root / "gone")  # a whole camera removed while stopped
    client = await aiohttp_client(create_app(config))

    async def reconciled() -> bool:
        return await camera_counts(client) == {"cam": 2, "other": 3}

    await wait_for(reconciled, what="the second run to match the disk")


@pytest.mark.slow  # waits out the settle time
async def test_files_replaced_by_garbage_leave_the_index(
    tmp_path: Path, footage: dict[str, list[Rendered]], aiohttp_client: Any
) -> None:
    """Same size and same mtime, but another file (a new inode), or the same file
    rewritten in place and its mtime set back (its ctime moved): read again at restart;
    garbage or a truncated file leaves the index, running or not."""
    from agent.app import create_app

    config = make_config(tmp_path)
    files = place(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    client = await aiohttp_client(create_app(config))
    await wait_for(lambda: _count_is(client, "cam", 3), what="first run")
    await client.close()
    stat = files[1].stat()
    garbage = files[1].with_name("garbage.tmp")
    garbage.write_bytes(b"\x47" + b"\x00" * (stat.st_size - 1))
    os.utime(garbage, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(garbage, files[1])
    stat = files[0].stat()
    with open(files[0], "r+b") as handle:
        handle.write(b"\x47" + b"\x00" * (stat.st_size - 1))
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files[0].stat().st_ino == stat.st_ino
    client = await aiohttp_client(create_app(config))
    await wait_for(lambda: _count_is(client, "cam", 1), what="the rewritten files to leave")
    with open(files[2], "r+b") as handle:
        handle.truncate(100)
    # The newest file may still be being written: it is judged after SETTLE_SECONDS.
    await wait_for(lambda: _count_is(client, "cam", 0), 30, "the truncated file to leave")


async def test_root_created_after_start(
    tmp_path: Path, footage: dict[str, list[Rendered]], aiohttp_client: Any
) -> None:
    from agent.app import create_app

    config = make_config(tmp_path)
    client = await aiohttp_client(create_app(config))  # the root does not exist yet
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "degraded"
    assert any(
        f"recordings root {config.recordings.root} (recordings.root) does not exist" in problem
        for problem in health["problems"]
    )
    place(footage["ts"], config.recordings.root, config.layout, "late", T0)
    await wait_for(lambda: _count_is(client, "late", 3), timeout=15, what="late root")

    async def healthy() -> bool:
        return bool((await (await client.get("/healthz")).json())["status"] == "ok")

    await wait_for(healthy, what="healthy status")


async def test_a_change_seen_while_the_file_is_read_is_not_lost(
    tmp_path: Path, footage: dict[str, list[Rendered]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher tells of a change to a file while it is being read: once that read is
    done the file is read again, not left with what it held before until the next full
    reconcile five minutes later."""
    config = make_config(tmp_path)
    root = config.recordings.root
    first, second = place_old(footage["ts"][:2], root, config.layout, "cam", T0)
    relpath = first.relative_to(root).as_posix()
    index = Index(tmp_path / "index.sqlite3", {"t": "1"})
    await index.open()
    held = hold_probes(monkeypatch)
    try:
        indexer = Indexer(root, config.layout, index)
        name = config.layout.parse(relpath)
        assert name is not None
        indexer._pending[relpath] = _Candidate(relpath, name, FileState(-1, -1))
        settling = asyncio.create_task(indexer._settle())
        await held.started()
        # Meanwhile the recorder replaces it (a longer file), and the watcher says so.
        shutil.copyfile(second, first)
        with first.open("ab") as handle:
            handle.write(second.read_bytes())
        an_hour_ago = time.time() - 3600
        os.utime(first, (an_hour_ago, an_hour_ago))
        await indexer._apply([(Change.modified, str(first))])
        held.release.set()
        await settling
        await indexer._settle()  # the next tick of the settle loop
        assert (await index.files())[relpath][0] == first.stat().st_size
    finally:
        held.release.set()
        await index.close()


async def test_a_reconcile_that_finds_nothing_new_looks_at_no_old_file(
    tmp_path: Path, footage: dict[str, list[Rendered]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recordings two days old: after the first scan, a reconcile leaves their directory
    alone while its names are unchanged (a file rewritten in place, its mtime set back,
    is not seen: nothing was looked at); a file added or removed changes the directory,
    which is listed again, its old files' stamps taken from the index; once a day every
    file is looked at, and the rewritten one is read again."""
    from agent import indexer as indexing

    config = make_config(tmp_path)
    root = config.recordings.root
    files = place(footage["ts"], root, config.layout, "cam", T0)
    two_days_ago = time.time() - 2 * 86_400
    for path in (*files, files[0].parent):  # the directory too: its names are as they were
        os.utime(path, (two_days_ago, two_days_ago))
    index = Index(tmp_path / "index.sqlite3", {"t": "1"})
    await index.open()
    try:
        indexer = Indexer(root, config.layout, index)
        await indexer.reconcile()
        assert len(await index.files()) == 3
        stat = files[0].stat()
        with open(files[0], "r+b") as handle:  # garbage, the stamp a reconcile compares
            handle.write(b"\x47" + b"\x00" * (stat.st_size - 1))
        os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
        looked: list[str] = []
        real_list_dir = indexing.list_dir

        def list_dir(*args: Any) -> Any:
            looked.append(args[2])
            return real_list_dir(*args)

        monkeypatch.setattr(indexing, "list_dir", list_dir)
        await indexer.reconcile()
        assert looked == []  # the directory was not even listed
        assert indexer.status.quiet_dirs == 1
        assert len(await index.files()) == 3  # the rewrite is not seen yet
        # A file removed: the directory's names changed, so it is listed; the rewritten
        # file, old, keeps its stamp from the index.
        files[2].unlink()
        await indexer.reconcile()
        assert len(looked) == 1
        assert sorted(await index.files()) == sorted(
            p.relative_to(root).as_posix() for p in files[:2]
        )
        # A day on, every file is looked at: the rewritten one is read again and goes.
        monkeypatch.setattr(indexing, "_FULL_LOOK_SECONDS", 0.0)
        await indexer.reconcile()
        await wait_for(
            lambda: _files_are(index, [files[1].relative_to(root).as_posix()]),
            what="the rewritten file to leave",
        )
    finally:
        await index.close()


def _day_dir(layout: Layout, n: int) -> str:
    """The directory of camera "cam"'s recordings of day `n` after T0's."""
    return layout.format("cam", T0 + n * 86_400 * S).rpartition("/")[0]


@contextlib.asynccontextmanager
async def _reconciling(
    tmp_path: Path, days: int, go: threading.Event
) -> AsyncIterator[tuple[Indexer, asyncio.Task[None], list[str]]]:
    """An indexer of `days` empty day directories, its reconcile of the whole root under
    way (held by the test's patches until `go`), and the directories; once done, the
    reconcile let go, cancelled and awaited, and the index closed."""
    config = make_config(tmp_path)
    dirs = [_day_dir(config.layout, n) for n in range(days)]
    for reldir in dirs:
        (config.recordings.root / reldir).mkdir(parents=True)
    index = Index(tmp_path / "index.sqlite3", {"t": "1"})
    await index.open()
    scanner = Indexer(config.recordings.root, config.layout, index)
    sweep = asyncio.create_task(scanner.reconcile())
    try:
        yield scanner, sweep, dirs
    finally:
        go.set()
        sweep.cancel()
        await asyncio.gather(sweep, return_exceptions=True)
        await index.close()


@pytest.mark.parametrize("fails", [False, True])
async def test_a_plan_made_while_a_reconcile_lists_leaves_the_directories_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """The watchers' recheck after a plan, made while a reconcile of the whole root is
    still listing its directories, queues none of them by itself (at a cold start that
    would read the archive twice): each is left to the reconcile. One its listing did not
    find (made after the listing passed) is reconciled by itself once it has listed; so
    are, if it fails, those it has not reconciled."""
    listed, go = threading.Event(), threading.Event()
    real_leaf_dirs, real_list_dir = indexer.leaf_dirs, indexer.list_dir

    def leaf_dirs(*args: Any) -> list[str]:
        found = real_leaf_dirs(*args)
        if not listed.is_set():  # the reconcile's listing: done, then held
            listed.set()
            go.wait(30)
        return found

    def list_dir(*args: Any) -> Any:
        if fails and args[2] == days[1]:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_list_dir(*args)

    monkeypatch.setattr(indexer, "leaf_dirs", leaf_dirs)
    monkeypatch.setattr(indexer, "list_dir", list_dir)
    async with _reconciling(tmp_path, 3, go) as (scanner, sweep, days):
        assert await asyncio.to_thread(listed.wait, 10)
        later = _day_dir(scanner.layout, 3)
        (scanner.root / later).mkdir()  # after the listing passed
        await scanner._recheck_after_plan({}, frozenset())
        assert scanner._recheck == {}  # nothing queued by itself meanwhile
        go.set()
        await sweep
        if fails:  # the one it failed on and the one after it, besides
            assert sorted(scanner._recheck) == [*days[1:], later]
            assert scanner._reconciled == {days[0]}
        else:
            assert list(scanner._recheck) == [later]
            assert scanner._reconciled == set(days)


async def test_a_directory_a_reconcile_is_looking_at_is_not_left_to_it_by_a_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan's recheck while a reconcile of the whole root looks at a directory never
    reconciled before reconciles it again by itself (that look may have begun before the
    plan's watches were set); the directories after it are left to the reconcile."""
    looking, go = threading.Event(), threading.Event()
    real_list_dir = indexer.list_dir

    def list_dir(*args: Any) -> Any:
        if not looking.is_set():  # the first directory's look: held
            looking.set()
            go.wait(30)
        return real_list_dir(*args)

    monkeypatch.setattr(indexer, "list_dir", list_dir)
    async with _reconciling(tmp_path, 2, go) as (scanner, sweep, days):
        assert await asyncio.to_thread(looking.wait, 10)
        await scanner._recheck_after_plan({}, frozenset())
        assert list(scanner._recheck) == [days[0]]
        go.set()
        await sweep
        assert list(scanner._recheck) == [days[0]]
        assert scanner._reconciled == set(days)


async def test_two_reconciles_at_once_each_end_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconcile of the whole root that fails while another is still listing ends as
    itself: the other ends cleanly, and no reconcile is left taken as under way (a plan's
    recheck would leave new directories to it for ever)."""
    listing, go = threading.Event(), threading.Event()
    real_leaf_dirs = indexer.leaf_dirs
    calls: list[int] = []

    def leaf_dirs(*args: Any) -> list[str]:
        calls.append(len(calls))
        if len(calls) == 1:  # the first reconcile: held while listing
            listing.set()
            go.wait(30)
        elif len(calls) == 2:  # the second: fails
            raise OSError(errno.EMFILE, "Too many open files")
        return real_leaf_dirs(*args)

    monkeypatch.setattr(indexer, "leaf_dirs", leaf_dirs)
    async with _reconciling(tmp_path, 1, go) as (scanner, first, _):
        assert await asyncio.to_thread(listing.wait, 10)
        await scanner.reconcile()  # fails
        assert [sweep.listed for sweep in scanner._sweeps] == [False]
        go.set()
        await first  # ends as itself
        assert scanner._sweeps == []


def test_a_directory_listing_adds_nothing_to_a_full_garbage_collection(tmp_path: Path) -> None:
    """What a directory's listing holds for each file (new, or old and known to the index)
    is left out of the collector's walks once collected: a listing of 100,000 is held
    while its files are read, and each full collection meanwhile held every request up
    for ~40 ms as long as it walked them."""
    config = make_config(tmp_path)
    root = config.recordings.root
    names = [config.layout.format("cam", T0 + k * 10 * S) for k in range(4)]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x47" * 188)
    known = {names[0]: (188, 1, 2, 3)}  # old, so taken as the index keeps it
    listing = indexer.list_dir(root, config.layout, names[0].rpartition("/")[0], known, 10)
    gc.collect()
    assert sorted(listing) == names
    assert listing[names[0]] == (188, 1, 2, 3)
    assert [name for name, stamp in listing.items() if gc.is_tracked(stamp)] == []


async def _files_are(index: Index, paths: list[str]) -> bool:
    return sorted(await index.files()) == sorted(paths)


@pytest.mark.slow  # two thousand recordings
async def test_a_mass_deletion_leaves_the_index_at_once_and_garbage_is_said_once(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One directory of 2,000 recordings (hard links, as a recorder's day) and 40 files
    of garbage under recordings' names: the garbage is said once each, not again at each
    reconcile; the recorder's retention deletes 1,500 recordings at once and they leave
    the index within seconds, /healthz answering all along."""
    import logging

    caplog.set_level(logging.WARNING, logger="agent.indexer")
    config = make_config(tmp_path)
    root = config.recordings.root
    source = footage["ts"][0].path
    paths = []
    for n in range(2_000):
        target = root / config.layout.format("cam", T0 + n * 2 * S)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
        paths.append(target)
    for n in range(40):
        garbage = root / config.layout.format("cam", T0 + (4_001 + 2 * n) * S)
        garbage.write_bytes(os.urandom(188 * 20))
    an_hour_ago = time.time() - 3600
    os.utime(source, (an_hour_ago, an_hour_ago))
    for garbage in root.glob("cam/*/*.ts"):
        os.utime(garbage, (an_hour_ago, an_hour_ago))
    client = await started(start_agent, config)
    await wait_for(lambda: _count_is(client, "cam", 2_000), 60, "the recordings indexed")
    indexer = client.server.app[INDEXER]
    await indexer.reconcile()
    await indexer.reconcile()
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 40, [r.getMessage() for r in skipped][:5]
    health = await (await client.get("/healthz")).json()
    assert health["index"]["unreadable_files"] == 40
    for path in paths[:1_500]:
        path.unlink()
    answers = 0

    async def gone() -> bool:
        nonlocal answers
        assert (await client.get("/healthz")).status == 200
        answers += 1
        return await _count_is(client, "cam", 500)

    await wait_for(gone, 30, "the deleted recordings to leave the index")
    assert answers >= 1


async def test_a_restart_with_a_complete_index_serves_sessions_at_once(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An index whose first scan was completed: after a restart, sessions are served while
    the first reconcile is still reading what arrived while the agent was stopped (held
    here), and that is indexed once it is read. A fresh index serves none until then."""
    from agent.app import create_app

    config = make_config(tmp_path)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    held = hold_probes(monkeypatch)
    client = await aiohttp_client(create_app(config))
    await held.started()
    body = {"camera_id": "cam", "from": format_us(T0), "to": format_us(T0 + 6 * S)}
    refused = await client.post("/api/playback", json=body)
    assert refused.status == 503  # a first scan under way: what it has not reached is missing
    held.release.set()
    await wait_for(lambda: _count_is(client, "cam", 3), what="first run")
    await client.close()
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0 + 20 * S)
    held.reading.clear()
    held.release.clear()
    client = await aiohttp_client(create_app(config))
    await held.started()  # the first reconcile reads what arrived meanwhile
    health = await (await client.get("/healthz")).json()
    assert (health["index"]["scan"], health["index"]["resumed"]) == ("running", True)
    answer = await client.post("/api/playback", json=body)
    assert answer.status == 201, await answer.text()
    held.release.set()
    await wait_for(lambda: _count_is(client, "cam", 6), what="what arrived meanwhile")


async def test_a_burst_whose_events_were_lost_is_reconciled_once_quiet(
    tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    """A recorder deletes 100 recordings at once and the kernel's event queue overflows:
    the watcher tells of 70. Their directory, in a burst, is reconciled once quiet, and
    the other 30 leave the index too, within seconds, not at the next full reconcile."""
    config = make_config(tmp_path)
    root = config.recordings.root
    paths = []
    for n in range(100):
        target = root / config.layout.format("cam", T0 + n * 2 * S)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(footage["ts"][0].path, target)
        paths.append(target)
    index = Index(tmp_path / "index.sqlite3", {"t": "1"})
    await index.open()
    stop = asyncio.Event()
    try:
        indexer = Indexer(root, config.layout, index)
        await indexer.reconcile()
        assert len(await index.files()) == 100
        settling = asyncio.create_task(indexer.settle_forever(stop))
        for path in paths:
            path.unlink()
        await indexer._apply([(Change.deleted, str(path)) for path in paths[:70]])
        assert len(await index.files()) == 30  # what the watcher told of
        await wait_for(lambda: _files_are(index, []), 10, "the untold 30 to leave")
    finally:
        stop.set()
        with contextlib.suppress(NameError):
            await settling
        await index.close()


async def test_a_disk_that_stalls_leaves_healthz_answering(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """The recordings' disk stops answering (every stat, listing and read held, as a USB
    disk resetting or a network share gone quiet): /healthz answers all the while and says
    so, the API answers from the index, and once the disk answers again all is as it was."""
    from . import stalling_fs

    if why := stalling_fs.available():
        pytest.skip(why)
    source = tmp_path / "disk"
    config = make_config(tmp_path)
    place_old(footage["ts"], source, config.layout, "cam", T0)
    control = tmp_path / "stall"
    with stalling_fs.mounted(source, config.recordings.root, control):
        client = await started(start_agent, config)
        assert await camera_counts(client) == {"cam": 3}
        control.touch()  # from now on, every look at the disk waits

        async def health() -> dict[str, Any]:
            async with asyncio.timeout(5):  # the stall lasts until the test ends it
                body: dict[str, Any] = await (await client.get("/healthz")).json()
            return body

        async def stall_said() -> bool:
            return any("has not answered" in p for p in (await health())["problems"])

        await wait_for(stall_said, timeout=15, what="the stall said")
        async with asyncio.timeout(5):
            assert await camera_counts(client) == {"cam": 3}
        for _ in range(5):  # and again, while the looks pile up
            assert (await health())["status"] == "degraded"
        control.unlink()

        async def healthy() -> bool:
            return (await health())["status"] == "ok"

        await wait_for(healthy, timeout=15, what="healthy again")
        assert await camera_counts(client) == {"cam": 3}
        await client.close()


async def test_a_directory_removed_and_made_again_is_watched_anew(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A camera's directory removed with its day's below it, then made again as a
    recorder does: the day's directory, made before anything watched the camera's again,
    is watched anew, and a recording written into it later is found by watching, not by
    the periodic reconcile. (Watchers of two directories each: the day's is not in the
    newest, which a new plan sets up anew anyway.)"""
    monkeypatch.setattr(indexer, "WATCHER_WEIGHT", 2)
    config = make_config(tmp_path)
    root = config.recordings.root
    for camera in ("a", "b"):
        place_old(footage["ts"], root, config.layout, camera, T0)
    client = await started(start_agent, config)
    status = client.server.app[INDEXER].status
    scans = status.scans

    async def watchers(count: int) -> bool:
        return status.watchers == count

    await wait_for(lambda: watchers(3), what="three watchers")
    shutil.rmtree(root / "a")
    await wait_for(lambda: _count_is(client, "a", 0), what="the camera's recordings gone")
    place_old(footage["ts"], root, config.layout, "a", T0)
    await wait_for(lambda: _count_is(client, "a", 3), what="the camera's recordings again")
    await wait_for(lambda: watchers(4), what="its directories watched anew")
    place(footage["ts"][:1], root, config.layout, "a", T0 + 600 * S)
    await wait_for(lambda: _count_is(client, "a", 4), timeout=30, what="the later recording")
    assert status.scans == scans


# -- how directories are shared among watchers (pure) ------------------------------------


def test_directories_are_shared_among_watchers_that_run_on() -> None:
    """A watcher sets its watches up holding the interpreter, so none weighs more than
    WATCHER_WEIGHT (a directory, or 512 of its files) while there are few; a new
    directory joins the newest watcher while it has room, else a new one; the others
    run on; one whose directories are all gone ends; one made again under a name already
    watched is watched anew."""
    size = indexer.WATCHER_WEIGHT
    dirs = {Path(f"/r/cam/{n:05d}"): 0 for n in range(2 * size + 10)}
    paths = list(dirs)
    kept, shares = share_watches([], dirs, set())
    assert (kept, [len(s) for s in shares]) == ([], [size, size, 10])
    assert [p for s in shares for p in s] == paths
    running = [frozenset(s) for s in shares]
    assert share_watches(running, dirs, set()) == ([0, 1, 2], [])  # nothing new

    new = Path("/r/cam/99999")
    kept, shares = share_watches(running, {**dirs, new: 0}, set())
    assert (kept, shares) == ([0, 1], [sorted([*running[2], new])])
    kept, shares = share_watches(running, {**dirs, new: 512 * size}, set())
    assert (kept, shares) == ([0, 1, 2], [[new]])  # no room in the newest: a new one

    # The first watcher's directories all gone, and all the second's but one.
    left = {path: 0 for path in [paths[size], *paths[2 * size :]]}
    assert share_watches(running, left, set()) == ([1, 2], [])
    kept, shares = share_watches(running, dirs, {paths[0]})  # made again under that name
    assert (kept, shares) == ([0, 1], [sorted([*running[2], paths[0]])])
    # A camera's directory removed with all below it and made again: what is below it was
    # made before anything watched it, and is watched anew too.
    tree = {Path(p): 0 for p in ("/r", "/r/a", "/r/a/day", "/r/b", "/r/b/day")}
    running = [frozenset(list(tree)[:3]), frozenset(list(tree)[3:])]
    kept, shares = share_watches(running, tree, {Path("/r/a")})
    assert (kept, shares) == ([0], [sorted([Path("/r/a"), Path("/r/a/day"), *running[1]])])


def test_a_directory_weighs_as_many_files_and_the_watchers_stay_few() -> None:
    many = {Path(f"/r/{n:03d}"): 8_000 for n in range(248)}  # a month of eight cameras
    kept, shares = share_watches([], many, set())
    weights = [sum(1 + 8_000 // 512 for _ in share) for share in shares]
    assert max(weights) <= indexer.WATCHER_WEIGHT
    assert len(shares) == -(-248 * 16 // indexer.WATCHER_WEIGHT)
    huge = {Path("/r/huge"): 10_000_000, **many}  # alone, whatever its weight
    assert [Path("/r/huge")] in share_watches([], huge, set())[1]
    endless = {Path(f"/r/{n:06d}"): 0 for n in range(100 * indexer.WATCHERS_MAX * 10)}
    kept, shares = share_watches([], endless, set())
    assert len(shares) == indexer.WATCHERS_MAX
    assert [p for s in shares for p in s] == list(endless)
