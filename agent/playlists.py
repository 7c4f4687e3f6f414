"""HLS playlists (pure functions): which media segment comes from which recording, with
what duration, wall-clock time and timestamps, and the VOD playlist text.

One HLS segment per recorded segment, all on one timeline per session: every served
segment's timestamps continue exactly where the previous one's ended, across recorder
timestamp resets and gaps alike, as from one muxer (the wall clock after a gap is in
EXT-X-PROGRAM-DATE-TIME). An MPEG-TS recording is served from its own bytes, its
PTS/DTS/PCR and continuity counters rewritten in flight; the first one is cut at the
keyframe before `from` the same way. When every recording is fragmented MP4, the session
is fragmented MP4, served from the recordings' bytes, each fragment's decode time moved
in flight. Otherwise (a plain MP4 recording in the session, or HEVC in MPEG-TS) every
segment is re-boxed as fragmented MP4 (hvc1 for HEVC, as Safari needs) from its
recording's sample tables when it is asked for (reboxed.py). The playlist is complete
from the start, so its durations come from the index, exact to the tick.

A camera's recordings are planned once, as a chain (Chain), that sessions slice
(Chain.slice): a session's items are the chain's, on the chain's timeline, and its plan
moves them onto its own by one offset (Plan.at).
"""

from __future__ import annotations

import enum
import functools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .containers.mpegts import CLOCK, PTS_WRAP, decode_counters, pts_delta
from .containers.probe import Cut, same_streams
from .index import Segment
from .timeline import drifted, is_gap
from .times import format_us

OUT_START = 10 * CLOCK  # where a session's timeline starts (90 kHz ticks)
# The most a segment's video waits after the one before so that its audio, which a
# recorder may start ahead of the video, does not overlap the audio before it. Beyond
# this the audio overlaps instead: a longer pause in the picture would be seen.
MAX_HOLD = CLOCK // 2


class MediaKind(enum.StrEnum):
    """How a media item is served (its value is what plan.json says)."""

    RECORDED = "recorded"  # a recording's own MPEG-TS bytes, rewritten in flight
    CUT = "cut"  # the same from a keyframe's packet, PAT and PMT in front
    REMUX = "remux"  # a plain MP4 recording's, re-boxed (its times: `seek`, `offset`)
    FRAGMENTS = "fragments"  # a fragmented MP4 recording's own fragments


RECORDED, CUT, REMUX, FRAGMENTS = MediaKind


@dataclass(kw_only=True, slots=True)
class MediaItem:
    """One media segment of a playlist (slots: a session keeps thousands). Not changed
    once planned, and shared by the sessions planned from one camera's chain: its name
    and its place on a session's timeline come from the session's plan (`Plan.at`). Not
    frozen, because a frozen dataclass's __init__ sets each field through
    object.__setattr__: 69 ms of a day's 200 ms plan (8,640 items)."""

    source: str  # the recording's path relative to the recordings root
    # FRAGMENTS: bytes cut_at to stop_at, init section 0 to init_size, their decode
    # times moved by `shift` ticks of the video's timescale
    kind: MediaKind
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
    # REMUX: seconds added to the recording's presentation times, before the plan's offset
    offset: float | None = None
    init_size: int = 0  # FRAGMENTS: the bytes of the init section, from the file's start
    # Re-boxed as fragmented MP4 from the sample tables, its video sample entry tagged so
    # (hvc1, avc1): a re-boxed session's. "": served as MPEG-TS (or FRAGMENTS).
    mp4_tag: str = ""
    timescale: int = 0  # FRAGMENTS: the video's timescale (ticks a second)
    # The recording's inode, mtime and ctime when planned (0: a plan from before they were
    # kept): one replaced, rewritten or cut short since is refused, not served as garbage.
    inode: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    name: str = ""  # its URI in its session (s000000.ts, s000000.m4s): given by Plan.at
    # Its playlist lines and its plan.json row, made once (`lines_of`, stored.row_of): every
    # session that shares an item writes them. Not part of the plan.
    text: str = field(default="", init=False, repr=False, compare=False)
    row: bytes = field(default=b"", init=False, repr=False, compare=False)

    @property
    def is_mp4(self) -> bool:
        """Whether it is served as fragmented MP4 (an init section and media)."""
        return self.kind == FRAGMENTS or bool(self.mp4_tag)

    def changed(self, size: int, mtime_ns: int, inode: int, ctime_ns: int) -> str:
        """How the recording, now of this stamp (samplestore.stamp_of), is not the file
        this item was planned from, in words ("" if it is): cut short; another file (its
        inode, and its size, mtime or ctime: FAT file systems give a file another inode
        number when it is read again, nothing else); or rewritten at its size. A file grown
        since (a recorder still writing it when it was indexed) is the same: what was
        planned of it is still there. Items planned before the stamp was kept are not
        checked."""
        if not self.inode:
            return ""
        if size < self.size:
            return f"cut short ({size} of {self.size} bytes)"
        times = (mtime_ns, ctime_ns) if self.ctime_ns else (mtime_ns, self.ctime_ns)
        if inode != self.inode and (size, *times) != (self.size, self.mtime_ns, self.ctime_ns):
            return "replaced by another file"
        if size == self.size and mtime_ns != self.mtime_ns:
            return "rewritten"
        return ""

    def counter_shifts(self) -> dict[int, int]:
        """`cc_shift` as PID -> delta."""
        shifts = {}
        for part in self.cc_shift.split(",") if self.cc_shift else ():
            pid, delta = part.split(":")
            shifts[int(pid)] = int(delta)
        return shifts


