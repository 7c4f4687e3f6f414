"""The playback service: what the HTTP handlers ask for, one call each.

It checks a request against the rules (range, camera, footage), has the playlist
planned from the camera's chain (chains.py), creates the session, and says what to send
for each of a session's URLs. The session store owns the sessions on disk; the media
service makes and finds segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .admission import Limiter
from .chains import ChainCache
from .config import Config
from .errors import BadRequest, Busy, InsufficientStorage, NotFound
from .export import Clip, Exporter
from .files import replace_file
from .iframes import IFRAMES, MULTIVARIANT, has_iframes, multivariant
from .index import Index
from .indexer import IndexerStatus
from .media import MediaService
from .playlists import Plan
from .served import PLAYLIST_TYPE, Served
from .sessions import SessionStore
from .spanbook import DEFAULT_RANGE_US, MAX_RANGE_US, SpanBook
from .stored import PLAYLIST, Session, named_item, named_keyframe
from .timeline import Span
from .times import format_us
from .wallclock import chosen

log = logging.getLogger(__name__)

# Bytes a session writes per playlist entry before anyone watches (playlist, its gzip
# twin and session.json), counted against the disk floor.
WRITTEN_PER_ITEM = 400
SCAN_RETRY_SECONDS = 2
SESSIONS_RETRY_SECONDS = 60
_PAST = 1 << 62  # an offset past any file's end
HOUR_US = 3600 * 1_000_000  # recordings either side of a preview's time, to choose among


@dataclass(frozen=True)
class Export:
    """A download of a session's range: its file name and the clip laid out."""

    session: Session
    filename: str
    clip: Clip

    async def read(self, exporter: Exporter, position: int, stop: int) -> list[bytes]:
        return await exporter.read_of(self.clip, position, stop)


def check_range(from_us: int | None, to_us: int | None) -> None:
    """A range's own rule: `to` after `from` (either may be open)."""
    if from_us is not None and to_us is not None and to_us <= from_us:
        raise BadRequest("`to` must be after `from`")


