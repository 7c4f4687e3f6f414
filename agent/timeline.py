"""Where recordings are continuous and where they have gaps (pure functions).

A hole between two consecutive segments is a gap when it is longer than one frame
interval plus GAP_SLACK_US. The hole is measured from the media timestamps when both
segments carry one continuous timeline (MPEG-TS and fragmented MP4 recorders keep
counting across segments) and the timestamps agree with the file names; otherwise it is
measured from the file names, and names with whole seconds add one second of tolerance,
since a name cannot say where in its second the segment began.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .containers.mpegts import pts_delta

GAP_SLACK_US = 20_000


class Timed(Protocol):
    """What gaps are judged from: a recording's place on the wall clock and its media
    timestamps (index.Segment, Timing)."""

    @property
    def start_us(self) -> int: ...
    @property
    def end_us(self) -> int: ...
    @property
    def container(self) -> str: ...
    @property
    def timescale(self) -> int: ...
    @property
    def first_pts(self) -> int: ...
    @property
    def duration(self) -> int: ...
    @property
    def frame_us(self) -> int: ...


class Timing(NamedTuple):
    """A recording's timing alone (a row of the index's TIMING_COLUMNS): what spans are
    made of, without the rest of its Segment."""

    start_us: int
    end_us: int
    container: str
    timescale: int
    first_pts: int
    duration: int
    frame_ticks: int

    @property
    def frame_us(self) -> int:
        return self.frame_ticks * 1_000_000 // self.timescale


@dataclass(frozen=True, slots=True)
class Span:
    start_us: int
    end_us: int
    segment_count: int


def _pts_hole_us(prev: Timed, nxt: Timed) -> int | None:
    """The hole from media timestamps, if both share one timeline."""
    if prev.container == "mp4" or nxt.container != prev.container:
        return None
    if prev.timescale != nxt.timescale:
        return None
    ticks = nxt.first_pts - prev.first_pts - prev.duration
    if prev.container == "mpegts":
        ticks = pts_delta(ticks, 0)
    return ticks * 1_000_000 // prev.timescale


def is_gap(prev: Timed, nxt: Timed, name_resolution_us: int) -> bool:
    """Whether footage is missing between `prev` and the segment that follows it."""
    by_name = nxt.start_us - prev.end_us
    allowed = max(prev.frame_us, nxt.frame_us) + GAP_SLACK_US
    by_pts = _pts_hole_us(prev, nxt)
    if by_pts is not None and abs(by_pts - by_name) <= name_resolution_us + allowed:
        return by_pts > allowed
    tolerance = name_resolution_us if name_resolution_us > 1 else 0
    return by_name > allowed + tolerance


def drifted(chained_us: int, segment: Timed, name_resolution_us: int) -> bool:
    """Whether a wall-clock time chained through a continuous run (media durations added
    up) has drifted from where `segment`'s name puts it by more than the name can say:
    a camera's media clock runs a little fast or slow, which adds up over days."""
    allowed = name_resolution_us + segment.frame_us + GAP_SLACK_US
    return abs(chained_us - segment.start_us) > allowed


def spans(segments: Sequence[Timed], name_resolution_us: int) -> list[Span]:
    """Contiguous recorded spans of one camera's segments (sorted by start)."""
    return Spans(name_resolution_us).add(segments).spans


@dataclass(slots=True)
class Spans:
    """Spans made as a camera's recordings come, in order of start: one at a time
    (`add`), or a run whose own spans are already made (`join`)."""

    name_resolution_us: int
    spans: list[Span] = field(default_factory=list)
    last: Timed | None = None  # of the recordings so far, the one that ends last

    def add(self, segments: Iterable[Timed]) -> Spans:
        result, resolution, last = self.spans, self.name_resolution_us, self.last
        start = end = count = 0
        if result:  # the span being made, held in locals until it ends
            span = result.pop()
            start, end, count = span.start_us, span.end_us, span.segment_count
        for segment in segments:
            if last is None or is_gap(last, segment, resolution):
                if last is not None:
                    result.append(Span(start, end, count))
                start, end, count = segment.start_us, segment.end_us, 0
            end = max(end, segment.end_us)
            count += 1
            last = segment if last is None or segment.end_us >= last.end_us else last
        if last is not None:
            result.append(Span(start, end, count))
        self.last = last
        return self

    def join(self, first: Timed, spans: Sequence[Span], last: Timed) -> Spans:
        """A run of recordings from `first`, whose spans are `spans` and whose latest
        ending recording is `last`."""
        if not spans:
            return self
        if self.last is None or is_gap(self.last, first, self.name_resolution_us):
            self.spans.extend(spans)
        else:
            span, head = self.spans[-1], spans[0]
            self.spans[-1] = Span(span.start_us, max(span.end_us, head.end_us),
                                  span.segment_count + head.segment_count)  # fmt: skip
            self.spans.extend(spans[1:])
        if self.last is None or last.end_us >= self.last.end_us:
            self.last = last
        return self


def clip(found: Sequence[Span], from_us: int, to_us: int) -> list[Span]:
    """Spans cut to [from_us, to_us]; each keeps the count of segments it overlaps."""
    return [
        Span(max(span.start_us, from_us), min(span.end_us, to_us), span.segment_count)
        for span in found
        if span.end_us > from_us and span.start_us < to_us
    ]
