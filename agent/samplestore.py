"""Recordings' sample tables kept on disk, so that an export of footage is laid out without
reading its recordings whole again: an SQLite file beside the index (`samples.sqlite3`),
each recording's tables compressed (containers.samples.encode, about 0.9 MB an hour of
25 fps video with AAC), the least recently used dropped first beyond STORE_BYTES.

It is a cache: a row is used only if the recording's size, mtime, inode and ctime are
those it was read at (ctime: a file rewritten in place whose mtime was set back), and
anything wrong with the file (unreadable, full disk, read-only) is said once in the log
and the export reads the recordings instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

from .containers.errors import ProbeError
from .containers.samples import Recording, decode, encode

log = logging.getLogger(__name__)

STORE_BYTES = 256 << 20  # about 280 hours of one camera's footage
TOUCHED_KEPT = 1024  # uses noted in memory before they are written, in one transaction
_VERSION = 2  # PRAGMA user_version; 2: ctime_ns. A file of another is emptied (a cache).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tables (
    source TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    used INTEGER NOT NULL,          -- larger: used more lately
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tables_by_use ON tables (used);
"""

Stamp = tuple[int, int, int, int]  # a recording's size, mtime_ns, inode and ctime_ns


def stamp_of(info: os.stat_result) -> Stamp:
    """A recording's stamp, from its stat."""
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns


class SampleStore:
    """The kept tables (blocking calls, from worker threads; one connection, locked)."""

    def __init__(self, path: Path, budget: int = STORE_BYTES) -> None:
        self.path = path
        self.budget = budget
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._bytes = 0
        self._used = 0
        self._touched: dict[str, int] = {}  # rows used lately, their `used` not yet written
        self._failed = False  # said once

    def open(self) -> None:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                db.execute("DROP TABLE IF EXISTS tables")
                db.execute(f"PRAGMA user_version = {_VERSION}")
            db.executescript(_SCHEMA)
            row = db.execute(
                "SELECT COALESCE(SUM(LENGTH(data)), 0), COALESCE(MAX(used), 0) FROM tables"
            ).fetchone()
        except sqlite3.Error as error:
            self._fail("cannot be opened", error)
            return
        self._bytes, self._used = int(row[0]), int(row[1])
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._note_use()
                self._db.close()
                self._db = None

    def _note_use(self) -> None:
        """Write the uses noted in memory (locked; raises sqlite3.Error)."""
        if self._db is None or not self._touched:
            return
        touched = [(used, source) for source, used in self._touched.items()]
        self._touched.clear()
        self._db.execute("BEGIN")
        try:
            self._db.executemany("UPDATE tables SET used = ? WHERE source = ?", touched)
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def working(self) -> bool:
        """Whether it keeps tables: open, and nothing has failed."""
        return self._db is not None and not self._failed

    def _fail(self, what: str, error: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning(
                "sample tables at %s %s (%s): exports read recordings whole", self.path, what, error
            )

    def get(self, source: str, stamp: Stamp) -> Recording | None:
        """The tables kept of `source` as it was at `stamp`, or None."""
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute(
                    "SELECT data FROM tables WHERE source = ? AND size = ? AND mtime_ns = ?"
                    " AND inode = ? AND ctime_ns = ?",
                    (source, *stamp),
                ).fetchone()
                if row is None:
                    return None
                self._used += 1
                self._touched[source] = self._used
                if len(self._touched) >= TOUCHED_KEPT:
                    self._note_use()
            except sqlite3.Error as error:
                self._fail("cannot be read", error)
                return None
        try:
            return decode(bytes(row[0]))
        except ProbeError:
            return None  # another format or damaged: read anew (and kept anew)

    def has(self, source: str, stamp: Stamp) -> bool:
        with self._lock:
            if self._db is None:
                return False
            try:
                row = self._db.execute(
                    "SELECT 1 FROM tables WHERE source = ? AND size = ? AND mtime_ns = ?"
                    " AND inode = ? AND ctime_ns = ?",
                    (source, *stamp),
                ).fetchone()
            except sqlite3.Error:
                return False
        return row is not None

    def put(self, source: str, stamp: Stamp, recording: Recording) -> None:
        """Keep `recording`'s tables, dropping the least recently used beyond the budget."""
        data = encode(recording)
        with self._lock:
            if self._db is None:
                return
            try:
                self._note_use()  # the order of use as it is, before any row is dropped
                self._used += 1
                old = self._db.execute(
                    "SELECT LENGTH(data) FROM tables WHERE source = ?", (source,)
                ).fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO tables VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (source, *stamp, self._used, data),
                )
                self._bytes += len(data) - (int(old[0]) if old else 0)
                # The least recently used go first, as many as the budget needs (never
                # the tables just kept).
                while self._bytes > self.budget:
                    row = self._db.execute(
                        "SELECT source, LENGTH(data) FROM tables WHERE source != ?"
                        " ORDER BY used LIMIT 1",
                        (source,),
                    ).fetchone()
                    if row is None:
                        break
                    self._db.execute("DELETE FROM tables WHERE source = ?", (row[0],))
                    self._bytes -= int(row[1])
            except sqlite3.Error as error:
                self._fail("cannot be written", error)