class Playback:
    def __init__(
        self,
        config: Config,
        index: Index,
        store: SessionStore,
        chains: ChainCache,
        media: MediaService,
        limiter: Limiter,
        indexing: IndexerStatus,
        exporter: Exporter | None = None,
        book: SpanBook | None = None,
    ) -> None:
        self.indexing = indexing
        self.book = book or SpanBook(index, config.layout.name_resolution_us)
        self.config = config
        self.index = index
        self.store = store
        self.chains = chains
        self.media = media
        self.limiter = limiter
        self.exporter = exporter or media.exporter
        self._opening = 0  # sessions being opened: they count against max_sessions
        # I-frame playlists being made, by session: a second request waits for the first.
        self._making: dict[str, asyncio.Future[str | None]] = {}

    async def _require_camera(self, camera_id: str) -> None:
        if not await self.index.has_camera(camera_id):
            raise NotFound(f"camera {camera_id} has no recordings")

    async def spans(self, camera_id: str, from_us: int | None, to_us: int | None) -> list[Span]:
        """The camera's contiguous recorded spans cut to the range asked for
        (`recordings_range`) (spanbook.py: off the event loop, in milliseconds)."""
        check_range(from_us, to_us)
        await self._require_camera(camera_id)
        last_end = None
        if from_us is None and to_us is None:
            last_end = await self.index.read(lambda: self.index.last_end_sync(camera_id))
        low, high = recordings_range(from_us, to_us, last_end)
        return await self.book.spans(camera_id, low, high)

    async def open(self, camera_id: str, from_us: int, to_us: int) -> Session:
        """Check a request, plan its playlist from the index and create the session."""
        check_range(from_us, to_us)
        max_seconds = self.config.playback.max_seconds
        if to_us - from_us > max_seconds * 1_000_000:
            raise BadRequest(
                f"the range is {(to_us - from_us) / 1e6:.0f} s long; at most {max_seconds} s"
            )
        if self.indexing.scan != "complete" and not self.indexing.resumed:
            # A session planned now would miss what the scan has not reached yet.
            raise Busy(
                "the agent is still indexing the recordings; try again shortly",
                retry_after=SCAN_RETRY_SECONDS,
            )
        await self.store.ready()  # the sessions on disk count against the limit
        if self.store.unwritable and not await self.store.check_writable():
            raise InsufficientStorage(
                f"the playback directory cannot be written to ({self.store.unwritable});"
                " no session can be made until it can"
            )
        limit = self.config.playback.max_sessions
        # A place is taken before the first await that follows, so that POSTs answered
        # at once cannot all pass the check and overshoot the limit together.
        if len(self.store.sessions) + self._opening >= limit:
            raise Busy(
                f"there are {limit} live playback sessions, the most playback.max_sessions"
                " allows; delete one or wait for one to expire",
                retry_after=SESSIONS_RETRY_SECONDS,
            )
        self._opening += 1
        try:
            return await self._open(camera_id, from_us, to_us)
        finally:
            self._opening -= 1

    async def _open(self, camera_id: str, from_us: int, to_us: int) -> Session:
        await self._require_camera(camera_id)
        started = time.perf_counter()
        planned = await self.chains.for_session(camera_id, from_us, to_us)
        planned_s = time.perf_counter() - started
        if planned is None:
            raise NotFound(f"camera {camera_id} has no recorded footage in that range")
        segments, plan = planned
        # The session writes its playlist and metadata now, and nothing more.
        await self.limiter.check_disk(len(plan.items) * WRITTEN_PER_ITEM)
        session = await self.store.create(
            camera_id, from_us, to_us, [segment.path for segment in segments], plan
        )
        log.info(
            "playback: %s created for %s, %d segment(s), %.0f s (planned in %.0f ms, written"
            " in %.0f ms)",
            session.id,
            camera_id,
            len(segments),
            session.duration_s,
            planned_s * 1e3,
            (time.perf_counter() - started - planned_s) * 1e3,
        )
        return session

    async def get(self, session_id: str) -> Session:
        return await self.store.get(session_id)

    async def delete(self, session_id: str) -> None:
        await self.store.delete(session_id)

    async def export(self, session_id: str) -> Export:
        """The session's range as one MP4 download: the session, the file name its
        download gets, and the clip laid out (export.py)."""
        session = await self.store.get(session_id)
        self.store.touch(session)

        def stamp(us: int) -> str:
            return format_us(us).replace("-", "").replace(":", "")

        name = f"{session.camera_id}_{stamp(session.from_us)}_{stamp(session.to_us)}.mp4"
        plan = await self.store.load_plan(session)
        with self.store.hold(session.id):
            clip = await self.exporter.laid_out(session, plan)
        return Export(session, name, clip)

    async def keyframe(self, camera_id: str, t_us: int) -> dict[str, object]:
        """The picture at `t_us` for a scrub preview (keyframes.py): the keyframe of the
        camera's recording at that time at or before it, for the browser to decode."""
        await self._require_camera(camera_id)
        # As sessions choose (wallclock.chosen): the later-written of two of one time,
        # none whose duration the next shows false.
        near = await self.index.segments(camera_id, t_us - HOUR_US, t_us + HOUR_US)
        kept, _, _ = chosen(near)
        found = [s for s in kept if s.start_us <= t_us < s.end_us]
        if not found:
            raise NotFound(f"camera {camera_id} has no recording at {format_us(t_us)}")
        return await self.exporter.keyframe_of(camera_id, found[-1], t_us)

    async def _derived(self, session: Session, name: str) -> Served:
        """The session's multivariant playlist (from its plan alone) or its I-frame
        playlist (iframes.py: made on its first request from the recordings' sample
        tables, one making at a time a session), kept beside its media playlist (made
        again at each request, if its directory cannot be written)."""
        directory = self.store.path(session.id)
        path = directory / name
        if await asyncio.to_thread(path.is_file):
            return _kept(directory, name)
        plan = await self.store.load_plan(session)
        listable = has_iframes(plan)
        if name == MULTIVARIANT:
            text = multivariant(plan, *await self.exporter.picture(plan), listable)
        elif not listable:
            raise NotFound(
                "this session's segments were made by ffmpeg for an earlier version of the"
                " agent: it has no I-frame playlist; create the session again"
            )
        else:
            making = self._making.get(session.id)
            if making is None:
                making = asyncio.ensure_future(self._iframes(session, plan))
                self._making[session.id] = making

                def made(done: asyncio.Future[str | None]) -> None:
                    self._making.pop(session.id, None)
                    if not done.cancelled():
                        done.exception()  # retrieved here: its waiters may all be gone

                making.add_done_callback(made)
            listed = await asyncio.shield(making)
            if listed is None:
                raise NotFound("this session's recordings have no keyframe to list")
            text = listed
        if self.store.live(session.id) and await asyncio.to_thread(
            _write_derived, directory, name, text
        ):
            return _kept(directory, name)
        # The text alone: none of the file's bytes (it starts past them).
        return Served(path=directory / PLAYLIST, content_type=PLAYLIST_TYPE,
                      prefix=text.encode(), start=_PAST, stop=_PAST,
                      version=_digest(text))  # fmt: skip

    async def _iframes(self, session: Session, plan: Plan) -> str | None:
        with self.store.hold(session.id):
            return await self.exporter.iframes_of(plan)

    def plans_state(self) -> dict[str, int | bool]:
        """For /healthz: how sessions were planned, and what is kept planned."""
        return self.chains.state()

    async def media_for(self, session_id: str, name: str) -> Served:
        """What to send for `name` of a session: its playlist or one of its segments."""
        session = await self.store.get(session_id)
        if name == PLAYLIST:
            directory = self.store.path(session.id)
            served = Served(
                path=directory / PLAYLIST,
                gzip_path=directory / f"{PLAYLIST}.gz",
                content_type=PLAYLIST_TYPE,
            )
        elif name in (IFRAMES, MULTIVARIANT):
            served = await self._derived(session, name)
        else:
            plan = await self.store.load_plan(session)
            named = named_item(plan, name)
            keyframe = named_keyframe(plan, name) if named is None else None
            if keyframe is not None:
                _, item, moof_at, sample = keyframe
                served = await self.media.keyframe_for(item, moof_at, sample)
            elif named is None:
                raise NotFound(f"this session has no media named {name}")
            else:
                init = name.startswith("i")
                served = await self.media.file_for(session, plan, *named, init=init)
        self.store.touch(session)
        # Clients may keep what they fetched for as long as the session lives.
        max_age = max(0, (session.expires_us - self.store.now_us()) // 1_000_000)
        return replace(served, max_age=max_age)


def _write_derived(directory: Path, name: str, text: str) -> bool:
    """Keep a session's derived playlist beside its media playlist, with its gzip twin
    (blocking); False if the directory cannot be written."""
    data = text.encode()
    try:
        replace_file(directory / f"{name}.gz", gzip.compress(data, 6, mtime=0))
        replace_file(directory / name, data)
    except OSError as error:
        log.warning("playback: %s: %s not kept: %s", directory.name, name, error)
        for leftover in (f".{name}.gz.tmp", f".{name}.tmp"):
            with contextlib.suppress(OSError):
                (directory / leftover).unlink()
        return False
    return True


def _kept(directory: Path, name: str) -> Served:
    return Served(path=directory / name, gzip_path=directory / f"{name}.gz",
                  content_type=PLAYLIST_TYPE)  # fmt: skip


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def recordings_range(
    from_us: int | None, to_us: int | None, last_end: int | None
) -> tuple[int, int]:
    """The range a recordings query answers (pure): as asked, at most MAX_RANGE_US (31
    days and two hours, any calendar month with its daylight-saving change; BadRequest
    beyond);
    the 31 days from `from` on, or up to `to`, if only one is given; else the 31 days up
    to the end of the camera's latest recording (`last_end`)."""
    if from_us is not None and to_us is not None:
        if to_us - from_us > MAX_RANGE_US:
            raise BadRequest(
                "a recordings range is at most 31 days and two hours (any calendar month):"
                " ask for the next from where this one ends"
            )
        return from_us, to_us
    if from_us is not None:
        return from_us, from_us + DEFAULT_RANGE_US
    if to_us is not None:
        return to_us - DEFAULT_RANGE_US, to_us
    end = last_end if last_end is not None else 0
    return end - DEFAULT_RANGE_US, end
