"""HLS playlists (pure functions): which media segment comes from which recording, with
what duration, wall-clock time and timestamps, and the VOD playlist text.

One HLS segment per recorded segment, all on one timeline per session: every served
segment's timestamps continue exactly where the previous one's ended, across recorder
timestamp resets and gaps alike, as from one muxer (the wall clock after a gap is in
EXT-X-PROGRAM-DATE-TIME). An MPEG-TS recording is served from its own bytes, its
PTS/DTS/PCR and continuity counters rewritten in flight; the first one is cut at the
keyframe before `from` the same way. When every recording is fragmented MP4, the session
is fragmented MP4, served from the recordings' bytes, each fragment's decode time moved
in flight. Otherwise an MP4 recording is remuxed to MPEG-TS by `ffmpeg -c copy` onto the
same timeline when first asked for; and an HEVC session's every segment is made
fragmented MP4 (hvc1, for Safari) the same way. The playlist is complete from the
start, so its durations come from the index, exact to the tick.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .index import Segment
from .mpegts import CLOCK, PTS_WRAP, decode_counters, pts_delta
from .probe import Cut, same_streams
from .timeline import is_gap
from .times import format_us

OUT_START = 10 * CLOCK  # where a session's timeline starts (90 kHz ticks)
# The most a segment's video waits after the one before so that its audio, which a
# recorder may start ahead of the video, does not overlap the audio before it. Beyond
# this the audio overlaps instead: a longer pause in the picture would be seen.
MAX_HOLD = CLOCK // 2
RECORDED, CUT, REMUX, FRAGMENTS = "recorded", "cut", "remux", "fragments"
KINDS = (RECORDED, CUT, REMUX, FRAGMENTS)


@dataclass(kw_only=True, slots=True)
class MediaItem:
    """One media segment of a playlist (slots: a session keeps thousands). Not changed
    once planned, and shared by the sessions planned from one camera's chain: its name
    and its place on a session's timeline come from the session's plan (`Plan.at`). Not
    frozen, because a frozen dataclass's __init__ sets each field through
    object.__setattr__: 69 ms of a day's 200 ms plan (8,640 items)."""

    source: str  # the recording's path relative to the recordings root
    # RECORDED, CUT (from a keyframe's packet, PAT and PMT in front), REMUX, or FRAGMENTS
    # (fragments of a fragmented MP4 recording, bytes cut_at to stop_at, init section 0 to
    # init_size, their decode times moved by `shift` ticks of the video's timescale)
    kind: str
    duration: float  # EXTINF: real media duration in seconds
    pdt_us: int  # wall-clock time of the first frame (UTC microseconds)
    discontinuity: bool  # the streams change before this segment (codec, PIDs, container)
    size: int  # bytes of the recording
    # RECORDED, CUT: ticks added to every PTS, DTS and PCR (mod 2**33); FRAGMENTS: ticks
    # of the video's timescale added to every decode time. Both before the plan's offset.
    shift: int = 0
    cc_shift: str = ""  # RECORDED: "pid:delta,...", added to each PID's counters
    cut_at: int = 0  # CUT: byte offset of the keyframe's first packet; FRAGMENTS: its moof
    stop_at: int = 0  # RECORDED, CUT, FRAGMENTS: where in the recording this item ends
    # (0: its end)
    # FRAGMENTS: the keyframe's index among the video samples of the fragment at cut_at
    # (0: the fragment starts with it), and the index of the first video sample of the
    # fragment at stop_at that is not this item's (0: none is).
    cut_sample: int = 0
    stop_sample: int = 0
    suffix: tuple[int, ...] = ()  # RECORDED, CUT: packets after stop_at sent last (its audio)
    nulls: tuple[int, ...] = ()  # CUT: packets sent as null packets (audio of the item before)
    prefix: tuple[int, ...] = ()  # CUT: offsets of the PAT and PMT packets sent first
    # REMUX, FRAGMENTS: start at the keyframe at this media time (seconds)
    seek: float | None = None
    # REMUX: ffmpeg's -output_ts_offset (seconds), before the plan's offset
    offset: float | None = None
    init_size: int = 0  # FRAGMENTS: the bytes of the init section, from the file's start
    # Made as fragmented MP4 by ffmpeg, its video sample entry tagged so (hvc1, avc1): an
    # HEVC session's, which Safari plays only so. "": served as MPEG-TS (or FRAGMENTS).
    mp4_tag: str = ""
    timescale: int = 0  # FRAGMENTS: the video's timescale (ticks a second)
    name: str = ""  # its URI in its session (s000000.ts, s000000.m4s): given by Plan.at

    @property
    def remux(self) -> bool:
        return self.kind == REMUX

    @property
    def made(self) -> bool:
        """Whether ffmpeg makes it (into the session's directory) before it is served."""
        return self.kind == REMUX or bool(self.mp4_tag)

    @property
    def made_size(self) -> int:
        """About the bytes ffmpeg writes to make it: its part of the recording (twice for
        one made as MP4 of MPEG-TS: the MPEG-TS is written first)."""
        if self.kind == REMUX:
            return self.size * (2 if self.mp4_tag else 1)
        return 2 * ((self.stop_at or self.size) - self.cut_at) if self.mp4_tag else 0

    @property
    def is_mp4(self) -> bool:
        """Whether it is served as fragmented MP4 (an init section and media)."""
        return self.kind == FRAGMENTS or bool(self.mp4_tag)

    def counter_shifts(self) -> dict[int, int]:
        """`cc_shift` as PID -> delta."""
        found = {}
        for part in self.cc_shift.split(",") if self.cc_shift else ():
            pid, delta = part.split(":")
            found[int(pid)] = int(delta)
        return found