@dataclass(frozen=True)
class Plan:
    """A session's media items, in order. Their timestamps are on their chain's timeline;
    `offset` (90 kHz ticks) moves them onto the session's, which starts at OUT_START."""

    items: tuple[MediaItem, ...]
    start_offset: float  # where in the playlist the requested `from` is, in seconds
    offset: int = 0

    @functools.cached_property
    def starts(self) -> list[int]:
        """Each item's start on the session's timeline, and the end of the last."""
        return item_starts(self.items)

    @property
    def target_duration(self) -> int:
        return max(1, _round(max(map(_DURATION, self.items))))

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


_DURATION = operator.attrgetter("duration")


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


def _reboxed(segment: Segment) -> bool:
    """Whether a recording is served re-boxed as fragmented MP4 (in any session)."""
    return segment.video_codec == "hevc" or segment.container != "mpegts"


def item_starts(items: Sequence[MediaItem]) -> list[int]:
    """Each item's start on the session's timeline (90 kHz ticks), and the end of the
    last (pure): items follow one another, each as long as its duration."""
    starts = [OUT_START]
    for item in items:
        starts.append(starts[-1] + round(item.duration * CLOCK))
    return starts


def _to_clock(ticks: int, scale: int) -> int:
    return ticks * CLOCK // scale


@dataclass(slots=True)
class Link:
    """One recording of a chain: where it lies on the chain's timeline, and what a
    session that plays all of it serves."""

    segment: Segment
    chosen: bool  # False: wholly inside the recording before (a duplicate); no items
    first: int  # the index of its first item in the chain's items
    kind: MediaKind = RECORDED
    start: int = 0  # its first frame on the chain's timeline (90 kHz, unwrapped)
    end: int = 0  # where its video ends
    audio_end: int | None = None  # where its audio ends
    pdt_us: int = 0  # its first frame's wall-clock time
    cc_shift: str = ""  # its items' continuity counter shifts
    discontinuity: bool = False  # the streams change before it
    counters: dict[int, int] | None = None  # PID -> the counter of the next packet after it
    parts: Sequence[Cut] = ()  # where a long recording is split, as the index has it


