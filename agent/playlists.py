"""HLS playlists (pure functions): which media segment comes from which recording, with
what duration, wall-clock time and discontinuities, and the VOD playlist text.

One HLS segment per recorded segment. An MPEG-TS recording that starts with a keyframe
is already a valid HLS segment and is served as it is, timestamps and all; anything
else (an MP4 recording, or the first segment cut at the keyframe before `from`) is
remuxed with `ffmpeg -c copy` when first asked for. The playlist is complete from the
start, so its durations come from the index, exact to the tick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .index import Segment
from .mpegts import pts_delta
from .timeline import is_gap
from .times import format_us

REMUX_TIMELINE_START = 10.0  # where remuxed MP4 footage starts on the output timeline


@dataclass(frozen=True, kw_only=True)
class MediaItem:
    """One media segment of a session's playlist."""

    name: str  # file name in the session's URL space, like s000000.ts
    source: str  # the recording's path relative to the recordings root
    remux: bool  # False: served as recorded; True: made by ffmpeg -c copy on first use
    seek: float | None  # start at the keyframe at this media time (seconds), or None
    offset: float | None  # shift timestamps by this many seconds, or None to keep them
    duration: float  # EXTINF: real media duration in seconds
    pdt_us: int  # wall-clock time of the first frame (UTC microseconds)
    discontinuity: bool  # a gap or a timestamp jump comes before this segment
    size: int  # bytes of the recording


@dataclass(frozen=True)
class Plan:
    items: tuple[MediaItem, ...]
    start_offset: float  # where in the playlist the requested `from` is, in seconds

    @property
    def target_duration(self) -> int:
        return max(1, *(_round(item.duration) for item in self.items))


def _round(seconds: float) -> int:
    """RFC 8216 rounds EXTINF to the nearest integer (half up) against the target."""
    return math.floor(seconds + 0.5)


def _continues(prev: Segment, seg: Segment) -> bool:
    """Whether `seg`'s own timestamps carry straight on from `prev`'s (MPEG-TS only)."""
    if prev.container != "mpegts" or seg.container != "mpegts":
        return False
    gap = pts_delta(seg.first_pts, prev.first_pts + prev.duration)
    return abs(gap) * 2 <= max(prev.frame_ticks, 1)


def plan(
    segments: Sequence[Segment],
    from_us: int,
    name_resolution_us: int,
    first_keyframes: Sequence[int],
) -> Plan:
    """The media segments for `segments` (one camera's, by start) played from `from_us`.

    `first_keyframes` are the keyframe times of segments[0] in its own ticks.
    """
    chosen: list[Segment] = []
    for segment in segments:
        if chosen and segment.end_us <= chosen[-1].end_us:
            continue  # wholly inside the previous one: a duplicate recording
        chosen.append(segment)
    items: list[MediaItem] = []
    start_offset = 0.0
    out_end = REMUX_TIMELINE_START
    for n, seg in enumerate(chosen):
        scale = seg.timescale
        begin = seg.first_pts
        if n == 0:
            wanted = seg.first_pts + (from_us - seg.start_us) * scale // 1_000_000
            before = [k for k in first_keyframes if seg.first_pts <= k <= wanted]
            if before:
                begin = max(before)
        duration = (seg.first_pts + seg.duration - begin) / scale
        trimmed = begin != seg.first_pts
        prev = chosen[n - 1] if n else None
        discontinuity = prev is not None and (
            is_gap(prev, seg, name_resolution_us)
            or prev.video_codec != seg.video_codec
            or (seg.container == "mpegts") != (prev.container == "mpegts")
            or (seg.container == "mpegts" and not _continues(prev, seg))
        )
        if n == 0 or discontinuity:
            pdt_us = seg.start_us + (begin - seg.first_pts) * 1_000_000 // scale
        else:
            last = items[-1]
            pdt_us = last.pdt_us + round(last.duration * 1_000_000)
        if seg.container == "mpegts":
            offset = None  # keep the recorder's timestamps, continuous across its segments
            out_end = REMUX_TIMELINE_START
        else:
            offset = out_end - begin / scale
            out_end += duration
        if n == 0:
            start_offset = max(0.0, (from_us - pdt_us) / 1e6)
        items.append(
            MediaItem(
                name=f"s{n:06d}.ts",
                source=seg.path,
                remux=trimmed or seg.container != "mpegts",
                seek=begin / scale if trimmed else None,
                offset=offset,
                duration=duration,
                pdt_us=pdt_us,
                discontinuity=discontinuity,
                size=seg.size,
            )
        )
    return Plan(tuple(items), round(start_offset, 6))


def render(found: Plan) -> str:
    """The complete VOD playlist (RFC 8216) for a plan."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{found.target_duration}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if found.start_offset > 0:
        lines.append(f"#EXT-X-START:TIME-OFFSET={found.start_offset:.3f},PRECISE=YES")
    for item in found.items:
        if item.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(item.pdt_us)}")
        lines.append(f"#EXTINF:{item.duration:.6f},")
        lines.append(item.name)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _pdt(us: int) -> str:
    """RFC 3339 with milliseconds, the form every player parses."""
    text = format_us(us - us % 1000)
    if "." not in text:
        return text[:-1] + ".000Z"
    whole, fraction = text[:-1].split(".")
    return f"{whole}.{fraction.ljust(3, '0')}Z"
