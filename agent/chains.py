"""Each camera's recordings planned once, as one chain, for its sessions to slice.

Planning a day of 10 s recordings takes a quarter of a second; slicing a chain that has
them takes a few milliseconds. So the agent keeps, for each camera asked for lately, a
chain (playlists.Chain) of every recording that ends after `lo` and starts before `hi`,
exactly as the index has them:
- a session inside [lo, hi) plans only its first and last recordings anew, cut at
  `from` and `to`, and shares the items of those between;
- a session that ends later grows the chain by the recordings that started since;
- the index tells each write: a recording written or removed inside the chain cuts the
  chain back to before it (it grows again when asked), and recordings removed from its
  start (retention) are dropped from it;
- a session that starts before `lo`, or whose recordings the chain does not serve the
  way the session would (a camera that changed to HEVC, or to fragmented MP4), gets a
  chain planned anew from its own recordings, which the agent keeps instead.
After the first scan each camera's latest `playback.max_seconds` is planned ahead, so the
first session of recent footage is sliced too. Chains are planned, grown and sliced on a
worker thread, one at a time a camera, with their items' playlist lines and plan.json
rows, and at most CHAIN_LINKS_KEPT recordings are kept in all, the least recently used
dropped first.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .containers.mpegts import pts_delta
from .containers.probe import (
    Cut,
    ProbeError,
    cut_point,
    fmp4_cut,
    is_long,
    ts_cut_after,
    ts_cut_before,
    ts_splits,
)
from .index import Change, Index, Segment
from .playlists import Chain, Link, MediaItem, Plan, lines_of
from .times import format_us
from .wallclock import chosen

log = logging.getLogger(__name__)
_DROPPED_KEPT = 10_000

# Recordings kept planned, over every camera, about 2 kB each (the index's row, the
# chain's link and item, their playlist lines and plan.json row): two days of one
# camera's 10 s recordings, or 4 h of fourteen cameras'.
CHAIN_LINKS_KEPT = 20_000


@dataclass(eq=False)
class _Kept:
    chain: Chain
    lo: int  # the chain has every recording that ends after lo and starts before hi
    hi: int
    longest_us: int  # the longest of its recordings
    closed: bool = False  # the recording at hi does not fit the chain's way
    changes: list[Change] = field(default_factory=list)  # told, not yet applied


class ChainCache:
    def __init__(
        self, config: Config, index: Index, prepare: Callable[[MediaItem], object] = bool
    ) -> None:
        """`prepare` is called on each item as it is planned, on the worker thread: the
        session store makes its plan.json row there, once for every session sliced."""
        self.config = config
        self.index = index
        self._prepare = prepare
        self._kept: OrderedDict[str, _Kept] = OrderedDict()  # least recently used first
        self._locks: dict[str, asyncio.Lock] = {}
        # Writes told while chains are planned, a list each.
        self._building: dict[str, list[list[Change]]] = {}
        self._dropped: set[str] = set()  # recordings left out (wallclock.chosen), said once
        self.warmed = asyncio.Event()  # set once `warm` is done
        # How sessions were planned: on a kept chain, grown first, or on a new chain.
        self.counts = {"sliced": 0, "grown": 0, "planned": 0}
        index.watch(self._told)

    def state(self) -> dict[str, int | bool]:
        """For /healthz: how sessions were planned since start, what is kept, and
        whether the planning ahead after the first scan is done."""
        kept = self._links()
        return {
            **self.counts,
            "cameras_kept": len(self._kept),
            "recordings_kept": kept,
            "planned_ahead": self.warmed.is_set(),
        }

    def _told(self, change: Change) -> None:
        kept = self._kept.get(change.camera)
        if kept is not None:
            kept.changes.append(change)
        for told in self._building.get(change.camera, ()):
            told.append(change)

    async def for_session(
        self, camera: str, from_us: int, to_us: int
    ) -> tuple[list[Segment], Plan] | None:
        """The camera's recordings that overlap [from_us, to_us), and a session's plan of
        them played from `from_us`; None if there are none."""
        async with self._locks.setdefault(camera, asyncio.Lock()):
            try:
                planned = await self._plan(camera, from_us, to_us)
            except BaseException:
                self._kept.pop(camera, None)  # maybe half grown, or still in a thread's hands
                raise
            if planned is not None:
                self._kept.move_to_end(camera)
                self._trim(camera)
            return planned

    async def _plan(
        self, camera: str, from_us: int, to_us: int
    ) -> tuple[list[Segment], Plan] | None:
        kept = self._kept.get(camera)
        if kept is not None and not _apply(kept):
            kept = None
        grown = False
        if (
            kept is not None
            and from_us >= kept.lo
            and kept.hi < to_us <= kept.hi + (to_us - from_us)  # by at most the session
            and not kept.closed
        ):
            await self._grow(camera, kept, to_us)
            grown = True
        planned = None
        if kept is not None and from_us >= kept.lo and to_us <= kept.hi:
            planned = await asyncio.to_thread(self._slice, kept, from_us, to_us)
        if planned is not None:
            self.counts["grown" if grown else "sliced"] += 1
        else:
            if kept is not None:
                log.debug(
                    "playback: %s's chain of %s to %s does not serve %s to %s: planned anew",
                    camera, format_us(kept.lo), format_us(kept.hi), format_us(from_us),
                    format_us(to_us),
                )  # fmt: skip
            self._kept.pop(camera, None)
            kept = await self._build(camera, from_us, to_us)
            if kept is None:
                return None
            self._kept[camera] = kept
            planned = await asyncio.to_thread(self._slice, kept, from_us, to_us)
            if planned is None:  # its recordings in the range are none it would play
                return None
            self.counts["planned"] += 1
        return planned if planned[0] else None

    async def warm(self, scanned: asyncio.Event) -> None:
        """Once the first scan is done, plan each camera's latest `playback.max_seconds`
        (the cameras recorded most lately first, as many as CHAIN_LINKS_KEPT allows), so
        that the first session of recent footage is sliced too."""
        await scanned.wait()
        span_us = self.config.playback.max_seconds * 1_000_000
        cameras = sorted(await self.index.cameras(), key=lambda c: -c.last_end_us)
        for camera in cameras:
            if camera.id in self._kept:
                continue
            # Planned without the camera's lock, so that a session asked for meanwhile
            # does not wait; kept only if that session has not kept a chain first, and
            # only while all that is kept stays within CHAIN_LINKS_KEPT.
            low = camera.last_end_us - span_us
            kept = await self._build(camera.id, low, camera.last_end_us + 1)
            if kept is None or camera.id in self._kept:
                continue
            if self._links() + len(kept.chain.links) > CHAIN_LINKS_KEPT:
                break
            self._kept[camera.id] = kept
            self._kept.move_to_end(camera.id, last=False)  # not used yet
        self.warmed.set()
        log.info("playback: %d camera(s) planned ahead", len(self._kept))

    # -- keeping chains ------------------------------------------------------------------

    async def _build(self, camera: str, from_us: int, to_us: int) -> _Kept | None:
        """A new chain of the camera's recordings that overlap [from_us, to_us), with the
        index's writes told meanwhile; None if there are none. Not kept yet."""
        told: list[Change] = []
        self._building.setdefault(camera, []).append(told)
        try:
            segments = await self.index.segments(camera, from_us, to_us)
            if not segments:
                return None
            known = await self.index.cuts(s.path for s in segments if self._long(s))
            chain = Chain(self.config.layout.name_resolution_us, *Chain.way(segments))
            kept = _Kept(chain, from_us, to_us, 0, changes=told)
            await asyncio.to_thread(self._append, kept, segments, known)
            return kept
        finally:  # by identity: two builds' lists may be equal
            building = [other for other in self._building[camera] if other is not told]
            self._building[camera] = building

    async def _grow(self, camera: str, kept: _Kept, to_us: int) -> None:
        segments = await self.index.segments_after(camera, kept.hi, to_us)
        known = await self.index.cuts(s.path for s in segments if self._long(s))
        kept.hi = to_us
        await asyncio.to_thread(self._append, kept, segments, known)

    def _append(self, kept: _Kept, segments: list[Segment], known: Mapping[str, list[Cut]]) -> None:
        """Add recordings to a chain, split where long, and make their items' playlist
        lines and plan.json rows, which every session sliced from them writes; a recording
        that does not fit the chain's way closes it (blocking: it may read long
        recordings)."""
        chain = kept.chain
        made = len(chain.items)
        before = chain.last_segment
        segments, dropped, false = chosen(segments, before)
        if before is not None and any(s is before for s in dropped + false):
            # The recording chosen last is replaced by one of its time written later, or
            # shown false by the next.
            last = [n for n, link in enumerate(chain.links) if link.segment is before]
            chain.truncate(last[-1])
            made = min(made, len(chain.items))
        for segment in dropped + false:
            if segment.path not in self._dropped and len(self._dropped) < _DROPPED_KEPT:
                self._dropped.add(segment.path)
                log.warning(
                    "plan: %s %s; sessions leave it out",
                    segment.path,
                    "covers the same time as another recording of its camera, written later"
                    if segment in dropped
                    else f"claims {(segment.end_us - segment.start_us) / 1e6:.0f} s in"
                    f" {segment.size} bytes, far sparser than the camera's next recording,"
                    " which starts inside it",
                )
        for segment in segments:
            if not chain.fits(segment):
                _cut_back(kept, segment.start_us, "served another way")
                kept.closed = True
                break
            parts: Sequence[Cut] = ()
            if self._long(segment):
                parts = self._parts(segment, known.get(segment.path))
            chain.append(segment, parts)
            kept.longest_us = max(kept.longest_us, segment.end_us - segment.start_us)
        for item in chain.items[made:]:
            lines_of(item)
            self._prepare(item)

    def _trim(self, using: str) -> None:
        """Keep at most CHAIN_LINKS_KEPT recordings: drop the chains used least lately,
        then the oldest recordings of the one in use (`using`, whose lock is held)."""
        total = self._links()
        for camera, kept in list(self._kept.items()):
            if total <= CHAIN_LINKS_KEPT:
                return
            if camera == using:
                dropped = min(total - CHAIN_LINKS_KEPT, len(kept.chain.links) - 1)
                kept.lo = max(
                    [kept.lo, *(link.segment.end_us for link in kept.chain.links[:dropped])]
                )
                kept.chain.drop(dropped)
                total -= dropped
            elif not self._in_use(camera):  # else dropped another time
                del self._kept[camera]
                total -= len(kept.chain.links)

    def _links(self) -> int:
        """The recordings kept planned, over every camera."""
        return sum(len(kept.chain.links) for kept in self._kept.values())

    def _in_use(self, camera: str) -> bool:
        """Whether a session of `camera` is being planned (a chain planned ahead has no
        lock until a session asks for the camera)."""
        lock = self._locks.get(camera)
        return lock is not None and lock.locked()

    # -- slicing -------------------------------------------------------------------------

    def _slice(self, kept: _Kept, from_us: int, to_us: int) -> tuple[list[Segment], Plan] | None:
        """The session's recordings and plan from a kept chain that covers its range, or
        None if the chain cannot serve it as the session would be served (blocking)."""
        links = kept.chain.links
        low = bisect.bisect_left(links, from_us - kept.longest_us, key=_start)
        high = bisect.bisect_left(links, to_us, key=_start)
        k = next((n for n in range(low, high) if links[n].segment.end_us > from_us), high)
        if k == high:
            return [], Plan((), 0.0)  # no recordings
        segments = [link.segment for link in links[k:high] if link.segment.end_us > from_us]
        m = next((n for n in range(high - 1, k - 1, -1) if links[n].chosen), None)
        if m is None or not links[k].chosen:
            return None
        if Chain.way(segments) != (kept.chain.fragmented, kept.chain.reboxed):
            return None
        first_cut, head_parts, tail_parts, last_cut = self._ends(links[k], links[m], from_us, to_us)
        sliced = kept.chain.slice(k, m, from_us, first_cut, head_parts, tail_parts, last_cut)
        return segments, sliced

    # -- reading recordings --------------------------------------------------------------

    def _long(self, segment: Segment) -> bool:
        seconds = self.config.playback.segment_seconds
        return is_long(segment.container, segment.duration, segment.timescale, seconds)

    def _parts(self, segment: Segment, known: Sequence[Cut] | None) -> list[Cut]:
        """Where a long recording is split into segments of about
        `playback.segment_seconds`: the index's cuts (found when it was indexed), or those
        found by reading near where their times lie (blocking)."""
        step = segment.timescale * self.config.playback.segment_seconds
        if known is not None:
            return _within(known, segment, step, 0, segment.duration)
        if segment.container == "fmp4":
            return []  # not split when indexed: served whole
        path = self.config.recordings.root / segment.path
        try:
            return ts_splits(path, segment.first_pts, segment.duration, step, 0, segment.duration)
        except (OSError, ProbeError, ValueError) as error:
            log.warning("playback: cannot find keyframes in %s (%s)", segment.path, error)
            return []

    def _ends(
        self, head: Link, tail: Link, from_us: int, to_us: int
    ) -> tuple[Cut | None, list[Cut], list[Cut], Cut | None]:
        """Where a session's first recording is cut (the keyframe at or before `from`) and
        its first and last recordings are split (the last part ending at the keyframe after
        `to`), found by reading near where their times lie (blocking)."""
        root = self.config.recordings.root
        step_seconds = self.config.playback.segment_seconds
        cut = last = None
        ends: list[list[Cut]] = []
        for link in (head, tail) if head is not tail else (head,):
            segment = link.segment
            step = segment.timescale * step_seconds
            low = max(0, _ticks(segment, from_us)) if link is head else 0
            high = _ticks(segment, to_us) if link is tail else segment.duration
            path = root / segment.path
            fragmented = segment.container == "fmp4"
            long = self._long(segment)
            parts = _within(link.parts, segment, step, low, high)
            try:
                at = _ticks(segment, from_us)
                if link is head and fragmented:
                    cut = _fragment(path, segment, link.parts, at, after=False)
                elif link is head and long:
                    wanted = segment.first_pts + at
                    cut = ts_cut_before(path, segment.first_pts, segment.duration, wanted, step)
                elif link is head:
                    cut = cut_point(path, segment.first_pts, segment.first_pts + at)
                if link is tail and long and high < segment.duration:
                    if fragmented:
                        last = _fragment(path, segment, link.parts, high, after=True)
                    else:
                        last = ts_cut_after(
                            path, segment.first_pts, segment.duration,
                            segment.first_pts + high, step,
                        )  # fmt: skip
                    if last is not None:
                        stop = (last.offset, last.sample)
                        parts = [c for c in parts if (c.offset, c.sample) < stop] + [last]
            except (OSError, ProbeError, ValueError) as error:
                log.warning("playback: cannot find keyframes in %s (%s)", segment.path, error)
            ends.append(parts)
        return cut, ends[0], ends[-1], last