class Chain:
    """A camera's recordings planned one after another on one timeline (pure).

    Every recording's start follows from the one before it alone: where its muxer's
    timestamps carry on, as they run; otherwise where the video before it ends or, if
    later, where its audio ends (by at most MAX_HOLD), so that no stream overlaps itself.
    Its wall-clock time is chained from the one before unless there is a gap between
    them. A session is a slice of the chain, so the chain is planned once and grows as
    recordings arrive; each session plans only its first and last recordings anew (cut
    at `from` and `to`) and moves the slice onto its own timeline by one offset.

    `fragmented` (every recording fragmented MP4) and `reboxed` (a plain MP4 or an HEVC
    recording, not all fragmented MP4) say how the items are served; a chain holds only
    recordings its way fits (`fits`).
    """

    def __init__(self, name_resolution_us: int, fragmented: bool, reboxed: bool) -> None:
        self.name_resolution_us = name_resolution_us
        self.fragmented = fragmented
        self.reboxed = reboxed
        self.links: list[Link] = []
        self.items: list[MediaItem] = []  # the items of every chosen link but the last
        self._last: Link | None = None  # the last chosen link
        # The last chosen link's items (fields but duration, start): their durations wait
        # for where the next recording starts.
        self._open: list[tuple[dict[str, Any], int]] = []

    @staticmethod
    def way(segments: Sequence[Segment]) -> tuple[bool, bool]:
        """(fragmented, reboxed) for a session of these recordings: fragmented MP4 served
        as it is when every recording is (its init sections, EXT-X-MAP, would apply to
        any MPEG-TS segment after them); MPEG-TS served as it is when every recording is
        H.264 MPEG-TS; otherwise every segment re-boxed as fragmented MP4 from its
        recording's samples (reboxed.py; HEVC as hvc1, which Safari plays only so)."""
        fragmented = all(seg.container == "fmp4" and seg.media_end for seg in segments)
        return fragmented, not fragmented and any(_reboxed(s) for s in segments)

    @property
    def last_segment(self) -> Segment | None:
        """The last recording chosen for the chain."""
        return self._last.segment if self._last is not None else None

    def fits(self, segment: Segment) -> bool:
        """Whether `segment` can join the chain as the chain is served."""
        if self.fragmented:
            return segment.container == "fmp4" and bool(segment.media_end)
        return self.reboxed or not _reboxed(segment)

    def append(self, seg: Segment, parts: Sequence[Cut] = ()) -> None:
        """Add the recording that follows (by start), split at `parts` if long."""
        prev = self._last
        if prev is not None and seg.end_us <= prev.segment.end_us:
            self.links.append(Link(seg, chosen=False, first=len(self.items)))
            return
        scale = seg.timescale
        kind = RECORDED if seg.container == "mpegts" else FRAGMENTS if self.fragmented else REMUX
        if prev is None:
            start = 0
        elif continues(prev.segment, seg) and prev.kind != REMUX:
            start = prev.start + pts_delta(seg.first_pts, prev.segment.first_pts)  # as muxed
        else:
            start = prev.end
            if prev.audio_end is not None and seg.audio_start is not None:
                wanted = prev.audio_end - _to_clock(seg.audio_start, scale)
                start = max(start, min(wanted, start + MAX_HOLD))
        # Chained through a continuous run, so that names rounded to the second add no
        # jitter; from the name after a gap, or where the chain has drifted from it.
        pdt_us = seg.start_us
        if prev is not None and not is_gap(prev.segment, seg, self.name_resolution_us):
            chained = prev.pdt_us + prev.segment.duration * 1_000_000 // prev.segment.timescale
            if not drifted(chained, seg, self.name_resolution_us):
                pdt_us = chained
        counters = dict(prev.counters or {}) if prev is not None else {}
        pairs = []
        if kind == REMUX:
            counters = {pid: 0 for pid in counters}  # remuxed files are renumbered 0..15
        elif kind == RECORDED:
            for pid, first, last in decode_counters(seg.counters):
                delta = (counters.get(pid, first) - first) & 0x0F
                if delta:
                    pairs.append((pid, delta))
                counters[pid] = (last + delta + 1) & 0x0F
        link = Link(
            seg,
            chosen=True,
            first=0,
            kind=kind,
            start=start,
            end=start + _to_clock(seg.duration, scale),
            audio_end=None if seg.audio_end is None else start + _to_clock(seg.audio_end, scale),
            pdt_us=pdt_us,
            cc_shift=",".join(f"{pid}:{delta}" for pid, delta in pairs),
            discontinuity=prev is not None and _changes(prev.segment, seg),
            counters=counters,
            parts=parts,
        )
        self.items.extend(_finish(self._open, start))
        link.first = len(self.items)
        self.links.append(link)
        self._last = link
        self._open, _ = self._items(link, 0, None, parts, None)

    def truncate(self, n: int) -> None:
        """Forget links n on: the chain ends with the one before, as when it was added."""
        del self.links[n:]
        self._last = next((link for link in reversed(self.links) if link.chosen), None)
        del self.items[self._last.first if self._last is not None else 0 :]
        self._open = []
        if self._last is not None:
            self._open, _ = self._items(self._last, 0, None, self._last.parts, None)

    def drop(self, n: int) -> None:
        """Forget the first n links (their recordings are gone); the rest stand as they
        were planned, after them."""
        if n >= len(self.links):
            self.truncate(0)
            return
        first = self.links[n].first
        del self.links[:n]
        del self.items[:first]
        for link in self.links:
            link.first -= first

    def _items(
        self,
        link: Link,
        lead: int,
        cut: Cut | None,
        parts: Sequence[Cut],
        stop_cut: Cut | None,
    ) -> tuple[list[tuple[dict[str, Any], int]], int | None]:
        """A recording's items (fields but duration, and start on the chain's timeline),
        from `lead` ticks after its first frame (`cut`, its keyframe there) and split at
        `parts`; and where they stop if `stop_cut`, one of `parts`, ends them."""
        seg = link.segment
        scale = seg.timescale
        kind = CUT if lead and link.kind == RECORDED else link.kind
        begin = seg.first_pts + lead  # its first presented tick, in its own ticks
        start = link.start + _to_clock(lead, scale)
        fields: dict[str, Any] = {
            "source": seg.path,
            "kind": kind,
            "pdt_us": link.pdt_us + lead * 1_000_000 // scale,
            "discontinuity": link.discontinuity,
            "size": seg.size,
            "inode": seg.inode,
            "mtime_ns": seg.mtime_ns,
            "ctime_ns": seg.ctime_ns,
        }
        if kind == REMUX:
            fields.update(
                seek=begin / scale if lead else None, offset=start / CLOCK - begin / scale
            )
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
            fields.update(shift=(start - begin) % PTS_WRAP, cc_shift=link.cc_shift)
            if kind == CUT:
                if cut is None:
                    raise ValueError("an item cut at a keyframe without the keyframe")
                fields.update(cut_at=cut.offset, prefix=cut.prefix, nulls=cut.early)
        if self.reboxed:
            fields.update(mp4_tag="hvc1" if seg.video_codec == "hevc" else "avc1")
        items = [(fields, start)]
        low = (fields.get("cut_at", 0), fields.get("cut_sample", 0))
        for part in parts:
            at = pts_delta(part.pts, begin)
            if kind == REMUX or (part.offset, part.sample) <= low:
                continue
            if not 0 < at < seg.duration - lead:
                continue
            at = _to_clock(at, scale)
            items[-1][0].update(stop_at=part.offset, stop_sample=part.sample, suffix=part.early)
            if part is stop_cut:
                return items, start + at  # the session ends with the part before
            part_fields: dict[str, Any] = {
                "cut_at": part.offset,
                "cut_sample": part.sample,
                "stop_at": seg.media_end if kind == FRAGMENTS else 0,  # till the next part
                "stop_sample": 0,
                "pdt_us": fields["pdt_us"] + at * 1_000_000 // CLOCK,
                "discontinuity": False,
            }
            if kind != FRAGMENTS:  # the part's own PAT and PMT, and its audio, as cut
                part_fields.update(kind=CUT, prefix=part.prefix, suffix=(), nulls=part.early)
            items.append(({**fields, **part_fields}, start + at))
        return items, None

    def slice(
        self,
        k: int,
        m: int,
        from_us: int,
        first_cut: Cut | None = None,
        head_parts: Sequence[Cut] = (),
        tail_parts: Sequence[Cut] = (),
        last_cut: Cut | None = None,
    ) -> Plan:
        """The plan of a session of links k to m (both chosen) played from `from_us`.

        `first_cut` is the keyframe of link k at or before `from_us`, if any; `last_cut`,
        one of link m's parts, is where the session stops (the keyframe after `to`). The
        first and last recordings are split at `head_parts` and `tail_parts`; those
        between, at the parts they joined the chain with.
        """
        head, tail = self.links[k], self.links[m]
        seg = head.segment
        lead = 0  # ticks from the recording's earliest frame to where the session begins
        if first_cut is not None and first_cut.offset != 0:
            wrapped = seg.container == "mpegts"
            into = (
                pts_delta(first_cut.pts, seg.first_pts)
                if wrapped
                else first_cut.pts - seg.first_pts
            )
            lead = max(0, into)
        opened, stop = self._items(head, lead, first_cut, head_parts, last_cut if k == m else None)
        opened[0][0]["discontinuity"] = False  # the session's first
        start = opened[0][1]
        items = []
        if k != m:
            after = self.links[next(n for n in range(k + 1, m + 1) if self.links[n].chosen)]
            items += _finish(opened, after.start)
            items += self.items[after.first : tail.first]
            opened, stop = self._items(tail, 0, None, tail_parts, last_cut)
        items += _finish(opened, tail.end if stop is None else stop)
        return Plan(
            tuple(items), round(max(0.0, (from_us - items[0].pdt_us) / 1e6), 6), OUT_START - start
        )


