"""Playback sessions: their lifecycle, their directory and `session.json`.

A session lives in `<playback.dir>/<id>/` with `session.json` (what the API says of it and
its expiry: a few hundred bytes), `plan.json` (its media items and the recordings it
locks), its playlist (and the playlist gzipped) and the media made for it. Everything the
agent knows about a session is in that directory, so sessions survive restarts and
crashes:
- creation writes everything into `.<id>.creating/` and renames it into place, so a
  session directory is either whole or absent;
- deletion renames the directory to `.<id>.deleting/` before removing it, so a crash
  never brings a deleted session back;
- at start, only the `session.json` files are read; locks of sessions whose directory is
  gone are dropped (a session that cannot be read then is not served and not read again,
  but keeps its locks until the sweep removes its directory), and those of sessions the
  index lost are taken again from their `session.json` (camera and range).
Plans are read when a session's media is asked for, and a few recent ones are kept, so
memory does not grow with the number of sessions on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gzip
import logging
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from .errors import NotFound, StartupError
from .files import fsync_dir, write_file
from .ids import SESSION_ID, check_session_id, new_session_id
from .index import Index
from .playlists import Plan, render
from .stored import (
    META,
    PLAN,
    PLAYLIST,
    Session,
    Stored,
    read_plan,
    read_summary,
    write_summary,
)

log = logging.getLogger(__name__)

PLANS_KEPT_ITEMS = 20_000  # plans kept in memory: about 8 MB, 55 one-hour sessions
CREATING, DELETING = ".creating", ".deleting"
# Out of file descriptors: the process, not the file, is short of something.
_SHORT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
PERSIST_AFTER_US = 60_000_000


class StateLock:
    """An exclusive lock on the playback directory itself (flock on its descriptor, so
    no file is added), held for the agent's life and dropped by the kernel at its end."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def take(cls, directory: Path, key: str = "playback.dir") -> StateLock:
        """Lock `directory` (blocking), or raise StartupError if another agent holds it;
        `key` is the setting that named it."""
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(
                f"another agent is using {directory} ({key}); stop it first,"
                " or give this one its own directories"
            ) from None
        return cls(fd)

    def release(self) -> None:
        os.close(self._fd)  # closing drops the lock


