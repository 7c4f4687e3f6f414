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
  gone are dropped (a session that cannot be read keeps its locks until the sweep removes
  its directory), and those of sessions the index lost are taken again from their
  `session.json` (camera and range).
Plans are read when a session's media is asked for, and a few recent ones are kept, so
memory does not grow with the number of sessions on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import json
import logging
import math
import operator
import os
import re
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import BadRequest, NotFound, StartupError
from .files import fsync_dir, replace_file, write_file
from .ids import SESSION_ID, check_session_id, new_session_id
from .index import Index
from .playlists import KINDS, MediaItem, Plan, init_name, media_name, render
from .times import format_us, parse_rfc3339

log = logging.getLogger(__name__)

MEDIA_NAME = re.compile(r"s[0-9]{6}\.(ts|m4s)|i[0-9]{6}\.mp4")
META = "session.json"
PLAN = "plan.json"
PLAYLIST = "index.m3u8"
# 2: items carry their timeline shift and counter shifts, all in session.json;
# 3: the plan and the locked recordings in plan.json, session.json a summary;
# 4: plan.json's items unnamed (named by their place) and before the plan's `offset`.
FORMAT = 4
# session.json's summary is the same in formats 3 and 4: both are read as they are.
SUMMARY_FORMATS = (3, FORMAT)
# Media fields a format 3 plan may lack (written before they existed).
_LATER_FIELDS = {
    "stop_at", "suffix", "nulls", "init_size", "mp4_tag", "cut_sample", "stop_sample", "timescale"
}  # fmt: skip
PLANS_KEPT_ITEMS = 20_000  # plans kept in memory: about 8 MB, 55 one-hour sessions
CREATING, DELETING = ".creating", ".deleting"
# What plan.json keeps of an item: not its name, which its place gives.
MEDIA_FIELDS = [field.name for field in fields(MediaItem) if field.init and field.name != "name"]
MEDIA_ROW = operator.attrgetter(*MEDIA_FIELDS)
# Compact JSON (json.dumps given separators makes an encoder each call).
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
# A watched session's new expiry is written to disk when it has moved this far.
PERSIST_AFTER_US = 60_000_000


def safe_relpath(path: object) -> str:
    """A recording path from session.json, refused unless plainly inside the root."""
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise ValueError(f"unsafe recording path {path!r}")
    return path


@dataclass
class Session:
    id: str
    camera_id: str
    from_us: int
    to_us: int
    created_us: int
    expires_us: int
    segment_count: int
    persisted_expiry_us: int = field(default=0, compare=False)

    @property
    def duration_s(self) -> float:
        return (self.to_us - self.from_us) / 1e6

    @property
    def playlist_url(self) -> str:
        return f"/media/playback/{self.id}/{PLAYLIST}"

    def public(self) -> dict[str, Any]:
        """The API's view of the session."""
        return {
            "id": self.id,
            "camera_id": self.camera_id,
            "playlist_url": self.playlist_url,
            "from": format_us(self.from_us),
            "to": format_us(self.to_us),
            "duration_s": self.duration_s,
            "segment_count": self.segment_count,
            "expires_at": format_us(self.expires_us),
        }

    def to_json(self) -> dict[str, Any]:
        body = self.public()
        del body["playlist_url"]
        body.update(format=FORMAT, created_at=format_us(self.created_us))
        return body

    @classmethod
    def from_json(cls, data: Any, expected_id: str) -> Session:
        """Parse session.json; raises ValueError (or a subclass) on anything unexpected."""
        if not isinstance(data, dict) or data.get("format") not in SUMMARY_FORMATS:
            raise ValueError("not a session.json of a known format")
        return cls._summary(data, expected_id, data["segment_count"])

    @classmethod
    def _summary(cls, data: dict[str, Any], expected_id: str, segment_count: Any) -> Session:
        if data.get("id") != expected_id:
            raise ValueError("id does not match its directory")
        camera = data["camera_id"]
        if not isinstance(camera, str):
            raise ValueError("bad camera_id")
        if isinstance(segment_count, bool) or not isinstance(segment_count, int):
            raise ValueError("bad segment_count")
        expires_us = _time(data["expires_at"])
        return cls(
            id=expected_id,
            camera_id=camera,
            from_us=_time(data["from"]),
            to_us=_time(data["to"]),
            created_us=_time(data["created_at"]),
            expires_us=expires_us,
            segment_count=segment_count,
            persisted_expiry_us=expires_us,
        )


