"""The segment index: SQLite (WAL), one writer thread and one reader thread.

The index is a cache of what is on disk: a database from another layout, another schema
or one that SQLite cannot read is rebuilt from the recordings. Session locks live here
too, so that a retention process can read them (`locked_segments` view); they are rebuilt
from the sessions on disk at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .containers.probe import Cut, MediaFacts
from .errors import StartupError
from .timeline import Timing

log = logging.getLogger(__name__)

SCHEMA_VERSION = 10  # 10: ctime_ns, so that a rewrite whose mtime was set back is seen
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE cameras (
    id TEXT PRIMARY KEY,
    segment_count INTEGER NOT NULL DEFAULT 0,
    total_us INTEGER NOT NULL DEFAULT 0,
    max_duration_us INTEGER NOT NULL DEFAULT 0  -- bounds range scans; never shrinks
) WITHOUT ROWID;
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,      -- relative to recordings.root, "/"-separated
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,      -- UTC microseconds, from the file name
    end_us INTEGER NOT NULL,        -- start + media duration
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,         -- with size, mtime_ns and ctime_ns: whether the file
    ctime_ns INTEGER NOT NULL,      -- changed (ctime: even where mtime was set back)
    container TEXT NOT NULL,        -- mpegts, mp4, fmp4
    video_codec TEXT NOT NULL,
    has_audio INTEGER NOT NULL,
    timescale INTEGER NOT NULL,     -- ticks per second of the next five
    first_pts INTEGER NOT NULL,     -- earliest video presentation time
    duration INTEGER NOT NULL,      -- to the end of the last video frame
    frame_ticks INTEGER NOT NULL,
    audio_start INTEGER,            -- audio's first and end time, relative to first_pts
    audio_end INTEGER,
    streams TEXT NOT NULL,          -- what the streams are; a change needs new decoders
    counters TEXT NOT NULL,         -- MPEG-TS: "pid:first:last,..." continuity counters
    media_start INTEGER NOT NULL,   -- fragmented MP4: its first fragment's offset (before
    media_end INTEGER NOT NULL      -- it, the init section) and its last whole one's end
);
CREATE INDEX segments_by_time ON segments (camera, start_us);
CREATE TABLE cuts (                 -- where a long recording is split into parts
    path TEXT PRIMARY KEY,          -- as in segments.path
    cuts TEXT NOT NULL              -- JSON [[offset, pts, [PAT, PMT], [early audio], sample]]
) WITHOUT ROWID;
CREATE TABLE locks (                -- a live session holds its camera's segments that
    session_id TEXT PRIMARY KEY,    -- overlap [from_us, to_us): those it plays
    camera TEXT NOT NULL,
    from_us INTEGER NOT NULL,
    to_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE VIEW locked_segments AS
    SELECT s.path AS path, COUNT(*) AS sessions
    FROM locks AS l JOIN segments AS s ON s.camera = l.camera
        AND s.start_us < l.to_us AND s.end_us > l.from_us
        AND s.start_us >= l.from_us - (SELECT max_duration_us FROM cameras WHERE id = l.camera)
    GROUP BY s.path;
CREATE TRIGGER segments_added AFTER INSERT ON segments BEGIN
    INSERT INTO cameras (id) VALUES (NEW.camera) ON CONFLICT DO NOTHING;
    UPDATE cameras SET
        segment_count = segment_count + 1,
        total_us = total_us + (NEW.end_us - NEW.start_us),
        max_duration_us = MAX(max_duration_us, NEW.end_us - NEW.start_us)
    WHERE id = NEW.camera;
END;
CREATE TRIGGER segments_removed AFTER DELETE ON segments BEGIN
    DELETE FROM cuts WHERE path = OLD.path;
    UPDATE cameras SET
        segment_count = segment_count - 1,
        total_us = total_us - (OLD.end_us - OLD.start_us)
    WHERE id = OLD.camera;
    DELETE FROM cameras WHERE id = OLD.camera AND segment_count <= 0;
END;
"""
_TIMING = "start_us, end_us, container, timescale, first_pts, duration, frame_ticks"


