"""A camera's recorded spans over any range up to MAX_RANGE_US, answered in milliseconds
whatever the history: each hour's spans are made once from the index (the timings of the
recordings that start in it), kept, and joined; only the partial hours at a range's ends
are read afresh. An hour is dropped when the index tells of a change in it (a recording
written or removed), so the book never says what the index no longer holds.

All of it runs on the index's reader thread (Index.read): nothing on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from dataclasses import dataclass

from .index import Change, Index
from .timeline import Span, Spans, Timed, clip

HOUR_US = 3_600 * 1_000_000
DEFAULT_RANGE_US = 31 * 24 * HOUR_US  # what a query that names no range answers
# The longest range one answer covers: 31 days, and the hours a daylight-saving change
# adds (two in Antarctica/Troll), so that any calendar month in any zone is one query.
MAX_RANGE_US = DEFAULT_RANGE_US + 2 * HOUR_US
_SPANS_KEPT = 200_000  # spans kept in all hours, the oldest made dropped first (~25 MB)
_DROP_ALL = 10_000  # a change over more hours than this drops all of its camera's


@dataclass(frozen=True, slots=True)
class Hour:
    """The spans of the recordings that start within one hour, with the first of them
    and the one that ends last (to join the hours before and after)."""

    first: Timed | None
    spans: tuple[Span, ...]
    last: Timed | None


class SpanBook:
    """Spans of each camera by the hour, kept as long as the index does not change them."""

    def __init__(self, index: Index, name_resolution_us: int) -> None:
        self.index = index
        self.resolution = name_resolution_us
        self._hours: dict[tuple[str, int], Hour] = {}  # in the order they were made
        self._spans = 0  # of all the hours kept
        self._versions: dict[str, int] = {}  # a camera's: moved on by each change
        self._lock = threading.Lock()  # told on the event loop, read on the reader thread
        index.watch(self.told)

    def told(self, change: Change) -> None:
        """The index changed a camera between two times: the hours in between go."""
        with self._lock:
            self._versions[change.camera] = self._versions.get(change.camera, 0) + 1
            first, last = change.start_us // HOUR_US, change.end_us // HOUR_US
            if last - first > _DROP_ALL:
                for key in [key for key in self._hours if key[0] == change.camera]:
                    self._spans -= len(self._hours.pop(key).spans) + 1
                return
            for hour in range(first, last + 1):
                dropped = self._hours.pop((change.camera, hour), None)
                self._spans -= len(dropped.spans) + 1 if dropped is not None else 0

    async def warm(self, scanned: asyncio.Event) -> None:
        """Once the first scan is done, make each camera's hours of the MAX_RANGE_US up to
        its latest recording (what the page asks for), a day at a time on the reader
        thread, so that the first answers are as quick as the next."""
        await scanned.wait()
        for camera in [summary.id for summary in await self.index.cameras()]:
            end = await self.index.read(functools.partial(self.index.last_end_sync, camera))
            if end is None:
                continue
            last = end // HOUR_US
            for day in range(last - MAX_RANGE_US // HOUR_US, last + 1, 24):
                await self.index.read(functools.partial(self._day, camera, day))

    def _day(self, camera: str, first: int) -> None:
        for hour in range(first, first + 24):
            self._hour(camera, hour)

    async def spans(self, camera: str, from_us: int, to_us: int) -> list[Span]:
        """The camera's contiguous recorded spans cut to [from_us, to_us], each with the
        count of its recordings that overlap the range (as timeline.spans of them)."""
        if to_us - from_us > MAX_RANGE_US:
            raise ValueError("a range of at most MAX_RANGE_US")
        return await self.index.read(lambda: self.spans_sync(camera, from_us, to_us))

    def spans_sync(self, camera: str, from_us: int, to_us: int) -> list[Span]:
        """`spans`, on the index's reader thread."""
        made = Spans(self.resolution)
        whole_from = -(-from_us // HOUR_US)  # the first whole hour of the range
        whole_to = to_us // HOUR_US
        if whole_from >= whole_to:
            made.add(self.index.timings_sync(camera, from_us, to_us))
        else:
            made.add(self.index.timings_sync(camera, from_us, whole_from * HOUR_US))
            for hour in range(whole_from, whole_to):
                if made.last is not None and made.last.end_us > hour * HOUR_US:
                    # A recording from before runs on into this hour: its spans join it
                    # wherever they overlap it, so the hour is read afresh (long files).
                    made.add(self.index.timings_sync(
                        camera, hour * HOUR_US, (hour + 1) * HOUR_US, False
                    ))  # fmt: skip
                    continue
                kept = self._hour(camera, hour)
                if kept.first is not None and kept.last is not None:
                    made.join(kept.first, kept.spans, kept.last)
            made.add(self.index.timings_sync(camera, whole_to * HOUR_US, to_us, False))
        return clip(made.spans, from_us, to_us)

    def _hour(self, camera: str, hour: int) -> Hour:
        with self._lock:
            found = self._hours.get((camera, hour))
            version = self._versions.get(camera, 0)
        if found is not None:
            return found
        timings = self.index.timings_sync(camera, hour * HOUR_US, (hour + 1) * HOUR_US, False)
        made = Spans(self.resolution).add(timings)
        found = Hour(timings[0] if timings else None, tuple(made.spans), made.last)
        with self._lock:
            if self._versions.get(camera, 0) == version:  # not changed while it was read
                while self._hours and self._spans + len(found.spans) > _SPANS_KEPT:
                    oldest = next(iter(self._hours))
                    self._spans -= len(self._hours.pop(oldest).spans) + 1
                self._hours[(camera, hour)] = found
                self._spans += len(found.spans) + 1  # an empty hour counts as one
        return found
