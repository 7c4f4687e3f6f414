"""Where recordings are continuous and where they have gaps (pure functions).

A hole between two consecutive segments is a gap when it is longer than one frame
interval plus GAP_SLACK_US. The hole is measured from the media timestamps when both
segments carry one continuous timeline (MPEG-TS and fragmented MP4 recorders keep
counting across segments) and the timestamps agree with the file names; otherwise it is
measured from the file names, and names with whole seconds add one second of tolerance,
since a name cannot say where in its second the segment began.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .containers.mpegts import pts_delta
from .index import Segment

GAP_SLACK_US = 20_000


@dataclass(frozen=True)
class Span:
    start_us: int
    end_us: int
    segment_count: int


def _pts_hole_us(prev: Segment, nxt: Segment) -> int | None:
    """The hole from media timestamps, if both share one timeline."""
    if prev.container == "mp4" or nxt.container != prev.container:
        return None
    if prev.timescale != nxt.timescale:
        return None
    ticks = nxt.first_pts - prev.first_pts - prev.duration
    if prev.container == "mpegts":
        ticks = pts_delta(ticks, 0)
    return ticks * 1_000_000 // prev.timescale


def is_gap(prev: Segment, nxt: Segment, name_resolution_us: int) -> bool:
    """Whether footage is missing between `prev` and the segment that follows it."""
    by_name = nxt.start_us - prev.end_us
    allowed = max(prev.frame_us, nxt.frame_us) + GAP_SLACK_US
    by_pts = _pts_hole_us(prev, nxt)
    if by_pts is not None and abs(by_pts - by_name) <= name_resolution_us + allowed:
        return by_pts > allowed
    tolerance = name_resolution_us if name_resolution_us > 1 else 0
    return by_name > allowed + tolerance


def drifted(chained_us: int, segment: Segment, name_resolution_us: int) -> bool:
    """Whether a wall-clock time chained through a continuous run (media durations added
    up) has drifted from where `segment`'s name puts it by more than the name can say:
    a camera's media clock runs a little fast or slow, which adds up over days."""
    allowed = name_resolution_us + segment.frame_us + GAP_SLACK_US
    return abs(chained_us - segment.start_us) > allowed


def spans(segments: Sequence[Segment], name_resolution_us: int) -> list[Span]:
    """Contiguous recorded spans of one camera's segments (sorted by start)."""
    result: list[Span] = []
    if not segments:
        return result
    start, end, count = segments[0].start_us, segments[0].end_us, 1
    last = segments[0]
    for segment in segments[1:]:
        if is_gap(last, segment, name_resolution_us):
            result.append(Span(start, end, count))
            start, end, count = segment.start_us, segment.end_us, 0
        end = max(end, segment.end_us)
        count += 1
        last = segment if segment.end_us >= last.end_us else last
    result.append(Span(start, end, count))
    return result


def clip(found: Sequence[Span], from_us: int, to_us: int) -> list[Span]:
    """Spans cut to [from_us, to_us]; each keeps the count of segments it overlaps."""
    return [
        Span(max(span.start_us, from_us), min(span.end_us, to_us), span.segment_count)
        for span in found
        if span.end_us > from_us and span.start_us < to_us
    ]