def _finish(opened: list[tuple[dict[str, Any], int]], end: int) -> list[MediaItem]:
    """Items whose durations run to where the next one starts (the last, to `end`)."""
    ends = [start for _, start in opened[1:]] + [end] if opened else []
    return [
        MediaItem(duration=(stop - start) / CLOCK, **fields)
        for (fields, start), stop in zip(opened, ends, strict=True)
    ]


def plan_alone(
    segments: Sequence[Segment],
    from_us: int,
    name_resolution_us: int,
    first_cut: Cut | None,
    splits: Mapping[str, Sequence[Cut]] | None = None,
    last_cut: Cut | None = None,
) -> Plan:
    """The plan of a session of `segments` (one camera's, by start) played from `from_us`,
    on a chain of its own (Chain.slice says what the arguments mean).

    A long MPEG-TS or fragmented MP4 recording is served as several media segments, cut
    at the keyframes `splits` gives for its path (by offset, and for fragmented MP4 the
    keyframe's index within its fragment), so that a session over part of an hour-long
    file lists just that part.
    """
    splits = splits or {}
    chain = Chain(name_resolution_us, *Chain.way(segments))
    for segment in segments:
        chain.append(segment, splits.get(segment.path, ()))
    last = max(n for n, link in enumerate(chain.links) if link.chosen)
    head, tail = segments[0].path, segments[last].path
    return chain.slice(
        0, last, from_us, first_cut, splits.get(head, ()), splits.get(tail, ()), last_cut
    )


