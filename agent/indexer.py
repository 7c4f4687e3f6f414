"""Keeps the index in step with the recordings on disk: a scan at start, a file watcher,
and a periodic reconcile for whatever the watcher missed.

A file is indexed once it is complete. Recorders either write a segment in place and move
on to the next one (ffmpeg's segment muxer, MediaMTX) or write it elsewhere and rename it
into place (Frigate). So a file counts as complete when
- a later segment of the same camera exists (the recorder has moved on), or
- it has not changed for QUIET_SECONDS and its structure is whole (an MP4 whose boxes
  all end within the file, an MPEG-TS file of whole packets), or
- it has not changed for SETTLE_SECONDS (a recorder that stopped mid-segment).
A file that changes after it was indexed is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple

from watchfiles import Change, watch
from watchfiles._rust_notify import WatchfilesRustInternalError

from .containers.probe import Cut, MediaFacts, ProbeError, fmp4_splits, is_long, probe, ts_splits
from .errors import AgentError
from .index import Index, Segment
from .layout import Layout, SegmentName, offset_of
from .samplestore import Stamp, stamp_of
from .tasks import on_own_thread, pause
from .times import format_us
from .wallclock import How, place

log = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
SETTLE_SECONDS = 15.0
RECONCILE_SECONDS = 300.0
POLL_SECONDS = 2.0  # how often a directory the watcher cannot follow is looked at
_BATCH = 256  # files probed per worker-thread call, and written per transaction
_SAID_KEPT = 10_000  # things said once (wallclock placements), of each kind
_CLAIMS_KEPT = 1_000  # instants undecided names were placed at, a camera's
_TICK_SECONDS = 0.25  # how often files still pending are looked at again
_SETTLE_SHARE = 2048  # new files a reconcile hands the settling at a time
# Recordings older than this rarely change: a reconcile takes an old file's stamp from
# the index instead of the disk, and leaves alone a directory whose names are as they
# were and whose files are all this old.
_OLD_NS = 86_400 * 1_000_000_000
_FULL_LOOK_SECONDS = 86_400.0  # each directory's files are all looked at this often
_COARSE_NS = 3_000_000_000  # the coarsest directory time of a file system (FAT: 2 s)
# A burst of changes in one directory (a recorder's retention deleting thousands of files)
# can overflow the kernel's queue of file events, and events are lost: a directory with
# this many changes in one batch is reconciled once it has been quiet this long.
_BURST = 64
_RECHECK_SECONDS = 2.0
# watchfiles sets a watcher's watches up holding the interpreter: about 55 us a directory
# and 0.1 us a file in it here (more on a Pi), a directory weighing as 512 files. So the
# directories are shared among watchers of at most WATCHER_WEIGHT each (~15 ms), more
# only to keep to WATCHERS_MAX (each is an inotify instance; a user has 128). A new
# directory joins the newest watcher, set up anew; the others run on.
WATCHER_WEIGHT = 256
WATCHERS_MAX = 32
_FILES_A_DIRECTORY = 512
_STEP_MS = 50  # how often the watchers, all together, look for changes...
_STEP_MAX_MS = 500  # ...however many they are: each at most this seldom
_DEBOUNCE_MS = 400  # a watcher hands changes on at most this long after the first
_STOP_SECONDS = 5.0  # how long a watcher's end is waited for (within a step, once set up)


def share_watches(
    running: list[frozenset[Path]], wanted: dict[Path, int], made: set[Path]
) -> tuple[list[int], list[list[Path]]]:
    """Which of the `running` watchers go on (their indexes) and the directories of each
    watcher to set up, so that every directory of `wanted` (each with the number of its
    entries) is watched. A running watcher goes on while it watches a directory still
    wanted; a directory `made` anew since it was planned (maybe removed and made again
    under the same name), or below one, is watched anew. New directories, in the order
    of their names (by time within a camera's or a day's), join the newest watcher that
    goes on, set up anew with them, while it has room; else they fill new watchers."""

    def weight(paths: Iterable[Path]) -> int:
        return sum(1 + wanted[path] // _FILES_A_DIRECTORY for path in paths)

    most = max(WATCHER_WEIGHT, -(-weight(wanted) // WATCHERS_MAX))
    kept = [i for i, dirs in enumerate(running) if not dirs.isdisjoint(wanted)]
    covered = _standing(set().union(*(running[i] for i in kept)), made)
    new = sorted(path for path in wanted if path not in covered)
    if not new:
        return kept, []
    if kept:
        newest = [path for path in running[kept[-1]] if path in wanted]
        if weight(newest) + weight(new) <= most:
            kept.pop()
            return kept, [sorted({*newest, *new})]
    shares: list[list[Path]] = []
    room = 0
    for path in new:
        if not shares or weight([path]) > room:
            shares.append([])
            room = most
        shares[-1].append(path)
        room -= weight([path])
    return kept, shares


def _standing(watched: set[Path], made: set[Path]) -> set[Path]:
    """Of the directories `watched`, those whose watches still stand: neither `made`
    anew since, nor below one that was."""
    if not made:
        return watched
    return {path for path in watched if path not in made and made.isdisjoint(path.parents)}


class FileState(NamedTuple):
    """A file's size, mtime, inode and ctime, as the index keeps them: a file being read
    (its `Stamp`, named). A directory's listing holds plain `Stamp`s, which the garbage
    collector stops tracking once they have survived a collection: a listing of 100,000
    FileStates (and the candidates' tuples holding them) put 200,000 objects in every
    full collection's walk while its files were read (docs/performance.md)."""

    size: int
    mtime_ns: int
    inode: int = -1
    ctime_ns: int = -1

    @classmethod
    def of(cls, stat: os.stat_result) -> FileState:
        return cls(*stamp_of(stat))

    @property
    def stamp(self) -> Stamp:
        return self.size, self.mtime_ns, self.inode, self.ctime_ns


@dataclass
class IndexerStatus:
    scan: str = "pending"  # pending, running, complete
    # The index was complete when the agent last stopped: sessions are served while the
    # first reconcile catches up with what changed meanwhile.
    resumed: bool = False
    scan_started: float = 0.0
    scan_seconds: float | None = None
    watching: bool = False
    watchers: int = 0  # watchfiles watchers running, each of some directories
    pending: int = 0
    unreadable: int = 0
    last_error: str = ""
    index_full: bool = False  # new recordings wait: the index's disk has no room
    scans: int = 0
    # The reconcile under way, or the last: its directories, those done, and those left
    # alone (their names as they were, their files a day old); the last one's seconds.
    dirs: int = 0
    dirs_done: int = 0
    quiet_dirs: int = 0
    reconcile_seconds: float | None = None
    # Cameras whose recordings' names left their instant undecided (wallclock.py): what
    # was chosen, for /healthz.
    undecided: dict[str, str] = field(default_factory=dict)


class Outcome(enum.Enum):
    """What probing a pending file found, besides its facts."""

    READY = "ready"  # facts read (or, on a final look, whatever could be read)
    GONE = "gone"  # removed before it could be read
    INCOMPLETE = "incomplete"  # readable, but maybe still being written: look again
    UNREADABLE = "unreadable"  # not a segment whose facts can be read


@dataclass(frozen=True)
class _Looked:
    """A directory as a reconcile last listed it."""

    stamp: tuple[int, int]  # its mtime and ctime: a name added or removed changes them
    newest_ns: int  # the newest mtime among its files then
    full_at: float  # when (monotonic) each of its files was last looked at on disk


@dataclass(frozen=True)
class _Watcher:
    """One watcher of some directories: its task, the event that ends it, the event set
    once it has ended, the directories it watches, and how often it looks (ms)."""

    task: asyncio.Task[None]
    over: asyncio.Event
    ended: asyncio.Event
    watched: frozenset[Path]
    step_ms: int


async def _end(watchers: list[_Watcher]) -> None:
    """End watchers and wait until they have."""
    for watcher in watchers:
        watcher.over.set()
    if watchers:
        await asyncio.wait([watcher.task for watcher in watchers])
    for watcher in watchers:
        if not watcher.task.cancelled():
            watcher.task.exception()  # retrieved: it was said, or it is moot now


class _Halt(threading.Event):
    """The event that stops a watchfiles watch, which also tells when the watch first
    looks at it: its watches are set up by then."""

    def __init__(self, on_first_look: Callable[[], None]) -> None:
        super().__init__()
        self._on_first_look: Callable[[], None] | None = on_first_look

    def is_set(self) -> bool:
        told, self._on_first_look = self._on_first_look, None
        if told is not None:
            told()
        return super().is_set()


@dataclass(eq=False)  # each its own: two under way may hold the same
class _Sweep:
    """A reconcile of the whole root under way: once it has listed the directories, those
    it has yet to look at (`ahead`) and the one it is looking at; the directories a plan's
    recheck left to it. Those of them its listing does not hold (made after it passed),
    or that it has not finished looking at when it ends early (it fails, raises or is
    cancelled), are reconciled by themselves."""

    listed: bool = False
    ahead: set[str] = field(default_factory=set)
    current: str | None = None
    left: set[str] = field(default_factory=set)

    def unfinished(self) -> set[str]:
        """Of the directories left to it, those it has not reconciled."""
        if not self.listed:
            return set(self.left)
        undone = set(self.ahead)
        if self.current is not None:
            undone.add(self.current)
        return self.left & undone


@dataclass
class _Candidate:
    relpath: str
    name: SegmentName
    state: FileState


def leaf_dirs(root: Path, layout: Layout, under: str = "") -> list[str]:
    """Relative paths of the directories that may hold segments, sorted (blocking);
    only those at or below directory `under` ("" for the whole root)."""
    leaves: list[str] = []

    def visit(directory: Path, prefix: str, level: int) -> None:
        if level == layout.depth - 1:
            leaves.append(prefix.rstrip("/"))
            return
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
            if level == 0 or not isinstance(error, FileNotFoundError):
                log.warning("index: cannot list %s: %s", directory, error.strerror)
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and layout.dir_may_match(level, entry.name):
                visit(Path(entry.path), f"{prefix}{entry.name}/", level + 1)

    if not root.is_dir():
        return leaves
    if not under:
        visit(root, "", 0)
        return leaves
    parts = under.split("/")
    if all(layout.dir_may_match(level, part) for level, part in enumerate(parts)):
        visit(root / under, f"{under}/", len(parts))
    return leaves


def list_dir(
    root: Path,
    layout: Layout,
    reldir: str,
    known: dict[str, Stamp] | None = None,
    old_before_ns: int = -1,
) -> dict[str, Stamp]:
    """The files of one directory whose relative paths may match the layout (blocking). A
    file `known` (indexed with this stamp) whose mtime is before `old_before_ns` keeps
    that stamp without a look at it on disk (old recordings rarely change)."""
    files: dict[str, Stamp] = {}
    known = known or {}
    prefix = f"{reldir}/" if reldir else ""
    try:
        entries = list(os.scandir(root / reldir))
    except (FileNotFoundError, NotADirectoryError):
        return files
    except PermissionError as error:
        log.warning("index: cannot list %s: %s", root / reldir, error.strerror)
        return files
    for entry in entries:
        relpath = prefix + entry.name
        stamp = known.get(relpath)
        if stamp is not None and stamp[1] < old_before_ns:
            files[relpath] = stamp
            continue
        try:
            if entry.is_file(follow_symlinks=False) and layout.may_match(relpath):
                stat = entry.stat(follow_symlinks=False)
                files[relpath] = stamp_of(stat)
        except FileNotFoundError:
            continue  # removed while we looked
    return files


# Each probed file: (file, outcome, facts when read, the problem when unreadable, and for
# a long recording the cuts that split it into parts).
_Probed = tuple[_Candidate, Outcome, MediaFacts | None, str, list[Cut] | None]


def _probe_many(root: Path, items: list[_Candidate], final: bool, seconds: int) -> list[_Probed]:
    """Probe files (blocking); `final` accepts any readable file, else only whole ones.
    A long recording is also split, every `seconds` (playback.segment_seconds), here
    once rather than at each POST that plays it. A fragmented MP4 file cut short (or
    corrupt) after some whole fragments is indexed, once settled, up to the last one."""
    results: list[_Probed] = []
    for item in items:
        path = root / item.relpath
        try:
            stat = path.stat()
            facts = probe(path)
        except FileNotFoundError:
            results.append((item, Outcome.GONE, None, "", None))
            continue
        except (ProbeError, OSError) as error:
            results.append((item, Outcome.UNREADABLE, None, str(error), None))
            continue
        except Exception as error:  # a reader's own defect: this file only, never the batch
            log.warning("index: reading %s failed", item.relpath, exc_info=True)
            results.append((item, Outcome.UNREADABLE, None, f"{type(error).__name__}", None))
            continue
        item.state = FileState.of(stat)
        ts = facts.container == "mpegts"
        whole = stat.st_size % 188 == 0 if ts else not facts.problem
        outcome = Outcome.READY if whole or final else Outcome.INCOMPLETE
        cuts = None
        step = facts.timescale * seconds
        if outcome is Outcome.READY and is_long(
            facts.container, facts.duration, facts.timescale, seconds
        ):
            try:
                if facts.container == "fmp4":
                    cuts = fmp4_splits(facts.keyframes, facts.first_pts, facts.duration, step)
                else:
                    cuts = ts_splits(path, facts.first_pts, facts.duration, step)
            except Exception as error:  # found when a session plays it, then
                log.info("index: cannot split %s (%s)", item.relpath, error)
        results.append((item, outcome, facts, "", cuts))
    return results


def _settle_states(root: Path, relpaths: list[str]) -> dict[str, os.stat_result | OSError]:
    """lstat of each pending file (blocking), or the error that stopped it."""
    states: dict[str, os.stat_result | OSError] = {}
    for relpath in relpaths:
        try:
            states[relpath] = os.lstat(root / relpath)
        except OSError as error:
            states[relpath] = error
    return states


class Indexer:
    """Scans, watches and reconciles `root` into `index`."""

    def __init__(self, root: Path, layout: Layout, index: Index, segment_seconds: int = 6) -> None:
        self.root = root
        self.layout = layout
        self.index = index
        self.segment_seconds = segment_seconds  # long recordings are split this often
        self.status = IndexerStatus()
        self._pending: dict[str, _Candidate] = {}
        self._unreadable: dict[str, Stamp] = {}  # files found unreadable, as they were then
        self._newest: dict[str, int] = {}  # camera -> latest start seen on disk
        self._inflight: set[str] = set()  # pending files being probed right now
        self._said: dict[str, set[tuple[object, ...]]] = {}  # _say_once's memory, by kind
        # Instants undecided names were placed at lately, a camera's (_place).
        self._claimed: dict[str, list[tuple[str, int, int]]] = {}
        self._touched: set[str] = set()  # of those, files the watcher told of meanwhile
        self._has_pending = asyncio.Event()
        self._reported: set[bytes] = set()  # undecodable names already logged
        self._replan = asyncio.Event()  # the watcher must plan anew: a directory came
        self._made: set[Path] = set()  # directories made since the watcher planned
        # Directories looked at every POLL_SECONDS, each with its subdirectories' names
        # when the watcher planned.
        self._polled: dict[str, frozenset[str]] = {}
        self._looked: dict[str, _Looked] = {}  # directories as the reconcile last listed them
        self._reconciled: set[str] = set()  # directories reconciled at least once
        self._sweeps: list[_Sweep] = []  # the reconciles of the whole root under way
        self._recheck: dict[str, float] = {}  # directories after a burst: when to reconcile
        self.scanned = asyncio.Event()  # set once the first scan is done

    # -- entry points: three loops, each run (and restarted) by the app's supervisor ---

    async def reconcile_forever(self, stop: asyncio.Event) -> None:
        """The first scan, then a reconcile every RECONCILE_SECONDS, until `stop`."""
        while not stop.is_set():
            await self.reconcile()
            await pause(stop, RECONCILE_SECONDS)

    async def settle_forever(self, stop: asyncio.Event) -> None:
        """Look at pending files every tick while there are any; sleep otherwise."""
        while not stop.is_set():
            if not self._pending and not self._recheck:
                self._has_pending.clear()
                await _first_of(self._has_pending, stop)
            if await pause(stop, _TICK_SECONDS):
                return
            await self._settle()
            now = time.monotonic()
            for reldir, due in list(self._recheck.items()):
                if due <= now:
                    await self._reconcile_dir(reldir)
                    if self._recheck.get(reldir) == due:  # no new burst meanwhile
                        del self._recheck[reldir]

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Bring the index in line with the disk: new files in, vanished out, changed re-read.

        One directory at a time, so memory stays bounded by the largest directory rather
        than growing with the archive.
        """
        status = self.status
        status.scan = "running" if status.scans == 0 else status.scan
        status.scan_started = time.monotonic()
        if status.scans == 0:
            status.resumed = await self.index.scanned_before()
        whole = False
        sweep = _Sweep()
        self._sweeps.append(sweep)
        try:
            dirs = await asyncio.to_thread(leaf_dirs, self.root, self.layout)
            listed = set(dirs)  # what it knows of directories gone is forgotten
            sweep.listed, sweep.ahead = True, set(listed)
            self._recheck_soon(sweep.left - listed)  # made after the listing passed them
            self._reconciled &= listed
            for gone in self._looked.keys() - listed:
                del self._looked[gone]
            if status.scans == 0 and status.resumed:
                # Sessions are served meanwhile: what was recorded while the agent was
                # stopped, in the newest directories (names sort by time), comes first.
                dirs.reverse()
            status.dirs, status.dirs_done, status.quiet_dirs = len(dirs), 0, 0
            removed = 0
            for reldir in await self.index.directories_not_in(set(dirs)):
                removed += await self.index.remove_under(reldir)
            for reldir in dirs:
                # Looked at from now on: no longer left to this sweep by a plan's recheck,
                # as its look may have begun before the plan's watches were set.
                sweep.ahead.discard(reldir)
                sweep.current = reldir
                removed += await self._reconcile_dir(reldir)
                sweep.current = None
                status.dirs_done += 1
            if removed:
                log.info("index: %d segment(s) no longer on disk", removed)
            status.last_error = ""
            whole = True
        except OSError as error:
            status.last_error = f"scan failed: {error}"
            log.error("index: scan of %s failed: %s", self.root, error)
        finally:
            self._recheck_soon(sweep.unfinished())  # none once it has looked at them all
            self._sweeps.remove(sweep)
            status.reconcile_seconds = round(time.monotonic() - status.scan_started, 3)
            first = status.scans == 0
            # Counted before anything awaits: whoever sees the scan complete sees it counted.
            status.scans += 1
            if first:
                status.scan_seconds = round(time.monotonic() - status.scan_started, 3)
                status.scan = "complete"
                self.scanned.set()
                log.info("index: first scan done in %.1f s", status.scan_seconds)
                if whole:  # remembered for the next start; else scanned whole then
                    with contextlib.suppress(sqlite3.Error, AgentError):
                        await self.index.mark_scanned()

    async def reconcile_under(self, reldir: str) -> None:
        """Reconcile one new directory (and what is below it), not the whole archive."""
        try:
            dirs = await asyncio.to_thread(leaf_dirs, self.root, self.layout, reldir)
        except OSError as error:
            log.warning("index: cannot list %s: %s", reldir, error)
            return
        for leaf in dirs:
            await self._reconcile_dir(leaf)

    async def _reconcile_dir(self, reldir: str) -> int:
        """Bring one directory's rows in line with its files. Quiet when nothing changed:
        a directory whose names are as they were and whose files were all a day old is
        not listed; in one that is, a day-old file's stamp is the index's. Each file is
        looked at on disk at least once a day all the same."""
        now_ns, now = time.time_ns(), time.monotonic()
        looked = self._looked.get(reldir)
        stamp = await asyncio.to_thread(_dir_stamp, self.root / reldir)
        if looked is None:  # its first look: every file, unless the index was complete
            full = not self.status.resumed
        else:
            full = now - looked.full_at >= _FULL_LOOK_SECONDS
        if (
            not full
            and looked is not None
            and stamp is not None
            and looked.stamp == stamp
            and looked.newest_ns < now_ns - _OLD_NS
        ):
            self.status.quiet_dirs += 1
            return 0
        known = await self.index.files(under=reldir)
        old_before = -1 if full else now_ns - _OLD_NS
        on_disk = await asyncio.to_thread(
            list_dir, self.root, self.layout, reldir, known, old_before
        )
        self._looked.pop(reldir, None)  # kept again once this look is done
        self._reconciled.add(reldir)
        prefix = f"{reldir}/" if reldir else ""
        for relpath in [p for p in self._unreadable if p.startswith(prefix)]:
            if relpath not in on_disk:
                del self._unreadable[relpath]
        unreadable = {p: s for p, s in self._unreadable.items() if p.startswith(prefix)}

        def compare() -> tuple[list[str], list[tuple[str, Stamp]], dict[str, int], int]:
            """The indexed files gone, the files new or changed since indexed, each
            camera's latest start among them all, and their newest mtime (a directory
            can hold 100,000 names: compared off the event loop; its candidates are made
            a share at a time, so that no full garbage collection walks 100,000 of them
            and holds every request up meanwhile)."""
            gone = [path for path in known if path not in on_disk]
            candidates = []
            newest: dict[str, int] = {}
            latest = 0
            for relpath, now_stamp in on_disk.items():
                name = self.layout.parse(relpath)
                if name is None:  # a date that does not exist, say
                    continue
                latest = max(latest, now_stamp[1])
                newest[name.camera] = max(name.start_us, newest.get(name.camera, name.start_us))
                if known.get(relpath) != now_stamp and unreadable.get(relpath) != now_stamp:
                    candidates.append((relpath, now_stamp))
            return gone, candidates, newest, latest

        def named(share: list[tuple[str, Stamp]]) -> list[_Candidate]:
            found = ((relpath, self.layout.parse(relpath), at) for relpath, at in share)
            return [
                _Candidate(relpath, name, FileState(*at)) for relpath, name, at in found if name
            ]

        gone, candidates, newest, latest = await asyncio.to_thread(compare)
        removed = await self.index.remove(gone)
        for camera, start_us in newest.items():
            self._newest[camera] = max(start_us, self._newest.get(camera, -1))
        # A share at a time: what the event loop does for each pending file, a directory
        # of 100,000 at once would hold every request up for a third of a second.
        for start in range(0, len(candidates), _SETTLE_SHARE):
            share = candidates[start : start + _SETTLE_SHARE]
            for candidate in await asyncio.to_thread(named, share):
                self._pending.setdefault(candidate.relpath, candidate)
            await self._settle()
        if not candidates:
            await self._settle()
        # A stamp a change could still leave as it is (directory times as coarse as FAT's
        # two seconds) is not kept: the directory is listed again next time.
        if stamp is not None and stamp[0] < now_ns - _COARSE_NS:
            self._looked[reldir] = _Looked(
                stamp, latest, now if looked is None or full else looked.full_at
            )
        return removed

    # -- watching ----------------------------------------------------------------------

    def _filter(self, change: Change, path: str) -> bool:
        relpath = self._relative(path)
        if relpath is None:
            return False
        if change == Change.deleted or self.layout.parse(relpath) is not None:
            return True  # a removed directory takes its segments with it
        parts = relpath.split("/")
        return change == Change.added and all(
            self.layout.dir_may_match(level, part) for level, part in enumerate(parts)
        )

    def _relative(self, path: str) -> str | None:
        try:
            relpath = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return None if relpath in ("", ".") else relpath

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow the recordings with watchfiles until `stop`; each batch is a hint to
        index or forget those files.

        Each directory is watched alone, shared among watchers (`share_watches`), so a new
        directory needs a new plan: the watchers it needs are set up while the others
        run on, and the ones they replace end only once they have handed on what they saw
        before then. Once they run, what may have changed before their watches were set
        is reconciled: of the directories looked at before then, those they are the
        first to watch, those being written to and those with recordings of the last
        day; and any made since the plan was drawn (which plans anew)."""
        watchers: list[_Watcher] = []
        started: list[_Watcher] = []  # set up for the plan under way
        planned: frozenset[Path] = frozenset()  # the last plan's directories
        try:
            while not stop.is_set():
                if not await asyncio.to_thread(self.root.is_dir):
                    await _end(watchers)
                    watchers, planned = [], frozenset()
                    self.status.watching, self.status.watchers = False, 0
                    log.warning("index: recordings root %s does not exist yet; waiting", self.root)
                    while not await asyncio.to_thread(self.root.is_dir):
                        if await pause(stop, 2.0):
                            return
                    await self.reconcile()
                self._replan.clear()
                made, self._made = self._made, set()
                started = []
                try:
                    watched, polled = await asyncio.to_thread(self._watch_plan)
                    self.status.watching = True  # its watches are set up now, or it fails
                    # A directory missing from the last plan went (or is polled), its
                    # watch with it: no longer counted as watched (nor what was below it,
                    # missing too), so watched anew if planned now.
                    if gone := set().union(*(w.watched for w in watchers)) - planned:
                        watchers = [replace(w, watched=w.watched - gone) for w in watchers]
                    running = [w.watched for w in watchers]
                    kept, shares = share_watches(running, watched, made)
                    step = min(_STEP_MAX_MS, _STEP_MS * (len(kept) + len(shares)))
                    for share in shares:  # one at a time: each holds the interpreter
                        started.append(await self._start_watcher(share, step))
                except FileNotFoundError:  # the root went (watchfiles skips any other)
                    await _end(started)
                    started = []
                    self._made |= made
                    if await pause(stop, 0.1):
                        return
                    continue
                except Exception as error:
                    await _end(started + watchers)
                    watchers, started, planned = [], [], frozenset()
                    self.status.watchers = 0
                    if await self._watch_failed(error, stop):
                        return
                    continue
                # Nothing is new to the first plan: its directories are reconciled once
                # watched if they were written to lately, like all others.
                earlier = frozenset(
                    watched if not planned else _standing(set().union(*running), made)
                )
                replaced = [w for i, w in enumerate(watchers) if i not in kept]
                watchers, started = [watchers[i] for i in kept] + started, []
                self._polled, planned = polled, frozenset(watched)
                self.status.watching, self.status.watchers = True, len(watchers)
                if replaced:  # what they saw before the new watches were set: handed on
                    handed = max(_DEBOUNCE_MS + 3 * w.step_ms for w in replaced) / 1000
                    stopping = await pause(stop, handed)
                    await _end(replaced)
                    if stopping:
                        return
                await self._recheck_after_plan(watched, earlier)
                await _first_of(self._replan, stop, *(w.ended for w in watchers))
                if ended := [w for w in watchers if w.task.done()]:
                    failure = ended[0].task.exception() or RuntimeError("the watch ended")
                    await _end(watchers)
                    watchers, planned = [], frozenset()
                    self.status.watching, self.status.watchers = False, 0
                    if await self._watch_failed(failure, stop):
                        return
        finally:
            self.status.watching, self.status.watchers = False, 0
            await _end(started + watchers)

    async def _start_watcher(self, watched: list[Path], step: int) -> _Watcher:
        """A watcher of `watched`, once its watches are set up; raises what stopped it
        from starting."""
        over, ready, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
        task = asyncio.ensure_future(self._follow(watched, over, ready, step))
        task.add_done_callback(lambda _: ended.set())
        watcher = _Watcher(task, over, ended, frozenset(watched), step)
        try:
            await _first_of(ready, ended)
        except BaseException:  # the agent stops meanwhile: so does this watcher
            await _end([watcher])
            raise
        if task.done():
            raise task.exception() or RuntimeError("the watch ended at once")
        return watcher

    async def _watch_failed(self, error: BaseException, stop: asyncio.Event) -> bool:
        """Say why the watching stopped, wait a second, and reconcile what happened
        meanwhile; whether `stop` came."""
        self.status.watching = False
        if _undecodable_name(error):
            # A file of a name that is not UTF-8 arrived: the next plan polls its folder
            # (once for each such file, not at each change to it).
            log.info("index: a name that is not UTF-8 appeared; watching around it")
        else:
            log.error("index: watching %s failed; starting again", self.root, exc_info=error)
        if await pause(stop, 1.0):
            return True
        await self.reconcile()  # catch up on what happened while not watching
        return False

    async def _recheck_after_plan(self, watched: dict[Path, int], earlier: frozenset[Path]) -> None:
        """Once new watchers' watches are set: reconcile soon the directories of
        recordings looked at before then that they are the first to watch (not in
        `earlier`), that were being written to then or that held recordings of the last
        day; and plan anew if a directory was made since this plan was drawn. One not
        looked at yet is left to a reconcile under way that will, or that is still listing
        the directories (none: it is reconciled)."""
        leaves = await asyncio.to_thread(leaf_dirs, self.root, self.layout)
        planned = {self._relative(str(path)) or "" for path in watched} | set(self._polled)
        recent = time.time_ns() - _OLD_NS
        due = time.monotonic()
        listing = [sweep for sweep in self._sweeps if not sweep.listed]
        for reldir in leaves:
            looked = self._looked.get(reldir)
            if reldir not in self._reconciled:  # unless a reconcile under way will
                to = listing or [sweep for sweep in self._sweeps if reldir in sweep.ahead]
                for sweep in to:
                    sweep.left.add(reldir)
                due_now = not to
            else:  # `looked` None: its names changed within seconds of the look
                new = (self.root / reldir) not in earlier
                due_now = new or looked is None or looked.newest_ns >= recent
            if due_now:
                self._recheck.setdefault(reldir, due)
            if reldir not in planned and _utf8(reldir):  # one that is not was left out
                self._replan.set()
        self._has_pending.set()

    def _recheck_soon(self, reldirs: set[str]) -> None:
        """Reconcile these directories by themselves, soon."""
        due = time.monotonic()
        for reldir in reldirs:
            self._recheck.setdefault(reldir, due)
        if reldirs:
            self._has_pending.set()

    async def poll_forever(self, stop: asyncio.Event) -> None:
        """Look at the directories the watcher cannot follow (a file name in them is not
        UTF-8) every POLL_SECONDS: a leaf's files are reconciled; a subdirectory added or
        removed is indexed or forgotten, and the watcher plans anew to follow it; once a
        directory no longer holds such a name, the watcher plans anew to follow it."""
        while not await pause(stop, POLL_SECONDS):
            try:
                replan = bool(self._polled) and await self._poll()
            except OSError as error:  # out of descriptors, say: look again next time
                log.warning("index: cannot look at a polled directory: %s", error)
                continue
            if replan:
                self._replan.set()

    async def _poll(self) -> bool:
        """One look at every polled directory; whether the watcher must plan anew."""
        replan = False
        for reldir, planned in list(self._polled.items()):
            level = len(reldir.split("/")) if reldir else 0
            if level == self.layout.depth - 1:
                await self._reconcile_dir(reldir)  # a leaf: its recordings
            looked = await asyncio.to_thread(self._look, reldir)
            if looked is None:  # gone: the next plan no longer has it
                replan = True
                continue
            subdirs, clean = looked
            for name in sorted(subdirs - planned):
                self._made.add(self.root / reldir / name)  # maybe made again: watched anew
                await self.reconcile_under(f"{reldir}/{name}" if reldir else name)
            for name in sorted(planned - subdirs):
                await self.index.remove_under(f"{reldir}/{name}" if reldir else name)
            replan = replan or clean or subdirs != planned
        return replan

    def _look(self, reldir: str) -> tuple[frozenset[str], bool] | None:
        """The names of a directory's subdirectories, and whether it no longer holds a
        file whose name is not UTF-8; None if it is gone (blocking; other failures to
        list it are raised, never taken for subdirectories removed)."""
        try:
            entries = list(os.scandir(os.fsencode(self.root / reldir)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        subdirs = frozenset(
            os.fsdecode(e.name)
            for e in entries
            if e.is_dir(follow_symlinks=False) and not _undecodable(e.name)
        )
        clean = not any(
            _undecodable(e.name) for e in entries if not e.is_dir(follow_symlinks=False)
        )
        return subdirs, clean

    async def _follow(
        self,
        paths: list[Path],
        over: asyncio.Event,
        ready: asyncio.Event,
        step: int,
    ) -> None:
        """Apply watchfiles' batches of changes in the directories `paths` (each watched
        alone), looked for every `step` ms, until `over` is set; `ready` is set once its
        watches are. A new directory asks for a new plan. watchfiles runs on a daemon
        thread of its own, where it also sets its watches up (holding the interpreter
        meanwhile), so that it never keeps the agent from stopping."""
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[set[tuple[Change, str]] | BaseException | None] = asyncio.Queue()
        halt = _Halt(lambda: tell(set()))  # its watches are set up once it looks at halt

        def tell(item: set[tuple[Change, str]] | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(batches.put_nowait, item)

        def run() -> None:
            try:
                for changes in watch(
                    *paths,
                    watch_filter=self._filter,
                    stop_event=halt,
                    debounce=_DEBOUNCE_MS,
                    step=step,
                    rust_timeout=0,
                    recursive=False,
                    ignore_permission_denied=True,
                    raise_interrupt=False,
                ):
                    tell(changes)
            except Exception as error:
                tell(error)
            else:
                tell(None)

        watching = on_own_thread(run, "index-watch")
        relay = asyncio.ensure_future(over.wait())
        relay.add_done_callback(lambda _: halt.set())
        try:
            while (item := await batches.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                ready.set()
                if not item:
                    continue
                if made := await self._apply(item):
                    self._made.update(self.root / reldir for reldir in made)
                    self._replan.set()
                await self._settle()
        finally:
            halt.set()
            relay.cancel()
            # It stops within a step of `halt`, once its watches are set up.
            await asyncio.wait([watching], timeout=_STOP_SECONDS)
            if not watching.done():
                log.warning("index: a watcher did not stop within %.0f s; left", _STOP_SECONDS)

    def _watch_plan(self) -> tuple[dict[Path, int], dict[str, frozenset[str]]]:
        """(directories to watch, each alone, each with the number of its entries;
        directories to look at every POLL_SECONDS instead, relative to the root, each
        with its subdirectories' names).

        Each directory is watched alone, never the root with all below it: watchfiles
        sets a recursive watch up by listing every file below while it holds the
        interpreter (2 us a file: four seconds at two million recordings, in which no
        request is answered). A new directory makes a new plan.

        watchfiles stops on a name that is not UTF-8 in what it watches: a directory that
        holds a file of such a name is not watched but looked at every POLL_SECONDS. Such
        names are reported once and left out (no layout matches them). Blocking."""
        watched: dict[Path, int] = {}
        polled: dict[str, frozenset[str]] = {}
        leaf = self.layout.depth - 1

        def undecodable(path: bytes) -> bool:
            if not _undecodable(os.path.basename(path)):
                return False
            if path not in self._reported:
                self._reported.add(path)
                log.warning("index: skipping %r: the name is not UTF-8", os.fsdecode(path))
            return True

        def unlistable(directory: bytes, level: int, error: OSError) -> None:
            if level == 0:
                raise error  # the root: the watcher starts again shortly
            if isinstance(error, PermissionError):
                # Planned all the same (watchfiles leaves it out), not planned anew at each
                # look; the reconcile says it cannot list it.
                watched[Path(os.fsdecode(directory))] = 0

        def visit(directory: bytes, level: int) -> None:
            if level == leaf:
                try:  # a directory of recordings: its names alone, all read at C speed
                    names = os.listdir(directory)
                except OSError as error:
                    unlistable(directory, level, error)
                    return
                if _decodable(names):
                    watched[Path(os.fsdecode(directory))] = len(names)
                    return
            try:
                entries = list(os.scandir(directory))
            except OSError as error:
                unlistable(directory, level, error)
                return
            subdirs = [
                entry
                for entry in entries
                if entry.is_dir(follow_symlinks=False) and not undecodable(entry.path)
            ]
            bad_files = [
                e for e in entries if not e.is_dir(follow_symlinks=False) and undecodable(e.path)
            ]
            if bad_files:
                reldir = self._relative(os.fsdecode(directory)) or ""
                polled[reldir] = frozenset(os.fsdecode(entry.name) for entry in subdirs)
            else:
                watched[Path(os.fsdecode(directory))] = len(entries)
            if level < leaf:
                for entry in subdirs:
                    if self.layout.dir_may_match(level, os.fsdecode(entry.name)):
                        visit(entry.path, level + 1)

        visit(os.fsencode(self.root), 0)
        return watched, polled

    async def _apply(self, changes: Iterable[tuple[Change, str]]) -> list[str]:
        """Index or forget what a batch of changes touched; the new directories."""
        # A batch is a set: an add and a delete of one path come unordered, so what
        # counts is whether the path exists now.
        touched = {r for _, path in changes if (r := self._relative(path)) is not None}
        by_dir: dict[str, int] = {}
        for relpath in touched:
            reldir = relpath.rpartition("/")[0]
            by_dir[reldir] = by_dir.get(reldir, 0) + 1
        for reldir, count in by_dir.items():
            leaf = len(reldir.split("/")) if reldir else 0
            if count >= _BURST and leaf == self.layout.depth - 1:  # a recordings' directory
                # Looked at again once quiet: its events may not all have come.
                self._recheck[reldir] = time.monotonic() + _RECHECK_SECONDS
                self._has_pending.set()
        # Each path there now, and whether it is a directory.
        existing = await asyncio.to_thread(
            lambda: {
                r: os.path.isdir(self.root / r) for r in touched if os.path.lexists(self.root / r)
            }
        )
        gone: list[str] = []
        new_dirs: list[str] = []
        for relpath in sorted(touched):
            name = self.layout.parse(relpath)
            exists = relpath in existing
            if name is None:
                if existing.get(relpath):
                    new_dirs.append(relpath)  # files moved in with it raise no event
                elif not exists and await self.index.remove_under(relpath):
                    log.info("index: directory %s removed", relpath)
            elif exists:
                self._note_newest(name)
                if relpath in self._inflight:
                    self._touched.add(relpath)  # read again once this read is done
                self._pending.setdefault(relpath, _Candidate(relpath, name, FileState(-1, -1)))
            else:
                self._pending.pop(relpath, None)
                self._unreadable.pop(relpath, None)
                gone.append(relpath)
        removed = await self.index.remove(gone)
        if removed:
            log.info("index: %d segment(s) deleted", removed)
        for reldir in new_dirs:
            if not any(reldir.startswith(f"{other}/") for other in new_dirs):
                await self.reconcile_under(reldir)
        return new_dirs

    def _note_newest(self, name: SegmentName) -> None:
        if name.start_us > self._newest.get(name.camera, -1):
            self._newest[name.camera] = name.start_us

    # -- settling pending files --------------------------------------------------------

    async def _settle(self) -> None:
        """Index the pending files that are complete; keep the others for later."""
        now = time.time()
        quiet: list[_Candidate] = []
        final: list[_Candidate] = []
        looked = [relpath for relpath in self._pending if relpath not in self._inflight]
        states = await asyncio.to_thread(_settle_states, self.root, looked)
        for relpath in looked:
            item = self._pending.get(relpath)
            if item is None or relpath in self._inflight:
                continue  # settled meanwhile by a concurrent pass
            stat = states[relpath]
            if isinstance(stat, OSError):
                if not isinstance(stat, FileNotFoundError):
                    log.warning("index: cannot read %s: %s", relpath, stat.strerror)
                del self._pending[relpath]
                continue
            if not S_ISREG(stat.st_mode):
                del self._pending[relpath]  # symlinks and the like are not recordings
                continue
            item.state = FileState.of(stat)
            idle = now - stat.st_mtime_ns / 1e9
            # Against the latest instant its name can mean: in the repeated hour, the
            # second pass's names read as the first's and must not look older.
            latest = item.name.instants[-1] if item.name.instants else item.name.start_us
            newer = self._newest.get(item.name.camera, -1) > latest
            if newer or idle >= SETTLE_SECONDS:
                final.append(item)
            elif idle >= QUIET_SECONDS:
                quiet.append(item)
        # Claim the files before the first await, so that a concurrent pass skips them.
        claimed = {item.relpath: item for item in final + quiet}
        self._inflight.update(claimed)
        try:
            for group, is_final in ((final, True), (quiet, False)):
                for start in range(0, len(group), _BATCH):
                    await self._index_batch(group[start : start + _BATCH], is_final)
        finally:
            self._inflight.difference_update(claimed)
            # Files that changed while they were read are read again.
            for relpath in self._touched.intersection(claimed):
                item = claimed[relpath]
                self._pending[relpath] = _Candidate(relpath, item.name, FileState(-1, -1))
            self._touched.difference_update(claimed)
        self.status.pending = len(self._pending)
        self.status.unreadable = len(self._unreadable)
        if self._pending:
            self._has_pending.set()

    async def _index_batch(self, batch: list[_Candidate], final: bool) -> None:
        results = await asyncio.to_thread(
            _probe_many, self.root, batch, final, self.segment_seconds
        )
        ready: list[Segment] = []
        cuts: dict[str, list[Cut]] = {}
        unreadable: list[str] = []
        for item, outcome, facts, problem, splits in results:
            if outcome is Outcome.INCOMPLETE:
                continue  # still pending
            self._pending.pop(item.relpath, None)
            if outcome is Outcome.GONE:
                continue
            if facts is None:
                if final:
                    if self._unreadable.get(item.relpath) != item.state.stamp:
                        log.warning("index: skipping %s: %s", item.relpath, problem)
                    self._unreadable[item.relpath] = item.state.stamp
                    unreadable.append(item.relpath)  # its old row, if any, goes
                else:
                    self._pending[item.relpath] = item  # may still be being written
                continue
            self._unreadable.pop(item.relpath, None)
            start_us = await self._place(item, facts.duration_us, ready)
            if facts.problem:
                log.warning(
                    "index: %s: %s; it is served up to its last whole fragment (%d of %d bytes)",
                    item.relpath, facts.problem, facts.media_end, item.state.size,
                )  # fmt: skip
            if splits is not None:
                cuts[item.relpath] = splits
            ready.append(
                Segment.from_facts(
                    path=item.relpath,
                    camera=item.name.camera,
                    start_us=start_us,
                    size=item.state.size,
                    mtime_ns=item.state.mtime_ns,
                    inode=item.state.inode,
                    ctime_ns=item.state.ctime_ns,
                    facts=facts,
                )
            )
        try:
            if await self.index.remove(unreadable):
                log.warning(
                    "index: %d segment(s) became unreadable and left the index", len(unreadable)
                )
            await self.index.put(ready, cuts)
        except BaseException as error:
            for item in batch:  # not indexed: look at them again once the index works
                if item.relpath not in self._unreadable:
                    self._pending.setdefault(item.relpath, item)
            self._has_pending.set()
            if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            if not self.status.index_full:
                log.warning("index: its disk is full; new recordings wait until there is room")
            self.status.index_full = True
            return
        if self.status.index_full:
            log.info("index: its disk has room again; waiting recordings are indexed")
        self.status.index_full = False
        for segment in ready:
            log.debug(
                "index: %s %s +%.3fs",
                segment.camera,
                segment.path,
                (segment.end_us - segment.start_us) / 1e6,
            )

    async def _place(self, item: _Candidate, duration_us: int, ready: list[Segment]) -> int:
        """Where `item` starts (wallclock.place), saying once what its name could not:
        each ambiguous local hour's choice, each name in a gap, each offset (%z) the zone
        disagrees with, each choice nothing decided (also on /healthz)."""
        name = item.name
        placed = place(name, duration_us, item.state.mtime_ns // 1000)
        zone = self.layout.zone
        if placed.how is How.OFFSET and name.disagrees:
            self._say_once(
                ("offset", name.camera),
                "index: %s: its name's UTC offset is not %s's at %s; the name's is taken"
                " (said once for the camera's recordings)",
                item.relpath, zone.key, format_us(placed.start_us),
            )  # fmt: skip
        elif placed.how is How.MTIME:
            self._say_once(
                ("hour", name.camera, name.local[:13], placed.start_us - name.instants[0] > 0),
                "index: %s: recordings named %s:xx (an hour %s has twice) placed at %s,"
                " by their modification times",
                name.camera, name.local[:13], zone.key, offset_of(zone, placed.start_us),
            )  # fmt: skip
        elif placed.how is How.GAP:
            self._say_once(
                ("gap", item.relpath),
                "index: %s: its name's local time %s does not exist in %s (the recorder's"
                " clock disagrees with the zone); placed by its modification time at %s",
                item.relpath, name.local, zone.key, format_us(placed.start_us),
            )  # fmt: skip
        elif placed.how is How.UNDECIDED:
            # The instant at which it overlaps no recording of its camera: indexed, in
            # this batch, or placed so by another batch meanwhile (not yet written).
            claimed = self._claimed.setdefault(name.camera, [])
            chosen, free = placed.candidates[0], False
            for candidate in placed.candidates:
                end = candidate + duration_us
                known = await self.index.segments(name.camera, candidate, end)
                others = [(s.start_us, s.end_us) for s in known if s.path != item.relpath]
                others += [(s.start_us, s.end_us) for s in ready if s.camera == name.camera]
                others += [(a, b) for path, a, b in claimed if path != item.relpath]
                if not any(a < end and candidate < b for a, b in others):
                    chosen, free = candidate, True
                    break
            claimed.append((item.relpath, chosen, chosen + duration_us))
            del claimed[:-_CLAIMS_KEPT]
            said = (
                f"recordings of {name.camera} named in a repeated or skipped local hour"
                f" ({name.local}) whose modification times say nothing: placed where they"
                " overlap no other recording"
            )
            self.status.undecided[name.camera] = said
            self._say_once(
                ("undecided", item.relpath),
                "index: %s: its name's local time %s is %s in %s and its modification time"
                " says nothing of which; placed at %s, %s",
                item.relpath, name.local, "ambiguous" if name.ambiguous else "in a gap",
                zone.key, format_us(chosen),
                "where it overlaps no recording" if free else "the earlier (both overlap)",
            )  # fmt: skip
            return chosen
        return placed.start_us

    def _say_once(self, key: tuple[object, ...], message: str, *args: object) -> None:
        """Log a warning (an INFO for a decided hour) once for `key` (a bounded memory
        for each kind of thing said, key[0])."""
        said = self._said.setdefault(str(key[0]), set())
        if key in said or len(said) >= _SAID_KEPT:
            return
        said.add(key)
        log.log(logging.INFO if key[0] == "hour" else logging.WARNING, message, *args)


def _undecodable_name(error: BaseException) -> bool:
    """Whether watchfiles stopped on a path it could not decode (perhaps inside an
    exception group)."""
    if isinstance(error, BaseExceptionGroup):
        return any(_undecodable_name(inner) for inner in error.exceptions)
    return isinstance(error, WatchfilesRustInternalError) and "decode" in str(error)


def _utf8(text: str) -> bool:
    """Whether a name read as text was UTF-8 (else it holds surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decodable(names: list[bytes]) -> bool:
    """Whether every name is UTF-8 (at C speed: joined by a byte no name holds, so no
    sequence is made across two)."""
    try:
        b"/".join(names).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _undecodable(name: bytes) -> bool:
    return not _decodable([name])


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _dir_stamp(directory: Path) -> tuple[int, int] | None:
    """A directory's mtime and ctime (None if it cannot be looked at) (blocking)."""
    try:
        info = os.stat(directory, follow_symlinks=False)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ctime_ns
