"""Exports: a session's range as one progressive MP4 (`clip.mp4`), assembled from the
recordings' own sample data, with no ffmpeg and no copy on disk.

The clip is laid out before a byte is sent: `ftyp`, a `moov` whose sample tables list
every sample from the keyframe before `from` to the last one `to` needs, then one
`mdat` holding those samples' bytes chunk by chunk (about a second of one track each,
the tracks interleaved). Its length is known, so it has a Content-Length, byte ranges
and a strong ETag; any byte of it is computed from the layout alone, so a range is the
same bytes as the whole file's.

Time: every sample is placed where the session's HLS places it (the plan's items say how
each recording's timestamps map onto the session's one timeline), so the clip shows the
very frames the session plays. An edit list starts the picture at `from`, to the frame,
and ends it at `to`. A gap in the footage is closed up as in the session; the wall-clock
time of each frame is in a text track (tx3g), one sample a second, and the movie's
creation time is `from`.

Sample tables (containers.samples) are read from each recording on first use and kept in
memory, least recently used dropped first, within TABLE_CACHE_BYTES.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import os
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import compress, islice, repeat
from operator import add, ge, le, lt, sub
from pathlib import Path
from typing import Protocol

from . import iframes, keyframes
from .containers import mp4, progressive
from .containers.errors import CORRUPT
from .containers.files import open_regular
from .containers.mpegts import CLOCK
from .containers.nal import audio_name, codec_name, decoder_config, served_tag
from .containers.progressive import Runs, TrackOut, runs
from .containers.samples import (
    TABLES_VERSION,
    Piece,
    Recording,
    Table,
    read_recording,
    sample_bytes,
    ts_pieces,
)
from .errors import AgentError, NotFound, ProbeError
from .index import Change, Index, Segment
from .playlists import FRAGMENTS, OUT_START, MediaItem, Plan, item_starts
from .samplestore import SampleStore, Stamp, stamp_of
from .sessiontime import scaled, timeline_of
from .stored import MEDIA_ROW, Session

log = logging.getLogger(__name__)

# The clip's own version, in its ETag: a change to the bytes made of the same session and
# recordings (an upgrade) must change the ETag, or a resume would splice two versions.
CLIP_FORMAT = 1
CHUNK_TICKS = CLOCK  # a chunk holds about a second of one track
TABLE_CACHE_BYTES = 4 << 20  # about 50 minutes of 25 fps video with AAC
# Without a working sample store, tables dropped from memory are read from the footage
# whole again: then more are kept.
TABLE_CACHE_NO_STORE = 24 << 20
CLIPS_KEPT = 4  # clips laid out lately, kept for the range requests that follow
# Recordings whose footage ends this close to now are taken as arriving: their tables are
# read and kept at once. Older ones (an archive found at start) are read on first use.
ARRIVED_WITHIN_US = 600 * 1_000_000
ARRIVALS_QUEUED = 1024
_AAC_FRAME = 1024  # samples an AAC frame holds (ISO/IEC 14496-3 4.5.1.1)
READ_BYTES = 1 << 20  # what one read of a clip gathers, in whole chunks, before it is sent
# The size of each bytes object a read gives: under glibc's mmap threshold (128 KiB, kept
# fixed by __main__), so that their memory comes from the read thread's arena, freed and
# reused, not mapped and faulted in afresh (a quarter of a TS clip's CPU when it was).
SEND_BYTES = 96 << 10
WORKERS = 2  # threads that read clips
# A recording read whole for a scrub preview, when its tables are not kept: at most this
# (a minute of 2 Mbit/s footage); a longer one previews once an export or session read it.
PREVIEW_READ_BYTES = 16 << 20


class PathOf(Protocol):
    """A recording's path, refused if not plainly under the root (media.recording_path)."""

    def __call__(self, source: str, resolved: dict[str, str] | None = None, /) -> Path: ...


class ClipBroken(AgentError):
    """A recording no longer holds what the clip was laid out from."""

    status = 404


@dataclass(slots=True, eq=False)
class Chunk:
    """A run of one track's samples, contiguous in the clip."""

    offset: int  # where it starts in the clip
    size: int
    track: int  # 0 video, 1 audio, 2 text
    source: str = ""  # the recording it is read from ("": text made here)
    container: str = ""  # the recording's (its tables are fetched when it is read)
    first: int = 0  # its samples in the recording's table: first to stop (exclusive)
    stop: int = 0
    data: bytes = b""  # text