def _start(link: Link) -> int:
    return link.segment.start_us


def _ticks(segment: Segment, us: int) -> int:
    return (us - segment.start_us) * segment.timescale // 1_000_000


def _within(known: Sequence[Cut], segment: Segment, step: int, low: int, high: int) -> list[Cut]:
    """The cuts between `low` and `high` (ticks after the first frame), none within half
    a step of either."""
    return [
        c for c in known
        if step // 2 <= pts_delta(c.pts, segment.first_pts) - low
        and step // 2 <= high - pts_delta(c.pts, segment.first_pts)
    ]  # fmt: skip


def _fragment(
    path: Path, segment: Segment, known: Sequence[Cut], at: int, after: bool
) -> Cut | None:
    """The fragment of a fragmented MP4 recording that starts with the keyframe at or
    before `at` ticks after its first frame (or, `after`, the first after), looked for
    from the last split known before it (blocking)."""
    start = max(
        (c.offset for c in known if c.pts - segment.first_pts <= at),
        default=segment.media_start,
    )
    return fmp4_cut(
        path, segment.media_start, segment.media_end, start, segment.first_pts + at, after
    )


def _apply(kept: _Kept) -> bool:
    """Bring a kept chain up to the index's writes since; False if nothing is left."""
    chain = kept.chain
    for change in kept.changes:
        if change.removed:
            places = [
                n for n, link in enumerate(chain.links) if link.segment.path in change.removed
            ]
            if places == list(range(len(places))):
                chain.drop(len(places))  # the oldest recordings, gone: the rest stands
            else:
                _cut_back(kept, chain.links[places[0]].segment.start_us, "removed")
        elif change.end_us > kept.lo and change.start_us < kept.hi:
            _cut_back(kept, change.start_us, "written")
        if not chain.links:
            return False
    kept.changes.clear()
    return True


def _cut_back(kept: _Kept, start_us: int, why: str) -> None:
    """Forget the chain's recordings from those that start at `start_us` on."""
    if start_us < kept.hi:
        links = kept.chain.links
        n = bisect.bisect_left(links, start_us, key=_start)
        if links:
            log.debug(
                "playback: %s's chain cut back to %s (%s): %d of its %d recordings kept",
                links[0].segment.camera, format_us(start_us), why, n, len(links),
            )  # fmt: skip
        kept.chain.truncate(n)
        kept.hi = start_us
        kept.closed = False