class SessionStore:
    """The live sessions, mirrored in memory from their directories."""

    def __init__(
        self,
        directory: Path,
        ttl_seconds: int,
        index: Index,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.ttl_us = ttl_seconds * 1_000_000
        self.index = index
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.creating: set[str] = set()
        self._held: dict[str, int] = {}  # session id -> work in progress that needs it
        self._plans: OrderedDict[str, Stored] = OrderedDict()  # recent plans, oldest first
        self._plans_items = 0
        self._reading: dict[str, asyncio.Future[Stored]] = {}
        self.loaded = asyncio.Event()  # set once the sessions on disk are known
        self.unwritable = ""  # why playback.dir cannot be written to, if it cannot
        self.counts = {"created": 0, "expired": 0, "deleted": 0}  # since start

    def now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    @contextlib.contextmanager
    def hold(self, session_id: str) -> Iterator[None]:
        """Keep the sweep off `session_id` while the body works on it (a media build)."""
        self._held[session_id] = self._held.get(session_id, 0) + 1
        try:
            yield
        finally:
            left = self._held.pop(session_id) - 1
            if left:
                self._held[session_id] = left

    def live(self, session_id: str) -> bool:
        """Whether `session_id` is still a session (not deleted, not swept)."""
        return session_id in self.sessions

    def path(self, session_id: str) -> Path:
        return self.directory / check_session_id(session_id)

    # -- start-up ------------------------------------------------------------------------

    async def ready(self) -> None:
        """Wait until the sessions on disk are loaded (at start, in the background)."""
        await self.loaded.wait()

    async def check_writable(self) -> bool:
        """Whether a file can be made in the playback directory now (a read-only mount, an
        SD card the kernel remounted read-only after errors); `unwritable` says why not."""
        was = self.unwritable

        def probe() -> str:
            trial = self.directory / f".write-test-{os.getpid()}.tmp"
            try:
                trial.write_bytes(b"")
                trial.unlink()
            except OSError as error:
                if error.errno in _SHORT_OF_DESCRIPTORS:
                    return was  # a moment's shortage says nothing of the disk
                return error.strerror or str(error)
            return ""

        self.unwritable = await asyncio.to_thread(probe)
        if self.unwritable and not was:
            log.error("sessions: %s cannot be written to: %s", self.directory, self.unwritable)
        elif was and not self.unwritable:
            log.info("sessions: %s can be written to again", self.directory)
        return not self.unwritable

    async def load(self) -> None:
        """Read every session's summary, drop leftovers of interrupted work, and make the
        index's locks those of the sessions on disk; then the store is ready."""
        loaded, present = await asyncio.to_thread(self._load)
        await self.check_writable()
        self.sessions = {s.id: s for s in loaded}
        holders = await self.index.lock_holders()
        # Sessions the index does not know (it was rebuilt) lock their range again; only
        # sessions whose directory is gone lose theirs (one unreadable now, an I/O error
        # or a format to come, keeps its footage until the sweep removes it).
        add = {s.id: (s.camera_id, s.from_us, s.to_us) for s in loaded if s.id not in holders}
        await self.index.relock(holders - present, add)
        self.loaded.set()
        log.info(
            "sessions: %d loaded from %s (locks rebuilt for %d)",
            len(self.sessions),
            self.directory,
            len(add),
        )

    def _load(self) -> tuple[list[Session], set[str]]:
        """The sessions read, and the names of every session directory present."""
        self.directory.mkdir(parents=True, exist_ok=True)
        loaded = []
        present = set()
        for entry in os.scandir(self.directory):
            name = entry.name
            if name.startswith(".") and name.endswith((CREATING, DELETING)):
                shutil.rmtree(entry.path, ignore_errors=True)  # never answered, or deleted
                continue
            if not SESSION_ID.fullmatch(name) or not entry.is_dir(follow_symlinks=False):
                continue  # left for the sweep's rule on stray directories
            present.add(name)
            directory = Path(entry.path)
            try:
                session = read_summary(directory, name)
            except (OSError, ValueError, KeyError, TypeError) as error:
                if isinstance(error, OSError) and error.errno in _SHORT_OF_DESCRIPTORS:
                    raise  # the load is tried again (its task restarts), the session kept
                log.warning("sessions: %s has no valid %s (%s)", name, META, error)
                continue
            for leftover in directory.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            loaded.append(session)
        return loaded, present

    # -- plans ---------------------------------------------------------------------------

    async def load_plan(self, session: Session) -> Plan:
        """The session's plan: from memory if it was used lately, else from its plan.json
        (one read however many requests ask at once)."""
        stored = self._plans.get(session.id)
        if stored is not None:
            self._plans.move_to_end(session.id)
            return stored.plan
        reading = self._reading.get(session.id)
        if reading is None:
            reading = asyncio.ensure_future(asyncio.to_thread(read_plan, self.path(session.id)))
            self._reading[session.id] = reading
            reading.add_done_callback(lambda done: self._read_done(session.id, done))
        try:
            stored = await asyncio.shield(reading)
        except (OSError, ValueError, KeyError, TypeError) as error:
            if isinstance(error, OSError) and error.errno in _SHORT_OF_DESCRIPTORS:
                raise  # a moment's shortage (503), not a session that cannot be read
            if not self.live(session.id) or isinstance(error, FileNotFoundError):
                raise NotFound(f"playback session {session.id} was deleted") from None
            log.error("sessions: %s has no valid %s (%s)", session.id, PLAN, error)
            raise NotFound(f"playback session {session.id} cannot be read") from None
        if self.live(session.id):
            self._keep(session.id, stored)
        return stored.plan

    def _read_done(self, session_id: str, done: asyncio.Future[Stored]) -> None:
        self._reading.pop(session_id, None)
        if not done.cancelled():
            done.exception()  # seen here, whoever else awaits it

    def _keep(self, session_id: str, stored: Stored) -> None:
        if session_id in self._plans:
            return
        self._plans[session_id] = stored
        self._plans_items += len(stored.plan.items)
        while self._plans_items > PLANS_KEPT_ITEMS and len(self._plans) > 1:
            _, oldest = self._plans.popitem(last=False)
            self._plans_items -= len(oldest.plan.items)

    def _forget(self, session_id: str) -> None:
        stored = self._plans.pop(session_id, None)
        if stored is not None:
            self._plans_items -= len(stored.plan.items)

    # -- lifecycle -----------------------------------------------------------------------

    async def create(
        self, camera_id: str, from_us: int, to_us: int, segment_ids: list[str], plan: Plan
    ) -> Session:
        now = self.now_us()
        session = Session(
            id=new_session_id(),
            camera_id=camera_id,
            from_us=from_us,
            to_us=to_us,
            created_us=now,
            expires_us=now + self.ttl_us,
            segment_count=len(segment_ids),
        )
        session.persisted_expiry_us = session.expires_us
        stored = Stored(plan, segment_ids)
        staging = self.directory / f".{session.id}{CREATING}"
        self.creating.add(session.id)
        try:
            await asyncio.to_thread(self._stage, staging, session, stored)
            await self.index.lock(session.id, (camera_id, from_us, to_us))
            try:
                await asyncio.to_thread(self._commit, staging, self.path(session.id))
            except BaseException:
                await self.index.unlock(session.id)
                raise
        except BaseException as error:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            if isinstance(error, OSError) and error.errno == errno.EROFS:
                self.unwritable = error.strerror or "read-only"  # until the sweep sees it
            raise
        finally:
            self.creating.discard(session.id)
        self.sessions[session.id] = session
        self._keep(session.id, stored)  # a new session is about to be watched
        self.counts["created"] += 1
        return session

    def _stage(self, staging: Path, session: Session, stored: Stored) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        text = render(stored.plan).encode()
        write_file(staging / PLAYLIST, text)
        write_file(staging / f"{PLAYLIST}.gz", gzip.compress(text, 6, mtime=0))
        write_file(staging / PLAN, stored.to_bytes())
        write_summary(staging, session)

    def _commit(self, staging: Path, final: Path) -> None:
        os.rename(staging, final)
        fsync_dir(self.directory)

    async def get(self, session_id: str) -> Session:
        """The live session, or NotFound (an expired one is gone even before the sweep);
        while the sessions on disk are being loaded, it waits for them."""
        check_session_id(session_id)
        await self.ready()
        session = self.sessions.get(session_id)
        if session is None or session.expires_us <= self.now_us():
            raise NotFound(f"playback session {session_id} does not exist or has expired")
        return session

    async def delete(self, session_id: str) -> None:
        check_session_id(session_id)
        await self.ready()
        session = self.sessions.pop(session_id, None)
        if session is None:
            raise NotFound(f"playback session {session_id} does not exist or has expired")
        await self._remove(session)
        self.counts["deleted"] += 1

    async def _remove(self, session: Session) -> None:
        """Remove a session (already out of `sessions`); if its locks cannot be released
        (the index's disk is full, say), it is put back whole and the error raised."""
        self._forget(session.id)
        doomed = self.directory / f".{session.id}{DELETING}"
        moved = True
        try:
            await asyncio.to_thread(os.rename, self.path(session.id), doomed)
        except FileNotFoundError:
            moved = False
        try:
            await self.index.unlock(session.id)
        except BaseException:
            if moved:
                await asyncio.to_thread(os.rename, doomed, self.path(session.id))
            self.sessions[session.id] = session
            raise
        await asyncio.to_thread(shutil.rmtree, doomed, True)

    async def release_stray(self, name: str) -> None:
        """The sweep removed `name`, a directory that was no live session: if it was a
        session's (one that could not be read at start), its locks go with it."""
        if SESSION_ID.fullmatch(name) and name not in self.sessions:
            await self.index.unlock(name)

    def touch(self, session: Session) -> None:
        """A viewer used the session: it lives another TTL from now."""
        session.expires_us = max(session.expires_us, self.now_us() + self.ttl_us)

    async def persist_expiries(self) -> None:
        """Write the expiry of sessions whose viewers moved it on by a minute or more."""
        for session in list(self.sessions.values()):
            if session.expires_us - session.persisted_expiry_us >= PERSIST_AFTER_US:
                snapshot = replace(session)
                try:
                    await asyncio.to_thread(write_summary, self.path(session.id), snapshot)
                except FileNotFoundError:
                    continue  # deleted meanwhile
                session.persisted_expiry_us = snapshot.expires_us

    async def remove_expired(self) -> list[str]:
        """Remove sessions past their expiry that no build is working on."""
        now = self.now_us()
        gone = []
        for session in list(self.sessions.values()):
            if session.expires_us <= now and session.id not in self._held:
                self.sessions.pop(session.id, None)
                await self._remove(session)
                self.counts["expired"] += 1
                gone.append(session.id)
        return gone