@dataclass(eq=False)
class Clip:
    """A clip laid out: its header (ftyp, moov, mdat's header) and its chunks, kept
    packed (a 4-hour clip has about 30,000: 0.7 MB as arrays, 5 MB as objects)."""

    header: bytes
    total: int
    etag: str
    stamps: dict[str, Stamp]  # source -> its stamp (samplestore.stamp_of) laid out from
    starts: array[int] = field(default_factory=lambda: array("Q"))  # each chunk's offset
    sizes: array[int] = field(default_factory=lambda: array("I"))
    tracks: bytearray = field(default_factory=bytearray)
    sources: array[int] = field(default_factory=lambda: array("I"))  # into `names`
    firsts: array[int] = field(default_factory=lambda: array("I"))
    stops: array[int] = field(default_factory=lambda: array("I"))
    names: list[str] = field(default_factory=lambda: [""])  # "": made here (text)
    containers: list[str] = field(default_factory=lambda: [""])
    texts: dict[int, bytes] = field(default_factory=dict)  # chunk -> its bytes
    # Recordings' paths once checked, and the device each was found on.
    paths: dict[str, tuple[Path, int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """How many chunks the clip has."""
        return len(self.starts)

    def add(self, chunk: Chunk) -> None:
        """Pack `chunk` after the others (while the clip is laid out)."""
        if chunk.source and chunk.source != self.names[-1]:
            self.names.append(chunk.source)
            self.containers.append(chunk.container)
        if chunk.data:
            self.texts[len(self.starts)] = chunk.data
        self.starts.append(chunk.offset)
        self.sizes.append(chunk.size)
        self.tracks.append(chunk.track)
        self.sources.append(len(self.names) - 1 if chunk.source else 0)
        self.firsts.append(chunk.first)
        self.stops.append(chunk.stop)

    def chunk(self, k: int) -> Chunk:
        """Chunk `k`, unpacked."""
        source = self.sources[k]
        return Chunk(self.starts[k], self.sizes[k], self.tracks[k], self.names[source],
                     self.containers[source], self.firsts[k], self.stops[k],
                     self.texts.get(k, b""))  # fmt: skip


@dataclass(slots=True)
class _Track:
    """A track of the clip while it is laid out: session times (90 kHz) of its samples."""

    dts: array[int] = field(default_factory=lambda: array("q"))
    offsets: array[int] = field(default_factory=lambda: array("i"))  # video: pts - dts
    first_shown: array[int] = field(default_factory=lambda: array("q"))  # video: the first
    # piece's presentation times
    sizes: array[int] = field(default_factory=lambda: array("I"))
    sync: bytearray = field(default_factory=bytearray)
    entries: list[bytes] = field(default_factory=list)
    # (first clip sample, stop, entry index, source, container, first table sample)
    runs: list[tuple[int, int, int, str, str, int]] = field(default_factory=list)
    width: int = 0
    height: int = 0
    timescale: int = 0
    base: int = 0  # audio: the session time of its tick 0 (90 kHz)
    # Audio: its decode times as runs a frame apart, (first, how many, step) each.
    segments: list[tuple[int, int, int]] = field(default_factory=list)

    def entry_index(self, entry: bytes) -> int:
        if entry not in self.entries:
            self.entries.append(entry)
        return self.entries.index(entry) + 1


# --- laying the clip out -----------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """Consecutive items of one recording: its visit in the session."""

    item: MediaItem  # its first item
    start: int  # where it begins on the session's timeline
    end: int  # where it ends


def _pieces(items: Sequence[MediaItem], starts: Sequence[int]) -> list[_Piece]:
    pieces: list[_Piece] = []
    for n, item in enumerate(items):
        if pieces and pieces[-1].item.source == item.source:
            pieces[-1] = _Piece(pieces[-1].item, pieces[-1].start, starts[n + 1])
        else:
            pieces.append(_Piece(item, starts[n], starts[n + 1]))
    return pieces


def _window(
    plan: Plan, items: Sequence[MediaItem], starts: Sequence[int], to_us: int
) -> tuple[int, int]:
    """Where `from` and `to` are on the session's timeline (pure): `from` where the plan
    says; `to` by the wall clock of the item it falls in (at the end of the item before
    it if it falls in a gap)."""
    begin = OUT_START + round(plan.start_offset * CLOCK)
    end = starts[-1]
    for n, item in enumerate(items):
        if item.pdt_us > to_us:
            break
        end = min(starts[n + 1], starts[n] + (to_us - item.pdt_us) * CLOCK // 1_000_000)
    return begin, max(end, begin + 1)


def lay_out(
    session: Session,
    plan: Plan,
    recordings: Callable[[str], Recording],
    stamps: dict[str, Stamp],
) -> Clip:
    """The clip of `session` (blocking only through `recordings`, which gives each
    recording's sample tables)."""
    items = [plan.at(n) for n in range(len(plan.items))]
    starts = item_starts(items)
    begin, end = _window(plan, items, starts, session.to_us)
    video, audio = _Track(timescale=CLOCK), _Track()
    pieces = _pieces(items, starts)
    for number, piece in enumerate(pieces):
        recording = recordings(piece.item.source)
        first_piece, last_piece = number == 0, number == len(pieces) - 1
        _video_samples(video, piece, recording, first_piece, last_piece, end)
        if recording.audio is not None:
            _audio_samples(audio, piece, recording, recording.audio,
                           begin if first_piece else None, end if last_piece else None)  # fmt: skip
    if not len(video.dts):
        raise ClipBroken("no video of this session's range is on disk")
    # The picture starts with the frame on screen at `from`, from its start: players
    # differ on a frame the edit list cuts into (ffmpeg leaves it out).
    shown = video.first_shown
    if not shown or max(shown) <= begin:  # the first piece ends before `from`: all of them
        shown = array("q", map(add, video.dts, video.offsets))
    begin = max(compress(shown, map(le, shown, repeat(begin))), default=min(shown))
    return _assemble(session, plan, items, starts, begin, end, video, audio, stamps)


def _video_samples(
    track: _Track, piece: _Piece, recording: Recording, first: bool, last: bool, end: int
) -> None:
    """Add `piece`'s video samples: the first piece's from its keyframe at the session's
    start (leading pictures before it left out: nothing shows them), the last piece's up
    to the last sample the frames before `end` need, in decode order.

    Presentation times are worked out only where they decide something (the first and
    last pieces, or a clock of another rate than the session's); elsewhere each sample's
    composition offset is the recording's own."""
    table = recording.video
    item = piece.item
    timeline = timeline_of(item, piece.start, table)
    dts = scaled(table.dts, *timeline)
    count = len(table)
    if timeline[0] == timeline[2] and not first and not last:
        pts: array[int] | None = None  # the offsets as in the recording: moved as one
    else:
        pts = scaled(array("q", map(add, table.dts, table.cto)), *timeline)
    n0, stop = 0, count
    if first and pts is not None:
        tolerance = table.last_duration * CLOCK // max(table.timescale, 1) // 2
        least = piece.start - tolerance
        n0 = next((n for n in compress(range(count), table.sync) if pts[n] >= least), count)
    if last and pts is not None:
        shown = compress(range(n0, count), map(lt, pts[n0:], repeat(end)))
        stop = max(shown, default=n0 - 1) + 1
    chosen: Sequence[int] = range(n0, stop)
    if first and pts is not None and n0 < stop:
        chosen = list(compress(chosen, map(ge, pts[n0:stop], repeat(pts[n0]))))
    if not chosen:
        return
    entry = track.entry_index(table.entry)
    track.width, track.height = track.width or table.width, track.height or table.height
    run_first = len(track.dts)
    if isinstance(chosen, range):
        decoded = dts[n0:stop]
        # Moved as one, the recording's own offsets (32-bit as they are).
        offsets = table.cto[n0:stop] if pts is None else array("q", map(sub, pts[n0:stop], decoded))
    else:
        decoded = array("q", map(dts.__getitem__, chosen))
        assert pts is not None
        offsets = array("q", map(sub, map(pts.__getitem__, chosen), decoded))
    if (
        (not track.dts or decoded[0] > track.dts[-1])
        and all(map(lt, decoded, islice(decoded, 1, None)))
        and min(offsets) >= -(1 << 31)
        and max(offsets) < 1 << 31
    ):  # as almost always: decode times in order, each sample's offset in 32 bits
        kept: Sequence[int] = chosen
        track.dts.extend(decoded)
        track.offsets.extend(offsets if offsets.typecode == "i" else array("i", offsets))
        if isinstance(chosen, range):
            track.sizes.extend(table.sizes[n0:stop])
            track.sync.extend(table.sync[n0:stop])
        else:
            track.sizes.extend(map(table.sizes.__getitem__, chosen))
            track.sync.extend(map(table.sync.__getitem__, chosen))
    else:
        kept = []
        for n in chosen:
            d = dts[n]
            if track.dts and d <= track.dts[-1]:
                d = track.dts[-1] + 1  # never two samples at one decode time
            shown_at = pts[n] if pts is not None else dts[n] + table.cto[n]
            if not -(1 << 31) <= shown_at - d < 1 << 31:
                continue  # a time far out of its place (garbage): left out
            kept.append(n)
            track.dts.append(d)
            track.offsets.append(shown_at - d)
            track.sizes.append(table.sizes[n])
            track.sync.append(table.sync[n])
    if first:
        added = islice(track.dts, run_first, None), islice(track.offsets, run_first, None)
        track.first_shown = array("q", map(add, *added))
    # Runs of consecutive table samples (leading pictures left out split them).
    _runs_of(track, kept, run_first, entry, item.source, recording.container)


def _runs_of(
    track: _Track, chosen: Sequence[int], run_first: int, entry: int, source: str, container: str
) -> None:
    if isinstance(chosen, range):
        if chosen:
            track.runs.append(
                (run_first, run_first + len(chosen), entry, source, container, chosen[0])
            )
        return
    start = 0
    for k in range(1, len(chosen) + 1):
        if k == len(chosen) or chosen[k] != chosen[k - 1] + 1:
            track.runs.append(
                (run_first + start, run_first + k, entry, source, container, chosen[start])
            )
            start = k


def _audio_samples(
    track: _Track,
    piece: _Piece,
    recording: Recording,
    table: Table,
    begin: int | None,
    end: int | None,
) -> None:
    """Add `piece`'s audio samples, from the frame playing at `begin` if given, before
    `end` if given, on the clip's audio clock (the first piece's sample rate, from the
    first sample): a sample right after the one before (within half a frame) follows it
    exactly; one that starts more than half a frame before the one before ends overlaps
    it and is left out; after a gap, it starts where it is.

    Samples that all follow one another so are added at once (C-speed checks); the
    others one at a time."""
    item = piece.item
    timeline = multiply, plus, divide = timeline_of(item, piece.start, table)
    clock = CLOCK
    window = 64
    frame = _AAC_FRAME * track.timescale // table.timescale if track.timescale else _AAC_FRAME
    lead = _AAC_FRAME * clock // table.timescale
    dts = table.dts
    count = len(table)
    spans: list[list[int]] = []  # the table's samples added: [first, stop) each
    n = 0
    in_order = all(map(le, dts, islice(dts, 1, None)))
    if in_order:  # the samples before `begin` and from `end` on, found by bisection

        def time_of(value: int) -> int:
            return (value * multiply + plus) // divide

        times: Sequence[int] = dts
        if begin is not None:
            n = bisect.bisect_right(dts, begin - lead, key=time_of)
        if end is not None:
            count = bisect.bisect_left(dts, end, key=time_of)
    else:
        times = scaled(dts, multiply, plus, divide)
    while n < count:
        t = time_of(dts[n]) if in_order else times[n]
        if begin is not None and t + lead <= begin:
            n += 1
            continue
        if end is not None and t >= end:
            break
        if not track.timescale:
            track.timescale, track.base = table.timescale, t
            frame = _AAC_FRAME
        here = (t - track.base) * track.timescale // clock
        placed = here
        if track.dts:
            expected = track.dts[-1] + frame
            if here < expected - frame // 2:
                n += 1
                continue  # overlaps the audio before it
            if here < expected + frame // 2:
                placed = expected
        track.dts.append(placed)  # shown as decoded, each a sample of its own: no more said
        track.sizes.append(table.sizes[n])
        track.segments.append((placed, 1, frame))
        anchor = (n, here, placed)
        n += 1
        # Then the samples that follow, at once, in windows that grow while they all
        # follow and shrink when not (one sample placed alone between).
        while in_order and n < count:
            stop = min(count, n + window)
            if not _follow(track, table, anchor, n, stop, frame, timeline):
                window = max(1, window // 4)
                break
            n, window = stop, window * 2
        if spans and spans[-1][1] == anchor[0]:
            spans[-1][1] = n
        else:
            spans.append([anchor[0], n])
    if spans:
        entry = track.entry_index(table.entry)
        first = len(track.dts) - sum(stop - start for start, stop in spans)
        for start, stop in spans:
            _runs_of(track, range(start, stop), first, entry, item.source, recording.container)
            first += stop - start


def _follow(
    track: _Track,
    table: Table,
    anchor: tuple[int, int, int],
    n: int,
    stop: int,
    frame: int,
    timeline: tuple[int, int, int],
) -> bool:
    """Add `table`'s audio samples `n` to `stop` at once if each follows the one before
    (within half a frame of where the one before ends, as `_audio_samples` places them
    one by one); False, adding none, if not. `anchor`: the last sample placed alone (its
    index, where it was found, where it was placed), all since following it.

    In the track's own sample rate the check is one pass over the table's decode times:
    their distance from a frame a sample, within a margin for the rounding to the
    session's 90 kHz clock and back. Otherwise (or when the margin decides nothing) each
    sample's place is worked out."""
    k, here, placed = anchor
    steps = range(placed + frame * (n - k), placed + frame * (stop - k), frame)
    half = frame // 2
    scale = track.timescale
    if scale == table.timescale:
        margin = 3 + scale // CLOCK
        last = table.dts[k]
        expected = range(last + frame * (n - k), last + frame * (stop - k), frame)
        drift = array("q", map(sub, table.dts[n:stop], expected))
        skew = here - placed
        if min(drift) + skew - margin >= -half and max(drift) + skew + margin < half:
            track.dts.extend(steps)
            track.sizes.extend(table.sizes[n:stop])
            track.segments.append((steps.start, len(steps), frame))
            return True
    times = scaled(table.dts[n:stop], *timeline)
    drift = array("q", map(sub, scaled(times, scale, -track.base * scale, CLOCK), steps))
    if min(drift) >= -half and max(drift) < half:
        track.dts.extend(steps)
        track.sizes.extend(table.sizes[n:stop])
        track.segments.append((steps.start, len(steps), frame))
        return True
    return False


def _assemble(
    session: Session,
    plan: Plan,
    items: Sequence[MediaItem],
    starts: Sequence[int],
    begin: int,
    end: int,
    video: _Track,
    audio: _Track,
    stamps: dict[str, Stamp],
) -> Clip:
    tracks: list[TrackOut] = []
    chunks: list[tuple[int, int, Chunk]] = []  # (time, track, chunk) before offsets
    # Video: 90 kHz; durations from one decode time to the next.
    out = TrackOut(1, b"vide", CLOCK, video.entries, width=video.width, height=video.height)
    out.durations = runs(_durations(video.dts))
    out.offsets = video.offsets
    out.sizes, out.sync = video.sizes, video.sync
    out.edits = [(end - begin, begin - video.dts[0])]
    tracks.append(out)
    _chunks(chunks, 0, video, out)
    del video.dts[:]  # no longer needed: the header is made next, with its own copies
    if len(audio.dts):
        scale = audio.timescale
        sound = TrackOut(2, b"soun", scale, audio.entries, sizes=audio.sizes)
        sound.durations = _audio_durations(audio.segments)
        first = audio.base
        if first <= begin:
            sound.edits = [(end - begin, (begin - first) * scale // CLOCK)]
        else:
            sound.edits = [(first - begin, -1), (max(1, end - first), 0)]
        tracks.append(sound)
        _chunks(chunks, 1, audio, sound)
        del audio.dts[:]
    text = _text_track(items, starts, begin, end, len(tracks) + 1)
    tracks.append(text[0])
    chunks.extend(text[1])
    chunks.sort(key=lambda c: (c[0], c[1]))
    hevc = any(b"hvc1" in entry[4:8] for entry in video.entries)
    creation = session.from_us // 1_000_000
    # The header's length does not depend on where the chunks go (co64 is 8 bytes each).
    moov_size = sum(map(len, progressive.moov_parts(tracks, creation)))
    header_size = len(progressive.ftyp(hevc)) + moov_size + 16
    offset = header_size
    clip = Clip(b"", 0, _etag(session, plan, items, stamps), stamps)
    per_track: list[list[int]] = [[] for _ in tracks]
    for _, index, chunk in chunks:
        chunk.offset = offset
        clip.add(chunk)
        per_track[index].append(offset)
        offset += chunk.size
    del chunks
    for index, track in enumerate(tracks):
        track.chunks = [
            (count, entry, at)
            for (count, entry, _), at in zip(track.chunks, per_track[index], strict=True)
        ]
    payload = offset - header_size
    header = b"".join((progressive.ftyp(hevc), *progressive.moov_parts(tracks, creation),
                       progressive.mdat_header(payload)))  # fmt: skip
    if len(header) != header_size:
        raise ProbeError("the clip's header changed length as it was laid out")
    clip.header, clip.total = header, offset
    return clip


def _audio_durations(segments: list[tuple[int, int, int]]) -> Runs:
    """The audio track's durations, run-length, from its decode times' runs (pure): within
    a run its step; the last of a run, to the next run's first; the very last, a frame."""
    counts, values = array("q"), array("q")

    def run(count: int, duration: int) -> None:
        if values and values[-1] == duration:
            counts[-1] += count
        elif count:
            counts.append(count)
            values.append(duration)

    for k, (first, count, step) in enumerate(segments):
        run(count - 1, step)
        following = segments[k + 1][0] if k + 1 < len(segments) else None
        run(1, following - (first + step * (count - 1)) if following is not None else _AAC_FRAME)
    return counts, values


def _durations(dts: array[int]) -> array[int]:
    """Each sample's duration to the next one's decode time; the last, the step before."""
    out = array("q", map(sub, islice(dts, 1, None), dts))
    out.append(out[-1] if out else CLOCK // 25)
    return out


def _chunks(chunks: list[tuple[int, int, Chunk]], index: int, track: _Track, out: TrackOut) -> None:
    """Cut `track`'s runs into chunks of about CHUNK_TICKS each, each with its first
    sample's session time (90 kHz) to order the chunks of all tracks by."""
    scale = track.timescale or CLOCK
    span = CHUNK_TICKS * scale // CLOCK
    for first, stop, entry, source, container, table_first in track.runs:
        n = first
        while n < stop:  # decode times increase: each chunk's end found by bisection
            m = max(n + 1, bisect.bisect_left(track.dts, track.dts[n] + span, n, stop))
            size = sum(track.sizes[n:m])
            chunk = Chunk(0, size, index, source, container, table_first + n - first,
                          table_first + m - first)  # fmt: skip
            chunks.append((track.base + track.dts[n] * CLOCK // scale, index, chunk))
            out.chunks.append((m - n, entry, 0))
            n = m


def _text_track(
    items: Sequence[MediaItem], starts: Sequence[int], begin: int, end: int, track_id: int
) -> tuple[TrackOut, list[tuple[int, int, Chunk]]]:
    """The wall-clock track: a sample each time the wall clock's second changes, and at
    each gap, from `begin` to `end` (its times from `begin`)."""
    times: list[int] = []
    texts: list[str] = []
    n = 0
    t = begin
    while t < end:
        while n + 1 < len(items) and starts[n + 1] <= t:
            n += 1
        wall = items[n].pdt_us + (t - starts[n]) * 1_000_000 // CLOCK
        times.append(t)
        texts.append(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall // 1_000_000)))
        following = t + -(-(1_000_000 - wall % 1_000_000) * CLOCK // 1_000_000)
        t = min(max(following, t + 1), starts[n + 1])
    out = TrackOut(track_id, b"sbtl", CLOCK, [progressive.text_entry()])
    out.durations = runs(array("q", map(sub, [*times[1:], end], times)))
    samples = [progressive.text_sample(text) for text in texts]
    out.sizes = array("I", map(len, samples))
    out.edits = [(end - begin, 0)]
    chunks = []
    step = 10  # samples a chunk: about ten seconds
    for k in range(0, len(samples), step):
        data = b"".join(samples[k : k + step])
        index = track_id - 1  # the track's place among the clip's tracks
        chunks.append((times[k], index, Chunk(0, len(data), index, data=data)))
        out.chunks.append((len(samples[k : k + step]), 1, 0))
    return out, chunks


def _etag(
    session: Session,
    plan: Plan,
    items: Sequence[MediaItem],
    stamps: dict[str, Stamp],
) -> str:
    """A strong entity tag: the clip's format, the session's range and plan, and each
    recording as it was when laid out (pure)."""
    digest = hashlib.blake2b(digest_size=12)
    key = (CLIP_FORMAT, TABLES_VERSION, session.id, session.from_us, session.to_us)
    digest.update(repr(key).encode())
    digest.update(repr((plan.start_offset, plan.offset)).encode())
    for item in items:
        digest.update(repr(MEDIA_ROW(item)).encode())
    for source in sorted(stamps):
        digest.update(repr((source, stamps[source])).encode())
    return f'"clip-{digest.hexdigest()}"'


# --- reading the clip --------------------------------------------------------------------


Tables = Callable[[str], Recording]  # a recording's sample tables, as laid out


def read(
    clip: Clip, position: int, stop: int, path_of: Callable[[str], Path], tables: Tables
) -> list[bytes]:
    """The clip's bytes from `position`: whole chunks up to about READ_BYTES, at most to
    `stop`, in parts of at most SEND_BYTES (blocking: reads the recordings). ClipBroken if
    a recording changed."""
    if position < len(clip.header):  # the header alone: it is sent at once
        return joined([memoryview(clip.header)[position:stop]], SEND_BYTES)
    pieces: list[Piece] = []
    held = 0
    while position < stop and held < READ_BYTES:
        k = bisect.bisect_right(clip.starts, position) - 1
        chunk = clip.chunk(k) if k >= 0 else None
        if chunk is not None and chunk.container == "mpegts":
            more = _read_ts_chunks(clip, k, position, stop, path_of, tables)
        else:
            more = _read_chunk(clip, position, stop, path_of, tables)
        size = sum(map(len, more))
        if not size:  # never: a layout's every byte is some chunk's
            raise ClipBroken(f"nothing to read at byte {position} of the clip")
        pieces.extend(more)
        held += size
        position += size
    return joined(pieces, SEND_BYTES)  # the one copy of the samples' bytes


def joined(pieces: Iterable[Piece], most: int) -> list[bytes]:
    """The pieces' bytes in order, joined into parts of `most` bytes (the last maybe
    fewer): one copy (pure)."""
    parts: list[bytes] = []
    group: list[Piece] = []
    room = most
    for piece in pieces:
        at, size = 0, len(piece)
        while at < size:
            take = min(room, size - at)
            group.append(piece if take == size else memoryview(piece)[at : at + take])
            at += take
            room -= take
            if not room:
                parts.append(b"".join(group))
                group, room = [], most
    if group:
        parts.append(b"".join(group))
    return parts


def _read_ts_chunks(
    clip: Clip, k: int, position: int, stop: int, path_of: Callable[[str], Path], tables: Tables
) -> list[Piece]:
    """From chunk `k` (an MPEG-TS recording's) on, its neighbours of the same recording up
    to about READ_BYTES, read in one pass (samples.ts_pieces); from `position` to at most
    `stop`, as pieces."""
    first = clip.chunk(k)
    recording = tables(first.source)
    group = [first]
    size = first.size
    while (
        k + len(group) < clip.count
        and size < READ_BYTES
        and clip.sources[k + len(group)] == clip.sources[k]
        and first.offset + size < stop
    ):
        group.append(clip.chunk(k + len(group)))
        size += group[-1].size
    wanted = []
    for chunk in group:
        table = recording.video if chunk.track == 0 else recording.audio
        assert table is not None
        wanted.append((table, chunk.first, chunk.stop))
    fd = _open_checked(clip, first.source, path_of)
    try:
        runs = ts_pieces(fd, recording, wanted)
    except (ProbeError, OSError) as error:
        raise ClipBroken(f"{first.source}: {error}") from None
    finally:
        os.close(fd)
    pieces = [piece for run in runs for piece in run]
    if sum(map(len, pieces)) != size:
        raise ClipBroken(f"{first.source} holds less than the clip was laid out from")
    return _cut(pieces, position - first.offset, stop - first.offset)


def _cut(pieces: list[Piece], start: int, stop: int) -> list[Piece]:
    """The bytes [start, stop) of the pieces joined, as pieces (pure)."""
    out: list[Piece] = []
    at = 0
    for piece in pieces:
        following = at + len(piece)
        if following > start and at < stop:
            if at >= start and following <= stop:
                out.append(piece)
            else:
                out.append(memoryview(piece)[max(0, start - at) : min(len(piece), stop - at)])
        at = following
        if at >= stop:
            break
    return out


def _open_checked(clip: Clip, source: str, path_of: Callable[[str], Path]) -> int:
    """The recording open, as it was when the clip was laid out; ClipBroken if not.

    Its path is checked (`path_of`: no symlink on the way) once a clip; later opens of it
    are checked by what they open: the same file (device and stamp) or none."""
    try:
        path, device = clip.paths.get(source, (None, -1))
        if path is None:
            path = path_of(source)
        fd, info = open_regular(path, follow=False)
    except (OSError, ProbeError, AgentError) as error:
        raise ClipBroken(f"{source} is gone: {error}") from None
    if stamp_of(info) != clip.stamps[source] or device not in (-1, info.st_dev):
        os.close(fd)
        raise ClipBroken(f"{source} changed since the clip was laid out")
    clip.paths[source] = (path, info.st_dev)
    return fd


def _read_chunk(
    clip: Clip, position: int, stop: int, path_of: Callable[[str], Path], tables: Tables
) -> list[Piece]:
    """The clip's bytes from `position`, up to the end of the chunk it falls in and at
    most to `stop`, as pieces."""
    k = bisect.bisect_right(clip.starts, position) - 1
    chunk = clip.chunk(k)
    into = position - chunk.offset
    if not chunk.source:
        return [memoryview(chunk.data)[into : into + stop - position]]
    recording = tables(chunk.source)
    table = recording.video if chunk.track == 0 else recording.audio
    assert table is not None
    # The sample the position falls in, and how far into it.
    n, skip = chunk.first, into
    while n < chunk.stop and skip >= table.sizes[n]:
        skip -= table.sizes[n]
        n += 1
    fd = _open_checked(clip, chunk.source, path_of)
    try:
        wanted = min(stop, chunk.offset + chunk.size) - position
        parts: list[Piece] = []
        held = -skip
        try:
            for data in sample_bytes(fd, recording, table, n, chunk.stop):
                parts.append(data)
                held += len(data)
                if held >= wanted:
                    break
        except (ProbeError, OSError) as error:
            raise ClipBroken(f"{chunk.source}: {error}") from None
    finally:
        os.close(fd)
    if held < wanted:
        raise ClipBroken(f"{chunk.source} holds less than the clip was laid out from")
    return _cut(parts, skip, skip + wanted)


# --- the service -------------------------------------------------------------------------


class Exporter:
    """Lays clips out and keeps what that costs to read: recordings' sample tables (in
    memory, LRU within TABLE_CACHE_BYTES; on disk in a SampleStore) and the last few
    clips. Recordings that arrive while the agent runs have their tables read and kept
    as they arrive (`prepare_forever`), so that an export of recent footage never waits
    for its recordings to be read whole."""

    def __init__(
        self,
        path_of: PathOf,
        store: SampleStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path_of = path_of  # a recording's path, refused if not plainly under the root
        self.store = store
        self.clock = clock
        self._tables: OrderedDict[tuple[str, int, int, int, int], Recording] = OrderedDict()
        self._table_bytes = 0
        self._clips: OrderedDict[str, Clip] = OrderedDict()
        self._lock = threading.Lock()
        self._arrived: asyncio.Queue[Change] = asyncio.Queue(ARRIVALS_QUEUED)
        self.read_whole = 0  # recordings read whole for their tables, since start
        # Clips are laid out and read on threads of their own: few, so that the memory a
        # read borrows is reused by the next rather than held in one malloc arena a
        # thread; laid out on one, read on others, so that a long layout (footage read
        # whole for its tables) never holds up the downloads under way.
        self._layouts = ThreadPoolExecutor(1, thread_name_prefix="export-layout")
        self._reads = ThreadPoolExecutor(WORKERS, thread_name_prefix="export-read")
        self._previews = ThreadPoolExecutor(1, thread_name_prefix="export-preview")

    async def laid_out(self, session: Session, plan: Plan) -> Clip:
        """`clip`, on the exporter's layout thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._layouts, self.clip, session, plan)

    async def read_of(self, clip: Clip, position: int, stop: int) -> list[bytes]:
        """`read`, on one of the exporter's read threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, self.read, clip, position, stop)

    def close(self) -> None:
        """Stop the exporter's threads, once what they run has ended (blocking)."""
        for pool in (self._layouts, self._reads, self._previews):
            pool.shutdown(wait=True, cancel_futures=True)

    def told(self, change: Change) -> None:
        """An index change (Index.watch): recordings written lately are prepared (not
        those of an archive found at start, nor those a wrong clock named in the future)."""
        if change.removed or abs(change.end_us - self.clock() * 1e6) > ARRIVED_WITHIN_US:
            return
        with contextlib.suppress(asyncio.QueueFull):  # missed: read on first use instead
            self._arrived.put_nowait(change)

    async def prepare_forever(self, index: Index, stop: asyncio.Event) -> None:
        """Read and keep the sample tables of recordings as they arrive."""
        while not stop.is_set():
            waiting = asyncio.ensure_future(self._arrived.get())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not waiting.done():
                    waiting.cancel()
            if not waiting.done() or waiting.cancelled():
                return
            change = waiting.result()
            for segment in await index.segments(change.camera, change.start_us, change.end_us):
                if stop.is_set():
                    return
                await asyncio.to_thread(self.prepare, segment.path)

    def prepare(self, source: str) -> None:
        """Keep `source`'s tables on disk unless they are kept already (blocking); not in
        memory: nobody may export it."""
        if self.store is None:
            return
        try:
            stamp = self.stamps([source])[source]
            if not self.store.has(source, stamp):
                self.store.put(source, stamp, self._read(source, stamp))
        except ClipBroken as error:
            log.info("export: %s not prepared: %s", source, error)

    def stamps(self, sources: Sequence[str]) -> dict[str, Stamp]:
        """Each recording's (size, mtime_ns, inode) now (blocking)."""
        found = {}
        resolved: dict[str, str] = {}  # the directories on the way, each resolved once
        for source in dict.fromkeys(sources):
            try:
                info = os.stat(self.path_of(source, resolved), follow_symlinks=False)
            except (OSError, AgentError) as error:
                raise ClipBroken(f"{source} is gone: {error}") from None
            found[source] = stamp_of(info)
        return found

    async def keyframe_of(self, camera_id: str, segment: Segment, t_us: int) -> dict[str, object]:
        """`keyframes.answer` for the keyframe of `segment` at or before `t_us`, on the
        exporter's preview thread (one: hovers never hold up downloads). NotFound if it
        has none a browser can decode alone, or if its tables are not kept and it is too
        large to read whole for a preview; ClipBroken if the recording cannot be read."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._previews, self._keyframe, camera_id, segment, t_us)

    def _keyframe(self, camera_id: str, segment: Segment, t_us: int) -> dict[str, object]:
        source = segment.path
        try:
            fd, info = open_regular(self.path_of(source), follow=False)
        except (OSError, ProbeError, AgentError):
            raise ClipBroken("the recording at that time is gone") from None
        try:
            stamp = stamp_of(info)
            if info.st_size > PREVIEW_READ_BYTES and self.kept(source, stamp) is None:
                raise NotFound(
                    "no preview yet: the recording at that time is long and its sample"
                    " tables are not kept (an export or a session of it keeps them)"
                )
            recording = self.recording(source, stamp)
            table = recording.video
            config = decoder_config(table.entry)
            found = keyframes.keyframe_at(table, segment.start_us, t_us)
            if config is None or found is None:
                raise NotFound("the recording at that time has no keyframe a browser decodes")
            data = b"".join(sample_bytes(fd, recording, table, found.sample, found.sample + 1))
        except (ProbeError, OSError, *CORRUPT):
            raise ClipBroken("the recording at that time cannot be read") from None
        finally:
            os.close(fd)
        return keyframes.answer(camera_id, found, table, config, data)

    def planned_stamps(self, plan: Plan) -> dict[str, Stamp]:
        """`stamps` of the plan's recordings; ClipBroken if one is not the file the plan
        was made from (MediaItem.changed)."""
        stamps = self.stamps([item.source for item in plan.items])
        for item in plan.items:
            how = item.changed(*stamps[item.source])
            if how:
                raise ClipBroken(
                    f"{item.source} was {how} since the session was made; create the session again"
                )
        return stamps

    async def iframes_of(self, plan: Plan) -> str | None:
        """`iframes.build` of a plan, on the exporter's layout thread: its I-frame playlist,
        or None if it has none. ClipBroken if a recording cannot be read as planned."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._layouts, self._iframes, plan)

    def _iframes(self, plan: Plan) -> str | None:
        stamps = self.planned_stamps(plan)

        def opened(source: str) -> int:
            fd, _ = open_regular(self.path_of(source), follow=False)
            return fd

        try:
            return iframes.build(plan, lambda s: self.recording(s, stamps[s]), opened)
        except (ProbeError, OSError, AgentError, *CORRUPT):
            raise ClipBroken("this session's keyframes cannot be listed") from None

    async def picture(self, plan: Plan) -> tuple[int, int, str]:
        """The width, height and codecs (RFC 6381 names, comma-separated) of a plan's first
        recording, from its init section (fragmented MP4) or from its sample tables if they
        are kept (in memory or on disk): (0, 0, "") when unknown (never read for this)."""
        item = plan.items[0]
        if any(later.discontinuity for later in plan.items[1:]):
            return 0, 0, ""  # the streams change within the session: none named for all

        def known() -> tuple[int, int, str]:
            try:
                if item.kind == FRAGMENTS:
                    fd, _ = open_regular(self.path_of(item.source), follow=False)
                    try:
                        body, tracks, video = mp4.init_tracks(fd, item.init_size)
                        heard = [t for t in tracks if t.handler == b"soun"]
                        tag = os.pread(fd, 4, body + video.entry_at).decode("latin-1")
                        name = codec_name(served_tag(tag), video.entry[4:])
                        return _picture(
                            video.entry[:4],
                            name,
                            {t.codec for t in heard},
                            heard[0].entry if heard else b"",
                        )
                    finally:
                        os.close(fd)
                info = os.stat(self.path_of(item.source), follow_symlinks=False)
            except (OSError, AgentError, *CORRUPT):
                return 0, 0, ""
            recording = self.kept(item.source, stamp_of(info))
            if recording is None:
                return 0, 0, ""
            table, audio = recording.video, recording.audio
            config = decoder_config(table.entry)
            name = config[0] if config else ""  # the tables keep the entry as served
            size = table.width.to_bytes(2, "big") + table.height.to_bytes(2, "big")
            sound = {audio.codec} if audio is not None else set()
            return _picture(size, name, sound, audio.entry if audio else b"")

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, known)

    def kept(self, source: str, stamp: Stamp) -> Recording | None:
        """A recording's sample tables if they are kept (memory, then disk), else None:
        nothing is read from the recording (blocking)."""
        with self._lock:
            found = self._tables.get((source, *stamp))
        if found is None and self.store is not None:
            found = self.store.get(source, stamp)
        return found

    def clip(self, session: Session, plan: Plan) -> Clip:
        """`session`'s clip, laid out anew unless a recording changed since (blocking)."""
        stamps = self.planned_stamps(plan)
        with self._lock:
            kept = self._clips.get(session.id)
            if kept is not None and kept.stamps == stamps:
                self._clips.move_to_end(session.id)
                return kept

        def recordings(source: str) -> Recording:
            return self.recording(source, stamps[source])

        try:
            clip = lay_out(session, plan, recordings, stamps)
        except CORRUPT as error:  # times in a recording that no MP4 can say
            raise ClipBroken(f"this session's recordings cannot be laid out: {error}") from None
        with self._lock:
            self._clips[session.id] = clip
            while len(self._clips) > CLIPS_KEPT:
                self._clips.popitem(last=False)
        return clip

    def recording(self, source: str, stamp: Stamp) -> Recording:
        """A recording's sample tables: from memory, from the store, or read now and kept
        in both (blocking)."""
        key = (source, *stamp)
        with self._lock:
            kept = self._tables.get(key)
            if kept is not None:
                self._tables.move_to_end(key)
                return kept
        recording = self.store.get(source, stamp) if self.store is not None else None
        if recording is None:
            recording = self._read(source, stamp)
            if self.store is not None:
                self.store.put(source, stamp, recording)
        with self._lock:
            if key in self._tables:  # read meanwhile by another thread: that one is kept
                return self._tables[key]
            self._tables[key] = recording
            self._table_bytes += recording.nbytes
            stored = self.store is not None and self.store.working
            budget = TABLE_CACHE_BYTES if stored else TABLE_CACHE_NO_STORE
            while self._table_bytes > budget and len(self._tables) > 1:
                _, dropped = self._tables.popitem(last=False)
                self._table_bytes -= dropped.nbytes
        return recording

    def _read(self, source: str, stamp: Stamp) -> Recording:
        try:
            fd, info = open_regular(self.path_of(source), follow=False)
        except (OSError, ProbeError, AgentError) as error:
            raise ClipBroken(f"{source} is gone: {error}") from None
        try:
            if stamp_of(info) != stamp:
                raise ClipBroken(f"{source} changed while the clip was laid out")
            try:
                recording = read_recording(fd, info.st_size)
            except (ProbeError, OSError) as error:
                raise ClipBroken(f"{source} cannot be read: {error}") from None
        finally:
            os.close(fd)
        self.read_whole += 1
        return recording

    def read(self, clip: Clip, position: int, stop: int) -> list[bytes]:
        """`read` with this exporter's recordings and tables (blocking)."""
        return read(clip, position, stop, self.path_of,
                    lambda source: self.recording(source, clip.stamps[source]))  # fmt: skip

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._clips.pop(session_id, None)


def _picture(size: bytes, video: str, sound: set[str], audio_entry: bytes) -> tuple[int, int, str]:
    """(width, height, codecs) of a video stream (`size`: its width and height, 16 bits
    each; `video`: its codec name) and its audio (pure): codecs "" unless every stream's
    name is known."""
    width, height = int.from_bytes(size[:2], "big"), int.from_bytes(size[2:4], "big")
    names = [video]
    if sound:
        names.append(audio_name(audio_entry) if sound <= {"aac", "mp4a"} else "")
    return width, height, ",".join(names) if all(names) else ""