def media_name(n: int, mp4: bool) -> str:
    """Item `n`'s URI: an MPEG-TS segment, or a fragmented MP4 media segment."""
    return f"s{n:06d}.m4s" if mp4 else f"s{n:06d}.ts"


def init_name(n: int) -> str:
    """The URI of the init section of item `n` (made as MP4) or of its recording
    (FRAGMENTS)."""
    return f"i{n:06d}.mp4"


def init_uris(items: Sequence[MediaItem]) -> list[str]:
    """The URI of the init section that applies to each item of a session served as
    fragmented MP4 (pure): each re-boxed item's own, else its recording's first item's."""
    uris, source, uri = [], "", ""
    for n, item in enumerate(items):
        if item.mp4_tag or item.source != source:
            source, uri = item.source, init_name(n)
        uris.append(uri)
    return uris


def keyframe_name(n: int, moof_at: int, sample: int) -> str:
    """The URI of a keyframe of item `n` (fragmented MP4) that lies inside its fragment,
    after other pictures: video sample `sample` of the fragment whose moof is at byte
    `moof_at` of the recording, made a fragment of its own (for the I-frame playlist)."""
    return f"k{n:06d}-{moof_at}-{sample}.m4s"


def render(plan: Plan) -> str:
    """The complete VOD playlist (RFC 8216) for a plan."""
    mp4 = plan.items[0].is_mp4  # then all are
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{7 if mp4 else 3}",
        f"#EXT-X-TARGETDURATION:{plan.target_duration}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if plan.start_offset > 0:
        lines.append(f"#EXT-X-START:TIME-OFFSET={plan.start_offset:.3f},PRECISE=YES")
    texts = [item.text or lines_of(item) for item in plan.items]
    names = _names(len(texts), mp4)
    if mp4:  # an EXT-X-MAP where the init section changes
        for n, uri in enumerate(init_uris(plan.items)):
            if uri == init_name(n):
                texts[n] = _with_map(texts[n], uri)
    body: list[str] = [""] * (2 * len(texts))
    body[0::2] = texts
    body[1::2] = names
    lines += body
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def lines_of(item: MediaItem) -> str:
    """An item's lines before its URI (kept on the item): its EXT-X-DISCONTINUITY, if
    any, EXT-X-PROGRAM-DATE-TIME and EXTINF."""
    text = f"#EXT-X-PROGRAM-DATE-TIME:{pdt_text(item.pdt_us)}\n#EXTINF:{item.duration:.6f},"
    item.text = f"#EXT-X-DISCONTINUITY\n{text}" if item.discontinuity else text
    return item.text


def _with_map(text: str, uri: str) -> str:
    """An item's lines with an EXT-X-MAP before its wall-clock time (after any
    EXT-X-DISCONTINUITY)."""
    at = text.index("#EXT-X-PROGRAM-DATE-TIME")
    return f'{text[:at]}#EXT-X-MAP:URI="{uri}"\n{text[at:]}'


_NAMES: dict[bool, list[str]] = {False: [], True: []}


def _names(count: int, mp4: bool) -> list[str]:
    """The URIs of a plan's first `count` items (every session's are the same). The
    list kept is replaced, never changed: sessions are written on several threads."""
    names = _NAMES[mp4]
    if len(names) < count:
        names = [*names, *(media_name(n, mp4) for n in range(len(names), count))]
        _NAMES[mp4] = names
    return names[:count]


def pdt_text(us: int) -> str:
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
