"""The playback service: what the HTTP handlers ask for, one call each.

It checks a request against the rules (range, camera, footage), plans the playlist from
the index, creates the session, and says what to send for each of a session's URLs. The
session store owns the sessions on disk; the media service makes and finds segments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from .admission import Limiter
from .config import Config
from .errors import BadRequest, Busy, NotFound
from .index import Index, Segment
from .indexer import IndexerStatus
from .media import PLAYLIST_TYPE, MediaService, Served
from .mpegts import pts_delta
from .playlists import plan
from .probe import (
    Cut,
    ProbeError,
    cut_point,
    fmp4_cut,
    is_long,
    ts_cut_after,
    ts_cut_before,
    ts_splits,
)
from .sessions import PLAYLIST, Session, SessionStore, item
from .timeline import Span, clip, spans
from .times import format_us

log = logging.getLogger(__name__)

# Bytes a session writes per playlist entry before anyone watches (playlist, its gzip
# twin and session.json), counted against the disk floor.
WRITTEN_PER_ITEM = 400
SCAN_RETRY_SECONDS = 2
SESSIONS_RETRY_SECONDS = 60
# The whole timeline, for a recordings query without `from` or `to`.
ALL_TIME_US = 1 << 62


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
        media: MediaService,
        limiter: Limiter,
        indexing: IndexerStatus,
    ) -> None:
        self.indexing = indexing
        self.config = config
        self.index = index
        self.store = store
        self.media = media
        self.limiter = limiter

    async def _require_camera(self, camera_id: str) -> None:
        if not await self.index.has_camera(camera_id):
            raise NotFound(f"camera {camera_id} has no recordings")

    async def spans(self, camera_id: str, from_us: int | None, to_us: int | None) -> list[Span]:
        """The camera's contiguous recorded spans, cut to [from, to]."""
        check_range(from_us, to_us)
        await self._require_camera(camera_id)
        low = from_us if from_us is not None else -ALL_TIME_US
        high = to_us if to_us is not None else ALL_TIME_US
        found = await self.index.segments(camera_id, low, high)
        return clip(spans(found, self.config.layout.name_resolution_us), low, high)

    async def open(self, camera_id: str, from_us: int, to_us: int) -> Session:
        """Check a request, plan its playlist from the index and create the session."""
        check_range(from_us, to_us)
        max_seconds = self.config.playback.max_seconds
        if to_us - from_us > max_seconds * 1_000_000:
            raise BadRequest(
                f"the range is {(to_us - from_us) / 1e6:.0f} s long; at most {max_seconds} s"
            )
        if self.indexing.scan != "complete":
            # A session planned now would miss what the scan has not reached yet.
            raise Busy(
                "the agent is still indexing the recordings; try again shortly",
                retry_after=SCAN_RETRY_SECONDS,
            )
        await self.store.ready()  # the sessions on disk count against the limit
        limit = self.config.playback.max_sessions
        if len(self.store.sessions) + len(self.store.creating) >= limit:
            raise Busy(
                f"there are {limit} live playback sessions, the most playback.max_sessions"
                " allows; delete one or wait for one to expire",
                retry_after=SESSIONS_RETRY_SECONDS,
            )
        await self._require_camera(camera_id)
        segments = await self.index.segments(camera_id, from_us, to_us)
        if not segments:
            raise NotFound(f"camera {camera_id} has no recorded footage in that range")
        seconds = self.config.playback.segment_seconds
        indexed = await self.index.cuts(
            s.path for s in segments if is_long(s.container, s.duration, s.timescale, seconds)
        )
        cut, splits, last = await asyncio.to_thread(self._cuts, segments, from_us, to_us, indexed)
        found = plan(segments, from_us, self.config.layout.name_resolution_us, cut, splits, last)
        # The session writes its playlist and metadata now, its first segment soon after.
        first = found.items[0]
        self.limiter.check_disk(len(found.items) * WRITTEN_PER_ITEM + first.made_size)
        session = await self.store.create(
            camera_id, from_us, to_us, [segment.path for segment in segments], found
        )
        log.info(
            "playback: %s created for %s, %d segment(s), %.0f s",
            session.id,
            camera_id,
            len(segments),
            session.duration_s,
        )
        return session

    def _cuts(
        self,
        segments: list[Segment],
        from_us: int,
        to_us: int,
        indexed: Mapping[str, Sequence[Cut]],
    ) -> tuple[Cut | None, dict[str, list[Cut]], Cut | None]:
        """Where the session's first recording is cut (the keyframe at or before `from`),
        and where its long recordings are split into segments of about
        `playback.segment_seconds` (the last at the keyframe after `to`). The splits come
        from the index (`indexed`, found when the recording was indexed); the cuts at
        `from` and `to`, and splits the index lacks, are found by reading near where
        their times lie, never a whole long recording (blocking)."""
        root = self.config.recordings.root
        seconds = self.config.playback.segment_seconds
        head, tail = segments[0], segments[-1]

        def ticks(segment: Segment, us: int) -> int:
            return (us - segment.start_us) * segment.timescale // 1_000_000

        def long(segment: Segment) -> bool:
            return is_long(segment.container, segment.duration, segment.timescale, seconds)

        wanted = head.first_pts + ticks(head, from_us)
        cut: Cut | None = None
        last: Cut | None = None  # where the session stops in its last recording
        splits: dict[str, list[Cut]] = {}
        for segment in segments:
            if segment is not head and not long(segment):
                continue  # most of a day's 8,640: nothing to read, not even a path to make
            path = root / segment.path
            step = segment.timescale * seconds
            known = indexed.get(segment.path)
            fragmented = segment.container == "fmp4"

            try:
                if segment is head and fragmented:
                    cut = _fragment(path, head, known, ticks(head, from_us), after=False)
                elif segment is head and long(head):
                    cut = ts_cut_before(path, head.first_pts, head.duration, wanted, step)
                elif segment is head:
                    cut = cut_point(path, head.first_pts, wanted)
                if not long(segment):
                    continue
                low = max(0, ticks(segment, from_us)) if segment is head else 0
                high = ticks(segment, to_us) if segment is tail else segment.duration
                if known is None and fragmented:
                    cuts = []  # not split when indexed: served whole
                elif known is None:
                    cuts = ts_splits(path, segment.first_pts, segment.duration, step, low, high)
                else:  # those of the index between low and high, none within half a step
                    cuts = [
                        c for c in known
                        if step // 2 <= pts_delta(c.pts, segment.first_pts) - low
                        and step // 2 <= high - pts_delta(c.pts, segment.first_pts)
                    ]  # fmt: skip
                if segment is tail and high < segment.duration and fragmented:
                    last = _fragment(path, segment, known, high, after=True)
                elif segment is tail and high < segment.duration:
                    last = ts_cut_after(
                        path, segment.first_pts, segment.duration,
                        segment.first_pts + high, step,
                    )  # fmt: skip
                if last is not None:
                    stop = (last.offset, last.sample)
                    cuts = [c for c in cuts if (c.offset, c.sample) < stop] + [last]
                splits[segment.path] = cuts
            except (OSError, ProbeError, ValueError) as error:
                log.warning("playback: cannot find keyframes in %s (%s)", segment.path, error)
        return cut, splits, last

    async def get(self, session_id: str) -> Session:
        return await self.store.get(session_id)

    async def delete(self, session_id: str) -> None:
        await self.store.delete(session_id)

    async def export(self, session_id: str) -> tuple[Session, str]:
        """The session to export and the file name its download gets."""
        session = await self.store.get(session_id)
        self.store.touch(session)

        def stamp(us: int) -> str:
            return format_us(us).replace("-", "").replace(":", "")

        return session, f"{session.camera_id}_{stamp(session.from_us)}_{stamp(session.to_us)}.mp4"

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
        else:
            plan = await self.store.plan(session)
            found = item(plan, name)
            if found is None:
                raise NotFound(f"this session has no media named {name}")
            served = await self.media.file_for(session, plan, *found, init=name.startswith("i"))
        self.store.touch(session)
        # Clients may keep what they fetched for as long as the session lives.
        max_age = max(0, (session.expires_us - self.store.now_us()) // 1_000_000)
        return replace(served, max_age=max_age)


def _fragment(
    path: Path, segment: Segment, known: Sequence[Cut] | None, at: int, after: bool
) -> Cut | None:
    """The fragment of a fragmented MP4 recording that starts with the keyframe at or
    before `at` ticks after its first frame (or, `after`, the first after), looked for
    from the last split the index has before it (blocking)."""
    start = max(
        (c.offset for c in known or () if c.pts - segment.first_pts <= at),
        default=segment.media_start,
    )
    return fmp4_cut(
        path, segment.media_start, segment.media_end, start, segment.first_pts + at, after
    )