def _delete(db: sqlite3.Connection, keys: list[tuple[str]]) -> list[tuple[str, int, int, str]]:
    """Delete segments by path; (camera, start_us, end_us, path) of each that was there."""
    gone = [
        row
        for key in keys
        for row in db.execute(
            "SELECT camera, start_us, end_us, path FROM segments WHERE path = ?", key
        )
    ]
    db.executemany("DELETE FROM segments WHERE path = ?", keys)
    return gone


def _counts(db: sqlite3.Connection) -> tuple[int, int]:
    """(segments, cameras) in the index."""
    row = db.execute("SELECT COALESCE(SUM(segment_count), 0), COUNT(*) FROM cameras").fetchone()
    return int(row[0]), int(row[1])


def _timing(_: sqlite3.Cursor, row: sqlite3.Row) -> Timing:
    return Timing._make(row)


_COLUMNS = (
    "path, camera, start_us, end_us, size, mtime_ns, inode, ctime_ns, container, video_codec,"
    " has_audio,"
    " timescale, first_pts, duration, frame_ticks, audio_start, audio_end, streams, counters,"
    " media_start, media_end"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Segment:
    path: str
    camera: str
    start_us: int
    end_us: int
    size: int
    mtime_ns: int
    inode: int
    container: str
    video_codec: str
    has_audio: bool
    timescale: int
    first_pts: int
    duration: int
    frame_ticks: int
    audio_start: int | None = None
    audio_end: int | None = None
    streams: str = ""
    counters: str = ""
    media_start: int = 0
    media_end: int = 0
    ctime_ns: int = 0

    @classmethod
    def from_facts(
        cls,
        *,
        path: str,
        camera: str,
        start_us: int,
        size: int,
        mtime_ns: int,
        inode: int,
        ctime_ns: int,
        facts: MediaFacts,
    ) -> Segment:
        return cls(
            path=path,
            camera=camera,
            start_us=start_us,
            end_us=start_us + facts.duration_us,
            size=size,
            mtime_ns=mtime_ns,
            inode=inode,
            ctime_ns=ctime_ns,
            container=facts.container,
            video_codec=facts.video_codec,
            has_audio=facts.has_audio,
            timescale=facts.timescale,
            first_pts=facts.first_pts,
            duration=facts.duration,
            frame_ticks=facts.frame_ticks,
            audio_start=facts.audio_start,
            audio_end=facts.audio_end,
            streams=facts.streams,
            counters=facts.counters,
            media_start=facts.media_start,
            media_end=facts.media_end,
        )

    @property
    def frame_us(self) -> int:
        return self.frame_ticks * 1_000_000 // self.timescale


@dataclass(frozen=True)
class Change:
    """Segments of one camera written or removed: the earliest start among them, the
    latest end, and the paths removed (none for a write)."""

    camera: str
    start_us: int
    end_us: int
    removed: frozenset[str] = frozenset()


def _changes(rows: Iterable[tuple[str, int, int, str]], removed: bool) -> list[Change]:
    """One Change a camera of (camera, start_us, end_us, path) rows."""
    found: dict[str, tuple[int, int, set[str]]] = {}
    for camera, start_us, end_us, path in rows:
        low, high, paths = found.get(camera, (start_us, end_us, set()))
        if removed:
            paths.add(path)
        found[camera] = (min(low, start_us), max(high, end_us), paths)
    return [Change(c, low, high, frozenset(paths)) for c, (low, high, paths) in found.items()]


@dataclass(frozen=True)
class CameraSummary:
    id: str
    segment_count: int
    first_start_us: int
    last_end_us: int
    mean_segment_us: int


def _segment(row: tuple[Any, ...]) -> Segment:
    """A Segment from a row of `_COLUMNS`, its slots set directly: a day's range is
    8,640 rows, and the dataclass's checked __init__ would double the query's time.
    Slots, and the strings many rows share made one: a camera's chain keeps a day's."""
    segment = object.__new__(Segment)
    for setter, value in zip(_SETTERS, row, strict=True):
        setter(segment, value)
    _SETTERS[_AUDIO](segment, bool(row[_AUDIO]))
    for n in _SHARED:
        _SETTERS[n](segment, sys.intern(row[n]))
    return segment


_FIELDS = tuple(name.strip() for name in _COLUMNS.split(","))
_SETTERS = tuple(getattr(Segment, name).__set__ for name in _FIELDS)
_AUDIO = _FIELDS.index("has_audio")
_SHARED = tuple(
    _FIELDS.index(name) for name in ("camera", "container", "video_codec", "streams", "counters")
)


def _encode_cuts(cuts: Sequence[Cut]) -> str:
    rows = [[cut.offset, cut.pts, list(cut.prefix), list(cut.early), cut.sample] for cut in cuts]
    return json.dumps(rows, separators=(",", ":"))


def _decode_cuts(text: str) -> list[Cut]:
    return [
        Cut(int(pts), int(offset), tuple(map(int, prefix)), tuple(map(int, early)), int(sample))
        for offset, pts, prefix, early, sample in json.loads(text)
    ]


_LOCK = "INSERT OR REPLACE INTO locks (session_id, camera, from_us, to_us) VALUES (?, ?, ?, ?)"
Held = tuple[str, int, int]  # what a session locks: its camera's segments in [from, to)
T = TypeVar("T")
# SQLite's answers that the file is not a database it can use: only these mean rebuild.
_UNUSABLE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _prefix_range(directory: str) -> tuple[str, str]:
    """Bounds of the paths below `directory`: low <= path < high."""
    low = directory.rstrip("/") + "/"
    return low, low[:-1] + chr(ord("/") + 1)


class Index:
    """Async access to the index; every SQLite call runs on the index's own threads."""

    def __init__(self, path: Path, fingerprint: dict[str, str]) -> None:
        self.path = path
        self._fingerprint = json.dumps({"schema": SCHEMA_VERSION, **fingerprint}, sort_keys=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="index-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="index-read")
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None
        self._watchers: list[Callable[[Change], None]] = []
        self._counts = (0, 0)  # (segments, cameras) as the last write left them

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        await self._on(self._writer, self._open_writer)
        await self._on(self._reader, self._open_reader)

    async def close(self) -> None:
        for executor, attribute in ((self._reader, "_read_db"), (self._writer, "_write_db")):
            db = getattr(self, attribute)
            if db is not None:
                await self._on(executor, db.close)
                setattr(self, attribute, None)
            executor.shutdown(wait=True)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 5000")
        return db

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._prepare(self._connect())
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorcode", None) not in _UNUSABLE:
                # Locked by another process, or the disk failed: never delete the files of
                # a database that someone else may be using.
                raise StartupError(f"index database {self.path}: {error}") from None
            log.warning(
                "index %s is unreadable (%s); rebuilding it from the recordings", self.path, error
            )
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            db = self._prepare(self._connect())
        self._counts = _counts(db)
        self._write_db = db

    def _prepare(self, db: sqlite3.Connection) -> sqlite3.Connection:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            stored = None
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
                stored = row[0] if row else None
            if stored != self._fingerprint:
                if tables:
                    log.info("index %s was built for other settings; rebuilding it", self.path)
                self._reset(db)
        except BaseException:
            db.close()
            raise
        return db

    def _reset(self, db: sqlite3.Connection) -> None:
        objects = db.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " AND type IN ('table', 'view') ORDER BY type DESC"
        ).fetchall()
        drops = "".join(f'DROP {kind.upper()} IF EXISTS "{name}";' for kind, name in objects)
        db.executescript("BEGIN IMMEDIATE;" + drops + _SCHEMA)
        db.execute("INSERT INTO meta (key, value) VALUES ('fingerprint', ?)", (self._fingerprint,))
        db.execute("COMMIT")

    def _open_reader(self) -> None:
        self._read_db = self._connect()
        self._read_db.execute("PRAGMA query_only = ON")

    async def _on(self, executor: ThreadPoolExecutor, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    def _w(self) -> sqlite3.Connection:
        if self._write_db is None:
            raise RuntimeError("the index is not open")
        return self._write_db

    def _r(self) -> sqlite3.Connection:
        if self._read_db is None:
            raise RuntimeError("the index is not open")
        return self._read_db

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one transaction on the writer thread (committed, or rolled back
        if it raises). `work` must not return a cursor: one finalized later on another
        thread, while the writer uses the connection, is SQLite API misuse."""

        def transaction() -> T:
            db = self._w()
            with db:
                db.execute("BEGIN")
                done = work(db)
            self._counts = _counts(db)  # as committed (a full disk fails at COMMIT)
            return done

        return await self._on(self._writer, transaction)

    # -- writes ------------------------------------------------------------------------

    def watch(self, watcher: Callable[[Change], None]) -> None:
        """Call `watcher` (on the event loop) after each write, once a camera it changed."""
        self._watchers.append(watcher)

    def _tell(self, changes: Iterable[Change]) -> None:
        for change in changes:
            for watcher in self._watchers:
                watcher(change)

    async def put(
        self, segments: Iterable[Segment], cuts: Mapping[str, Sequence[Cut]] | None = None
    ) -> None:
        """Insert or replace segments (by path), with the cuts of those that are long."""
        rows = [
            (
                s.path,
                s.camera,
                s.start_us,
                s.end_us,
                s.size,
                s.mtime_ns,
                s.inode,
                s.ctime_ns,
                s.container,
                s.video_codec,
                int(s.has_audio),
                s.timescale,
                s.first_pts,
                s.duration,
                s.frame_ticks,
                s.audio_start,
                s.audio_end,
                s.streams,
                s.counters,
                s.media_start,
                s.media_end,
            )
            for s in segments
        ]
        if not rows:
            return

        found = [(path, _encode_cuts(found)) for path, found in (cuts or {}).items()]

        def write(db: sqlite3.Connection) -> list[tuple[str, int, int, str]]:
            # Rows these replace, where they were: a recording read again may be placed
            # elsewhere (a name's instant decided anew), and what was there changes too.
            replaced = _delete(db, [(r[0],) for r in rows])
            db.executemany(
                f"INSERT INTO segments ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})",  # noqa: S608
                rows,
            )
            db.executemany("INSERT INTO cuts (path, cuts) VALUES (?, ?)", found)
            return replaced

        replaced = await self._write(write)
        written = [(r[1], r[2], r[3], r[0]) for r in rows]
        self._tell(_changes([*written, *replaced], removed=False))

    async def remove(self, paths: Iterable[str]) -> int:
        """Forget segments by path; returns how many were indexed."""
        keys = [(p,) for p in paths]
        if not keys:
            return 0

        def write(db: sqlite3.Connection) -> list[tuple[str, int, int, str]]:
            return _delete(db, keys)

        gone = await self._write(write)
        self._tell(_changes(gone, removed=True))
        return len(gone)

    async def remove_under(self, directory: str) -> int:
        """Forget every segment below a directory (relative path) that has gone."""
        low, high = _prefix_range(directory)

        def write(db: sqlite3.Connection) -> list[tuple[str, int, int, str]]:
            gone = db.execute(
                "SELECT camera, start_us, end_us, path FROM segments WHERE path >= ? AND path < ?",
                (low, high),
            ).fetchall()
            db.execute("DELETE FROM segments WHERE path >= ? AND path < ?", (low, high))
            return gone

        gone = await self._write(write)
        self._tell(_changes(gone, removed=True))
        return len(gone)

    # -- reads -------------------------------------------------------------------------

    async def files(self, under: str = "") -> dict[str, tuple[int, int, int, int]]:
        """Indexed paths below directory `under` ("" for all) with their (size, mtime_ns,
        inode, ctime_ns): a file whose four differ in any way is read again."""

        def read() -> dict[str, tuple[int, int, int, int]]:
            query = "SELECT path, size, mtime_ns, inode, ctime_ns FROM segments"
            if not under:
                return {path: tuple(rest) for path, *rest in self._r().execute(query)}
            low, high = _prefix_range(under)
            rows = self._r().execute(query + " WHERE path >= ? AND path < ?", (low, high))
            return {path: tuple(rest) for path, *rest in rows}

        return await self._on(self._reader, read)

    async def directories_not_in(self, present: set[str]) -> list[str]:
        """Directories of indexed segments that are not in `present`."""

        def read() -> list[str]:
            # Skip from one directory to the next along the path index: one probe per
            # directory, not one row per segment.
            db = self._r()
            missing = []
            row = db.execute("SELECT path FROM segments ORDER BY path LIMIT 1").fetchone()
            while row is not None:
                directory = row[0].rpartition("/")[0]
                if directory not in present:
                    missing.append(directory)
                if not directory:
                    break
                row = db.execute(
                    "SELECT path FROM segments WHERE path >= ? ORDER BY path LIMIT 1",
                    (_prefix_range(directory)[1],),
                ).fetchone()
            return missing

        return await self._on(self._reader, read)

    def counts(self) -> tuple[int, int]:
        """(segments, cameras) in the index, as its last write left them: read without
        waiting for a thread (/healthz answers while the reader is busy)."""
        return self._counts

    async def cameras(self) -> list[CameraSummary]:
        return await self._on(self._reader, self._cameras)

    def _cameras(self) -> list[CameraSummary]:
        db = self._r()
        summaries = []
        db.execute("BEGIN")  # one snapshot: the writer may remove a camera's files meanwhile
        try:
            rows = db.execute(
                "SELECT id, segment_count, total_us, max_duration_us FROM cameras ORDER BY id"
            ).fetchall()
            for camera, count, total_us, max_duration in rows:
                first, last_start = db.execute(
                    "SELECT MIN(start_us), MAX(start_us) FROM segments WHERE camera = ?",
                    (camera,),
                ).fetchone()
                if first is None:
                    continue
                last_end = db.execute(
                    "SELECT MAX(end_us) FROM segments WHERE camera = ? AND start_us >= ?",
                    (camera, last_start - max_duration),
                ).fetchone()[0]
                summaries.append(
                    CameraSummary(camera, count, first, last_end, total_us // max(count, 1))
                )
        finally:
            db.execute("COMMIT")
        return summaries

    async def read(self, work: Callable[[], T]) -> T:
        """Run `work` on the index's reader thread, where the *_sync reads may be called."""
        return await self._on(self._reader, work)

    def last_end_sync(self, camera: str) -> int | None:
        """The end of the camera's latest recording (None: it has none) (reader thread)."""
        db = self._r()
        db.execute("BEGIN")  # one snapshot: the writer may remove the camera's files meanwhile
        try:
            return self._last_end(db, camera)
        finally:
            db.execute("COMMIT")

    @staticmethod
    def _last_end(db: sqlite3.Connection, camera: str) -> int | None:
        row = db.execute(
            "SELECT MAX(segments.start_us), cameras.max_duration_us FROM segments"
            " JOIN cameras ON cameras.id = segments.camera WHERE segments.camera = ?",
            (camera,),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        found = db.execute(
            "SELECT MAX(end_us) FROM segments WHERE camera = ? AND start_us >= ?",
            (camera, row[0] - row[1]),
        ).fetchone()
        return None if found[0] is None else int(found[0])

    def timings_sync(
        self, camera: str, from_us: int, to_us: int, overlapping: bool = True
    ) -> list[Timing]:
        """The timings of the camera's segments by start (reader thread): those that
        overlap [from_us, to_us), or (`overlapping` False) those that start in it."""
        db = self._r().cursor()
        db.row_factory = _timing
        if not overlapping:
            return db.execute(
                f"SELECT {_TIMING} FROM segments WHERE camera = ? AND start_us >= ?"  # noqa: S608
                " AND start_us < ? ORDER BY start_us, path",
                (camera, from_us, to_us),
            ).fetchall()
        row = (
            self._r()
            .execute("SELECT max_duration_us FROM cameras WHERE id = ?", (camera,))
            .fetchone()
        )
        if row is None:
            return []
        return db.execute(
            f"SELECT {_TIMING} FROM segments WHERE camera = ? AND start_us < ?"  # noqa: S608
            " AND start_us >= ? AND end_us > ? ORDER BY start_us, path",
            (camera, to_us, from_us - row[0], from_us),
        ).fetchall()

    async def scanned_before(self) -> bool:
        """Whether a first scan of the recordings was completed into this index (by this
        or an earlier run; a rebuilt index has none)."""

        def read() -> bool:
            row = self._r().execute("SELECT 1 FROM meta WHERE key = 'scanned'").fetchone()
            return row is not None

        return await self._on(self._reader, read)

    async def mark_scanned(self) -> None:
        """Remember that a first scan was completed into this index."""

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('scanned', '1')")

        await self._write(write)

    async def has_camera(self, camera: str) -> bool:
        def read() -> bool:
            return (
                self._r().execute("SELECT 1 FROM cameras WHERE id = ?", (camera,)).fetchone()
                is not None
            )

        return await self._on(self._reader, read)

    async def segments(self, camera: str, from_us: int, to_us: int) -> list[Segment]:
        """The camera's segments that overlap [from_us, to_us), by start time."""

        def read() -> list[Segment]:
            return self.segments_sync(camera, from_us, to_us)

        return await self._on(self._reader, read)

    def segments_sync(self, camera: str, from_us: int, to_us: int) -> list[Segment]:
        """As `segments`, on the calling thread (for the reader thread and benchmarks)."""
        db = self._r()
        row = db.execute("SELECT max_duration_us FROM cameras WHERE id = ?", (camera,)).fetchone()
        if row is None:
            return []
        # start_us bounds both ends so the (camera, start_us) index limits the scan.
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM segments WHERE camera = ? AND start_us < ?"  # noqa: S608
            " AND start_us >= ? AND end_us > ? ORDER BY start_us, path",
            (camera, to_us, from_us - row[0], from_us),
        ).fetchall()
        return [_segment(row) for row in rows]

    async def segments_after(self, camera: str, from_us: int, to_us: int) -> list[Segment]:
        """The camera's segments that start in [from_us, to_us), by start."""

        def read() -> list[Segment]:
            rows = (
                self._r()
                .execute(
                    f"SELECT {_COLUMNS} FROM segments WHERE camera = ? AND start_us >= ?"  # noqa: S608
                    " AND start_us < ? ORDER BY start_us, path",
                    (camera, from_us, to_us),
                )
                .fetchall()
            )
            return [_segment(row) for row in rows]

        return await self._on(self._reader, read)

    async def cuts(self, paths: Iterable[str]) -> dict[str, list[Cut]]:
        """The cuts the indexer found in these long recordings (those it has)."""
        keys = list(paths)

        def read() -> dict[str, list[Cut]]:
            found = {}
            db = self._r()
            for path in keys:
                row = db.execute("SELECT cuts FROM cuts WHERE path = ?", (path,)).fetchone()
                if row is not None:
                    found[path] = _decode_cuts(row[0])
            return found

        return await self._on(self._reader, read) if keys else {}

    async def lock(self, session_id: str, held: Held) -> None:
        """Record that `session_id` needs the segments of a camera and range: one row,
        however many segments (a day's session holds 8,640)."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(_LOCK, (session_id, *held))

        await self._write(write)

    async def unlock(self, session_id: str) -> None:
        """Release what `session_id` held; other sessions' locks on the same segments stay."""

        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM locks WHERE session_id = ?", (session_id,))

        await self._write(write)

    async def lock_holders(self) -> set[str]:
        """The sessions that hold locks."""

        def read() -> set[str]:
            rows = self._r().execute("SELECT session_id FROM locks")
            return {str(sid) for (sid,) in rows}

        return await self._on(self._reader, read)

    async def relock(self, drop: Iterable[str], add: dict[str, Held]) -> None:
        """Release the locks of the sessions in `drop` and record those of `add`, in one
        transaction."""
        gone = [(sid,) for sid in drop]
        rows = [(sid, *held) for sid, held in add.items()]

        def write(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM locks WHERE session_id = ?", gone)
            db.executemany(_LOCK, rows)

        await self._write(write)

    async def locked_paths(self) -> dict[str, int]:
        """Each locked segment path with the number of sessions that hold it."""

        def read() -> dict[str, int]:
            rows = self._r().execute("SELECT path, sessions FROM locked_segments")
            return {path: int(count) for path, count in rows}

        return await self._on(self._reader, read)