@dataclass(frozen=True)
class Plan:
    """A session's media items, in order. Their timestamps are on their chain's timeline;
    `offset` (90 kHz ticks) moves them onto the session's, which starts at OUT_START."""

    items: tuple[MediaItem, ...]
    start_offset: float  # where in the playlist the requested `from` is, in seconds
    offset: int = 0

    @property
    def target_duration(self) -> int:
        return max(1, *(_round(item.duration) for item in self.items))

    def at(self, n: int) -> MediaItem:
        """Item `n` as its session serves it: named, on the session's timeline."""
        item = self.items[n]
        changes: dict[str, Any] = {"name": media_name(n, item.is_mp4)}
        if item.kind == REMUX and item.offset is not None:
            changes["offset"] = item.offset + self.offset / CLOCK
        elif item.kind == FRAGMENTS:
            changes["shift"] = item.shift + (self.offset * item.timescale + CLOCK // 2) // CLOCK
        else:
            changes["shift"] = (item.shift + self.offset) % PTS_WRAP
        return replace(item, **changes)


def _round(seconds: float) -> int:
    """RFC 8216 rounds EXTINF to the nearest integer (half up) against the target."""
    return math.floor(seconds + 0.5)


def continues(prev: Segment, seg: Segment) -> bool:
    """Whether `seg`'s own timestamps carry straight on from `prev`'s (one muxer's TS)."""
    if (
        prev.container != "mpegts"
        or seg.container != "mpegts"
        or not same_streams(prev.streams, seg.streams)
    ):
        return False
    gap = pts_delta(seg.first_pts, prev.first_pts + prev.duration)
    return abs(gap) * 2 <= max(prev.frame_ticks, 1)


def _changes(prev: Segment, seg: Segment) -> bool:
    """Whether a player needs new decoders between the two (a DISCONTINUITY): another
    codec, container, PIDs or stream types, or decoder configuration (a camera whose
    resolution changed has new parameter sets in the same streams)."""
    return (
        prev.video_codec != seg.video_codec
        or (prev.container == "mpegts") != (seg.container == "mpegts")
        or not same_streams(prev.streams, seg.streams)
        or prev.has_audio != seg.has_audio
    )


def _to_clock(ticks: int, scale: int) -> int:
    return ticks * CLOCK // scale


def plan(
    segments: Sequence[Segment],
    from_us: int,
    name_resolution_us: int,
    first_cut: Cut | None,
    splits: Mapping[str, Sequence[Cut]] | None = None,
    last_cut: Cut | None = None,
) -> Plan:
    """The media segments for `segments` (one camera's, by start) played from `from_us`.

    `first_cut` is the keyframe of segments[0] at or before `from_us`, if any. Where a
    recording does not carry on its predecessor's timestamps, its timeline starts where
    the predecessor's video ends or, if later, where its audio ends (by at most
    MAX_HOLD), so that no stream overlaps itself.

    A long MPEG-TS or fragmented MP4 recording is served as several media segments, cut
    at the keyframes `splits` gives for its path (by offset, and for fragmented MP4 the
    keyframe's index within its fragment). `last_cut`, a keyframe of the last
    recording, is where the session stops (the keyframe after `to`), so that a session
    over part of an hour-long file lists just that part.
    """
    splits = splits or {}
    chosen: list[Segment] = []
    for segment in segments:
        if chosen and segment.end_us <= chosen[-1].end_us:
            continue  # wholly inside the previous one: a duplicate recording
        chosen.append(segment)
    pending: list[dict[str, Any]] = []  # each item's fields but its duration
    item_starts: list[int] = []  # each item's start on the timeline (90 kHz, unwrapped)
    item_stops: list[int | None] = []  # where an item that is part of a recording ends
    seg_pdts: list[int] = []  # each recording's first frame's wall-clock time
    starts: list[int] = []  # each recording's start on the timeline (90 kHz, unwrapped)
    ends: list[int] = []  # where each item's video ends on the timeline
    audio_ends: list[int | None] = []
    begins: list[int] = []  # each item's first presented tick, in its recording's ticks
    recorded_us: list[int] = []  # how long each item's video runs, by the recording
    counters: dict[int, int] = {}  # PID -> the counter its next packet must carry
    start_offset = 0.0
    # Fragmented MP4 is served as it is when the whole session is: its init sections
    # (EXT-X-MAP) would apply to any MPEG-TS segment after them.
    fragmented = all(seg.container == "fmp4" and seg.media_end for seg in chosen)
    # Safari plays HEVC only as fragmented MP4: such a session's every segment is made so.
    hevc = not fragmented and any(seg.video_codec == "hevc" for seg in chosen)
    for n, seg in enumerate(chosen):
        scale = seg.timescale
        kind = RECORDED if seg.container == "mpegts" else FRAGMENTS if fragmented else REMUX
        lead = 0  # ticks from the recording's earliest frame to where this item begins
        cut = first_cut if n == 0 else None
        if cut is not None and cut.offset != 0:
            lead = max(
                0,
                pts_delta(cut.pts, seg.first_pts) if kind == RECORDED else cut.pts - seg.first_pts,
            )
            if lead and kind == RECORDED:
                kind = CUT
        begin = seg.first_pts + lead
        prev = chosen[n - 1] if n else None
        if prev is None:
            start = OUT_START
        elif continues(prev, seg) and pending[-1]["kind"] != REMUX:
            start = starts[-1] + pts_delta(seg.first_pts, begins[-1])  # as its muxer had it
        else:
            start = ends[-1]
            audio_end = audio_ends[-1]
            if audio_end is not None and seg.audio_start is not None:
                wanted = audio_end - _to_clock(seg.audio_start - lead, scale)
                start = max(start, min(wanted, start + MAX_HOLD))
        starts.append(start)
        begins.append(begin)
        recorded_us.append((seg.duration - lead) * 1_000_000 // scale)
        ends.append(start + _to_clock(seg.duration - lead, scale))
        audio_ends.append(
            None if seg.audio_end is None else start + _to_clock(seg.audio_end - lead, scale)
        )
        if prev is None or is_gap(prev, seg, name_resolution_us):
            pdt_us = seg.start_us + lead * 1_000_000 // scale
        else:  # chained, so that names rounded to the second add no jitter
            pdt_us = seg_pdts[-1] + recorded_us[-2]
        seg_pdts.append(pdt_us)
        if n == 0:
            start_offset = max(0.0, (from_us - pdt_us) / 1e6)
        fields: dict[str, Any] = {}
        if kind == REMUX:
            fields.update(
                seek=begin / scale if lead else None, offset=start / CLOCK - begin / scale
            )
            counters = {pid: 0 for pid in counters}  # remuxed files are renumbered 0..15
        elif kind == FRAGMENTS:
            fields.update(
                shift=(start * scale + CLOCK // 2) // CLOCK - begin,  # nearest tick
                seek=begin / scale if lead else None,  # for the export
                cut_at=cut.offset if cut is not None and lead else seg.media_start,
                cut_sample=cut.sample if cut is not None and lead else 0,
                stop_at=seg.media_end,
                init_size=seg.media_start,
                timescale=scale,
            )
        else:
            recorded = decode_counters(seg.counters)
            pairs = []
            for pid, first, last in recorded:
                delta = 0 if kind == CUT else (counters.get(pid, first) - first) & 0x0F
                if delta:
                    pairs.append((pid, delta))
                counters[pid] = (last + delta + 1) & 0x0F
            cc_shift = ",".join(f"{pid}:{delta}" for pid, delta in pairs)
            fields.update(shift=(start - begin) % PTS_WRAP, cc_shift=cc_shift)
            if kind == CUT:
                assert cut is not None
                fields.update(cut_at=cut.offset, prefix=cut.prefix, nulls=cut.early)
        if hevc:
            fields.update(mp4_tag="hvc1" if seg.video_codec == "hevc" else "avc1")
        fields.update(
            source=seg.path,
            kind=kind,
            pdt_us=pdt_us,
            discontinuity=prev is not None and _changes(prev, seg),
            size=seg.size,
        )
        parts = [
            part
            for part in splits.get(seg.path, ())
            if kind != REMUX
            and (part.offset, part.sample) > (fields.get("cut_at", 0), fields.get("cut_sample", 0))
            and 0 < pts_delta(part.pts, begin) < seg.duration - lead
        ]
        stop_cut = last_cut if n == len(chosen) - 1 and last_cut in parts else None
        pending.append(fields)
        item_starts.append(start)
        item_stops.append(None)
        for part in parts:
            at = _to_clock(pts_delta(part.pts, begin), scale)
            pending[-1].update(stop_at=part.offset, stop_sample=part.sample, suffix=part.early)
            if part is stop_cut:
                item_stops[-1] = start + at  # the session ends with the part before
                break
            part_pdt = pdt_us + at * 1_000_000 // CLOCK
            part_fields: dict[str, Any] = {
                "cut_at": part.offset,
                "cut_sample": part.sample,
                "stop_at": seg.media_end if kind == FRAGMENTS else 0,  # till the next part
                "stop_sample": 0,
                "pdt_us": part_pdt,
                "discontinuity": False,
            }
            if kind != FRAGMENTS:  # the part's own PAT and PMT, and its audio, as cut
                part_fields.update(kind=CUT, prefix=part.prefix, suffix=(), nulls=part.early)
            pending.append({**fields, **part_fields})
            item_starts.append(start + at)
            item_stops.append(None)
    # Each item's duration runs to where the next one starts on the timeline.
    stops = [
        stop if stop is not None else following
        for stop, following in zip(item_stops, [*item_starts[1:], ends[-1]], strict=True)
    ]
    items = tuple(
        MediaItem(duration=(stop - start) / CLOCK, **fields)
        for fields, start, stop in zip(pending, item_starts, stops, strict=True)
    )
    return Plan(items, round(start_offset, 6))


def media_name(n: int, mp4: bool) -> str:
    """Item `n`'s URI: an MPEG-TS segment, or a fragmented MP4 media segment."""
    return f"s{n:06d}.m4s" if mp4 else f"s{n:06d}.ts"


def init_name(n: int) -> str:
    """The URI of the init section of item `n` (made as MP4) or of its recording
    (FRAGMENTS)."""
    return f"i{n:06d}.mp4"


def render(found: Plan) -> str:
    """The complete VOD playlist (RFC 8216) for a plan."""
    mp4 = found.items[0].is_mp4  # then all are
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{7 if mp4 else 3}",
        f"#EXT-X-TARGETDURATION:{found.target_duration}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if found.start_offset > 0:
        lines.append(f"#EXT-X-START:TIME-OFFSET={found.start_offset:.3f},PRECISE=YES")
    source = ""  # the recording whose init section applies
    for n, item in enumerate(found.items):
        if item.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if item.mp4_tag or (item.kind == FRAGMENTS and item.source != source):
            source = item.source  # each made item has an init section of its own
            lines.append(f'#EXT-X-MAP:URI="{init_name(n)}"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(item.pdt_us)}")
        lines.append(f"#EXTINF:{item.duration:.6f},")
        lines.append(media_name(n, mp4))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _pdt(us: int) -> str:
    """RFC 3339 with milliseconds, the form every player parses."""
    hour, within = divmod(us, _HOUR_US)
    minute, within = divmod(within, 60_000_000)
    second, within = divmod(within, 1_000_000)
    return f"{_hour(hour)}:{minute:02d}:{second:02d}.{within // 1000:03d}Z"


_HOUR_US = 3_600_000_000


@functools.lru_cache(maxsize=64)
def _hour(hour: int) -> str:
    """ "YYYY-MM-DDTHH" of an hour since the epoch: a day's playlist formats 25 of them."""
    return format_us(hour * _HOUR_US)[:13]
