"""Playback sessions: their lifecycle, their directory and `session.json`.

A session lives in `<playback.dir>/<id>/` with `session.json`, its playlist (and the
playlist gzipped) and the media made for it. Everything the agent knows about a session
is in that directory, so sessions survive restarts and crashes:
- creation writes everything into `.<id>.creating/` and renames it into place, so a
  session directory is either whole or absent;
- deletion renames the directory to `.<id>.deleting/` before removing it, so a crash
  never brings a deleted session back;
- at start, locks are rebuilt from the `session.json` files, and leftovers go.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import BadRequest, NotFound, StartupError
from .files import fsync_dir, replace_file, write_file
from .ids import SESSION_ID, check_session_id, new_session_id
from .index import Index
from .playlists import KINDS, MediaItem, Plan, render
from .times import format_us, parse_rfc3339

log = logging.getLogger(__name__)

MEDIA_NAME = re.compile(r"s[0-9]{6}\.ts")
META = "session.json"
PLAYLIST = "index.m3u8"
FORMAT = 2  # 2: items carry their timeline shift and counter shifts
CREATING, DELETING = ".creating", ".deleting"
MEDIA_FIELDS = [field.name for field in fields(MediaItem)]
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
    segment_ids: list[str]
    plan: Plan
    persisted_expiry_us: int = field(default=0, compare=False)

    @property
    def duration_s(self) -> float:
        return (self.to_us - self.from_us) / 1e6

    @property
    def playlist_url(self) -> str:
        return f"/media/playback/{self.id}/{PLAYLIST}"

    def item(self, name: str) -> tuple[int, MediaItem] | None:
        if not MEDIA_NAME.fullmatch(name):
            return None
        number = int(name[1:7])
        items = self.plan.items
        return (number, items[number]) if number < len(items) else None

    def public(self) -> dict[str, Any]:
        """The API's view of the session."""
        return {
            "id": self.id,
            "camera_id": self.camera_id,
            "playlist_url": self.playlist_url,
            "from": format_us(self.from_us),
            "to": format_us(self.to_us),
            "duration_s": self.duration_s,
            "segment_count": len(self.segment_ids),
            "expires_at": format_us(self.expires_us),
        }

    def to_json(self) -> dict[str, Any]:
        body = self.public()
        del body["playlist_url"]
        body.update(
            format=FORMAT,
            created_at=format_us(self.created_us),
            segment_ids=self.segment_ids,
            start_offset=self.plan.start_offset,
            # One row per media item, in the order of `media_fields`: a day's session is
            # 8,640 items, so no key names repeated for each.
            media_fields=MEDIA_FIELDS,
            media=[[getattr(item, name) for name in MEDIA_FIELDS] for item in self.plan.items],
        )
        return body

    @classmethod
    def from_json(cls, data: Any, expected_id: str) -> Session:
        """Parse session.json; raises ValueError (or a subclass) on anything unexpected."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a session.json of this format")
        if data.get("id") != expected_id:
            raise ValueError("id does not match its directory")
        camera = data["camera_id"]
        if not isinstance(camera, str):
            raise ValueError("bad camera_id")
        items = []
        if data["media_fields"] != MEDIA_FIELDS:
            raise ValueError("media entries of another shape")
        for n, row in enumerate(data["media"]):
            raw = dict(zip(MEDIA_FIELDS, row, strict=True))
            raw["source"] = sys.intern(raw["source"])  # one string per path, shared
            item = MediaItem(
                **{
                    **raw,
                    "kind": sys.intern(raw["kind"]),
                    "prefix": tuple(int(offset) for offset in raw["prefix"]),
                }
            )
            if (
                item.name != f"s{n:06d}.ts"
                or not math.isfinite(item.duration)
                or item.kind not in KINDS
                or not isinstance(item.shift, int)
                or not isinstance(item.cc_shift, str)
            ):
                raise ValueError(f"bad media entry {n}")
            item.counter_shifts()  # raises ValueError if it does not parse
            safe_relpath(item.source)
            items.append(item)
        if not items:
            raise ValueError("no media")
        start_offset = float(data["start_offset"])
        expires_us = _time(data["expires_at"])
        return cls(
            id=expected_id,
            camera_id=camera,
            from_us=_time(data["from"]),
            to_us=_time(data["to"]),
            created_us=_time(data["created_at"]),
            expires_us=expires_us,
            segment_ids=[sys.intern(safe_relpath(p)) for p in data["segment_ids"]],
            plan=Plan(tuple(items), start_offset),
            persisted_expiry_us=expires_us,
        )


def _time(value: object) -> int:
    try:
        return parse_rfc3339(value, "time")
    except BadRequest:
        raise ValueError(f"bad time {value!r}") from None


def _write_meta(directory: Path, session: Session) -> None:
    """Replace session.json atomically (write, fsync, rename)."""
    replace_file(directory / META, json.dumps(session.to_json(), separators=(",", ":")).encode())


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

    async def load(self) -> None:
        """Read every session on disk, drop leftovers of interrupted work, rebuild locks."""
        loaded = await asyncio.to_thread(self._load)
        self.sessions = {s.id: s for s in loaded}
        await self.index.reset_locks({s.id: s.segment_ids for s in loaded})
        log.info("sessions: %d loaded from %s", len(loaded), self.directory)

    def _load(self) -> list[Session]:
        self.directory.mkdir(parents=True, exist_ok=True)
        found = []
        for entry in os.scandir(self.directory):
            name = entry.name
            if name.startswith(".") and name.endswith((CREATING, DELETING)):
                shutil.rmtree(entry.path, ignore_errors=True)  # never answered, or deleted
                continue
            if not SESSION_ID.fullmatch(name) or not entry.is_dir(follow_symlinks=False):
                continue  # left for the sweep's rule on stray directories
            try:
                with open(Path(entry.path) / META, "rb") as handle:
                    session = Session.from_json(json.load(handle), name)
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("sessions: %s has no valid %s (%s)", name, META, error)
                continue
            for leftover in Path(entry.path).glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            found.append(session)
        return found

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
            segment_ids=segment_ids,
            plan=plan,
        )
        session.persisted_expiry_us = session.expires_us
        staging = self.directory / f".{session.id}{CREATING}"
        self.creating.add(session.id)
        try:
            await asyncio.to_thread(self._stage, staging, session)
            await self.index.lock(session.id, segment_ids)
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
        self.counts["created"] += 1
        return session

    def _stage(self, staging: Path, session: Session) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        text = render(session.plan).encode()
        write_file(staging / PLAYLIST, text)
        write_file(staging / f"{PLAYLIST}.gz", gzip.compress(text, 6, mtime=0))
        _write_meta(staging, session)

    def _commit(self, staging: Path, final: Path) -> None:
        os.rename(staging, final)
        fsync_dir(self.directory)

    def get(self, session_id: str) -> Session:
        """The live session, or NotFound (an expired one is gone even before the sweep)."""
        session = self.sessions.get(check_session_id(session_id))
        if session is None or session.expires_us <= self.now_us():
            raise NotFound(f"playback session {session_id} does not exist or has expired")
        return session

    async def delete(self, session_id: str) -> None:
        session = self.sessions.pop(check_session_id(session_id), None)
        if session is None:
            raise NotFound(f"playback session {session_id} does not exist or has expired")
        await self._remove(session)
        self.counts["deleted"] += 1

    async def _remove(self, session: Session) -> None:
        """Remove a session (already out of `sessions`); if its locks cannot be released
        (the index's disk is full, say), it is put back whole and the error raised."""
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