@dataclass(frozen=True)
class Stored:
    """What plan.json holds: the session's media items and the recordings it locks."""

    plan: Plan
    segment_ids: list[str]

    def to_bytes(self) -> bytes:
        """plan.json's text. One row per media item, in the order of `media_fields`: a
        day's session is 8,640 items, so no key names repeated for each; an item's row is
        made once, for every session that shares the item."""
        head = _compact(
            {
                "format": FORMAT,
                "segment_ids": self.segment_ids,
                "start_offset": self.plan.start_offset,
                "offset": self.plan.offset,
                "media_fields": MEDIA_FIELDS,
            }
        )
        rows = b",".join([item.row or row_of(item) for item in self.plan.items])
        return b"".join((head[:-1], b',"media":[', rows, b"]}"))

    @classmethod
    def from_json(cls, data: Any) -> Stored:
        """Parse plan.json (or a format 2 session.json); raises ValueError (or a subclass)
        on anything unexpected."""
        if not isinstance(data, dict) or data.get("format") not in (2, 3, FORMAT):
            raise ValueError("not a plan of a known format")
        items: list[MediaItem] = []
        names = data["media_fields"]
        # Plans written before `stop_at`, `suffix` and `nulls` existed lack them: their
        # items run to the recording's end, as recorded.
        if not isinstance(names, list) or set(MEDIA_FIELDS) - set(names) - _LATER_FIELDS:
            raise ValueError("media entries of another shape")
        if set(names) - {*MEDIA_FIELDS, "name"}:
            raise ValueError("media entries of another shape")
        for n, row in enumerate(data["media"]):
            raw = dict(zip(names, row, strict=True))
            named = raw.pop("name", None)  # formats 2 and 3 named each item
            raw["source"] = sys.intern(raw["source"])  # one string per path, shared
            item = MediaItem(
                **{
                    **raw,
                    "kind": sys.intern(raw["kind"]),
                    **{
                        name: tuple(int(offset) for offset in raw.get(name, ()))
                        for name in ("prefix", "suffix", "nulls")
                    },
                }
            )
            if (
                named not in (None, media_name(n, item.is_mp4))
                or item.mp4_tag not in ("", "avc1", "hvc1")
                or not math.isfinite(item.duration)
                or item.kind not in KINDS
                or not isinstance(item.shift, int)
                or not isinstance(item.cc_shift, str)
                or not isinstance(item.stop_at, int)
                or not isinstance(item.timescale, int)
            ):
                raise ValueError(f"bad media entry {n}")
            item.counter_shifts()  # raises ValueError if it does not parse
            safe_relpath(item.source)
            items.append(item)
        if not items:
            raise ValueError("no media")
        offset = data.get("offset", 0)
        if type(offset) is not int:
            raise ValueError("a plan offset that is not a whole number")
        return cls(
            plan=Plan(tuple(items), float(data["start_offset"]), offset),
            segment_ids=[sys.intern(safe_relpath(p)) for p in data["segment_ids"]],
        )


def item(plan: Plan, name: str) -> tuple[int, MediaItem] | None:
    """The media item a URL name stands for, with its number, or None: the item's own
    name, or for fragmented MP4 the name of the init section of the item's recording."""
    if not MEDIA_NAME.fullmatch(name):
        return None
    number = int(name[1:7])
    if number >= len(plan.items):
        return None
    found = plan.at(number)
    if name == found.name or (name == init_name(number) and found.is_mp4):
        return number, found
    return None


def _time(value: object) -> int:
    try:
        return parse_rfc3339(value, "time")
    except BadRequest:
        raise ValueError(f"bad time {value!r}") from None


def row_of(item: MediaItem) -> bytes:
    """An item's plan.json row (kept on the item)."""
    item.row = _ENCODE(MEDIA_ROW(item)).encode()
    return item.row


def _compact(data: dict[str, Any]) -> bytes:
    return _ENCODE(data).encode()


def _write_meta(directory: Path, session: Session) -> None:
    """Replace session.json atomically (write, fsync, rename)."""
    replace_file(directory / META, _compact(session.to_json()))


def _read_json(path: Path) -> Any:
    with open(path, "rb") as handle:
        return json.load(handle)


def _read_session(directory: Path, name: str) -> Session:
    """A session's summary from its directory; a format 2 session (everything in
    session.json) is rewritten in the current format (plan.json first, so that a crash
    midway leaves it readable). Raises OSError, ValueError, KeyError or TypeError."""
    data = _read_json(directory / META)
    if isinstance(data, dict) and data.get("format") == 2:
        stored = Stored.from_json(data)
        session = Session._summary(data, name, len(stored.segment_ids))
        replace_file(directory / PLAN, stored.to_bytes())
        _write_meta(directory, session)
        return session
    return Session.from_json(data, name)


def _read_stored(directory: Path) -> Stored:
    return Stored.from_json(_read_json(directory / PLAN))


class StateLock:
    """An exclusive lock on the playback directory itself (flock on its descriptor, so
    no file is added), held for the agent's life and dropped by the kernel at its end."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def take(cls, directory: Path) -> StateLock:
        """Lock `directory` (blocking), or raise StartupError if another agent holds it."""
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(
                f"another agent is using {directory} (playback.dir); stop it first,"
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

    async def load(self) -> None:
        """Read every session's summary, drop leftovers of interrupted work, and make the
        index's locks those of the sessions on disk; then the store is ready."""
        loaded, present = await asyncio.to_thread(self._load)
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
        found = []
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
                session = _read_session(directory, name)
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("sessions: %s has no valid %s (%s)", name, META, error)
                continue
            for leftover in directory.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            found.append(session)
        return found, present

    # -- plans ---------------------------------------------------------------------------

    async def plan(self, session: Session) -> Plan:
        """The session's plan: from memory if it was used lately, else from its plan.json
        (one read however many requests ask at once)."""
        stored = self._plans.get(session.id)
        if stored is not None:
            self._plans.move_to_end(session.id)
            return stored.plan
        reading = self._reading.get(session.id)
        if reading is None:
            reading = asyncio.ensure_future(asyncio.to_thread(_read_stored, self.path(session.id)))
            self._reading[session.id] = reading
            reading.add_done_callback(lambda done: self._read_done(session.id, done))
        try:
            stored = await asyncio.shield(reading)
        except (OSError, ValueError, KeyError, TypeError) as error:
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
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
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
        _write_meta(staging, session)

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
                    await asyncio.to_thread(_write_meta, self.path(session.id), snapshot)
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
