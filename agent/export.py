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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .containers import progressive
from .containers.errors import CORRUPT
from .containers.files import open_regular
from .containers.mpegts import CLOCK, PTS_WRAP, pts_delta
from .containers.progressive import TrackOut
from .containers.samples import (
    TABLES_VERSION,
    Recording,
    Table,
    read_recording,
    sample_bytes,
    ts_ranges,
)
from .errors import AgentError, ProbeError
from .index import Change, Index
from .playlists import FRAGMENTS, OUT_START, REMUX, MediaItem, Plan, item_starts
from .samplestore import SampleStore
from .stored import MEDIA_ROW, Session
from .times import format_us

log = logging.getLogger(__name__)

# The clip's own version, in its ETag: a change to the bytes made of the same session and
# recordings (an upgrade) must change the ETag, or a resume would splice two versions.
CLIP_FORMAT = 1
CHUNK_TICKS = CLOCK  # a chunk holds about a second of one track
TABLE_CACHE_BYTES = 24 << 20
CLIPS_KEPT = 4  # clips laid out lately, kept for the range requests that follow
# Recordings whose footage ends this close to now are taken as arriving: their tables are
# read and kept at once. Older ones (an archive found at start) are read on first use.
ARRIVED_WITHIN_US = 600 * 1_000_000
ARRIVALS_QUEUED = 1024
_AAC_FRAME = 1024  # samples an AAC frame holds (ISO/IEC 14496-3 4.5.1.1)
READ_BYTES = 1 << 20  # what one read of a clip gathers, in whole chunks, before it is sent


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
    """A clip laid out: its header (ftyp, moov, mdat's header) and its chunks."""

    header: bytes
    chunks: list[Chunk]
    total: int
    etag: str
    stamps: dict[str, tuple[int, int, int]]  # source -> (size, mtime_ns, inode) laid out from
    starts: list[int] = field(default_factory=list)  # each chunk's offset

    def __post_init__(self) -> None:
        self.starts = [chunk.offset for chunk in self.chunks]


@dataclass(slots=True)
class _Track:
    """A track of the clip while it is laid out: session times (90 kHz) of its samples."""

    dts: array[int] = field(default_factory=lambda: array("q"))
    pts: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("I"))
    sync: bytearray = field(default_factory=bytearray)
    entries: list[bytes] = field(default_factory=list)
    # (first clip sample, stop, entry index, source, recording, first table sample)
    runs: list[tuple[int, int, int, str, Recording, int]] = field(default_factory=list)
    width: int = 0
    height: int = 0
    timescale: int = 0
    base: int = 0  # audio: the session time of its tick 0 (90 kHz)

    def entry_index(self, entry: bytes) -> int:
        if entry not in self.entries:
            self.entries.append(entry)
        return self.entries.index(entry) + 1


# --- where each sample lies on the session's timeline -----------------------------------


def session_times(item: MediaItem, start: int, table: Table, values: array[int]) -> array[int]:
    """`values`, times of `table`'s samples in the recording's own clock (decode or
    presentation, without the table's shift), on the session's timeline (pure).

    MPEG-TS: the plan's shift is added modulo 2^33 and the result unwrapped near the
    item's start; fragmented MP4: the shift is in the video's timescale; plain MP4
    (remuxed for HLS): the plan gives an offset in seconds from the file's presentation
    times."""
    scale = table.timescale
    out = array("q", bytes(8 * len(values)))
    if not values:
        return out
    if item.kind == FRAGMENTS:
        shift = (item.shift * scale + item.timescale // 2) // max(item.timescale, 1)
        for n, value in enumerate(values):
            out[n] = ((value + table.shift + shift) * CLOCK + scale // 2) // scale
    elif item.kind == REMUX:
        offset = round((item.offset or 0.0) * CLOCK)
        for n, value in enumerate(values):
            out[n] = ((value + table.shift) * CLOCK + scale // 2) // scale + offset
    else:
        if scale == CLOCK:
            raw = values
            base = values[0]
        else:  # audio in its sample rate: back to 90 kHz
            raw = array("q", (((v * CLOCK) + scale // 2) // scale for v in values))
            base = raw[0]
        first = start + pts_delta((base + item.shift) % PTS_WRAP, start % PTS_WRAP)
        for n, value in enumerate(raw):
            out[n] = first + value - base
    return out


def video_times(item: MediaItem, start: int, table: Table) -> tuple[array[int], array[int]]:
    """The decode and presentation times of a video table's samples on the session's
    timeline (pure; `session_times`)."""
    shown = array("q", (d + c for d, c in zip(table.dts, table.cto, strict=True)))
    return session_times(item, start, table, table.dts), session_times(item, start, table, shown)


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
    stamps: dict[str, tuple[int, int, int]],
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
    begin = max((t for t in video.pts if t <= begin), default=min(video.pts))
    return _assemble(session, plan, items, starts, begin, end, video, audio, stamps)


def _video_samples(
    track: _Track, piece: _Piece, recording: Recording, first: bool, last: bool, end: int
) -> None:
    """Add `piece`'s video samples: the first piece's from its keyframe at the session's
    start (leading pictures before it left out: nothing shows them), the last piece's up
    to the last sample the frames before `end` need, in decode order."""
    table = recording.video
    item = piece.item
    dts, pts = video_times(item, piece.start, table)
    n0 = 0
    if first:
        tolerance = table.last_duration * CLOCK // max(table.timescale, 1) // 2
        n0 = next(
            (n for n in range(len(table)) if table.sync[n] and pts[n] >= piece.start - tolerance),
            len(table),
        )
    stop = len(table)
    if last:
        shown = [n for n in range(n0, len(table)) if pts[n] < end]
        stop = shown[-1] + 1 if shown else n0
    keyframe_pts = pts[n0] if n0 < len(table) else 0
    chosen = [n for n in range(n0, stop) if not first or pts[n] >= keyframe_pts]
    if not chosen:
        return
    entry = track.entry_index(table.entry)
    track.width, track.height = track.width or table.width, track.height or table.height
    run_first = len(track.dts)
    kept = []
    for n in chosen:
        d = dts[n]
        if track.dts and d <= track.dts[-1]:
            d = track.dts[-1] + 1  # never two samples at one decode time
        if not -(1 << 31) <= pts[n] - d < 1 << 31:
            continue  # a time far out of its place (garbage): left out
        kept.append(n)
        track.dts.append(d)
        track.pts.append(pts[n])
        track.sizes.append(table.sizes[n])
        track.sync.append(table.sync[n])
    # Runs of consecutive table samples (leading pictures left out split them).
    _runs_of(track, kept, run_first, entry, item.source, recording)


def _runs_of(
    track: _Track, chosen: list[int], run_first: int, entry: int, source: str, recording: Recording
) -> None:
    start = 0
    for k in range(1, len(chosen) + 1):
        if k == len(chosen) or chosen[k] != chosen[k - 1] + 1:
            track.runs.append(
                (run_first + start, run_first + k, entry, source, recording, chosen[start])
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
    it and is left out; after a gap, it starts where it is."""
    item = piece.item
    times = session_times(item, piece.start, table, table.dts)
    clock = CLOCK
    frame = _AAC_FRAME * track.timescale // table.timescale if track.timescale else _AAC_FRAME
    chosen = []
    for n in range(len(table)):
        t = times[n]
        if begin is not None and t + _AAC_FRAME * clock // table.timescale <= begin:
            continue
        if end is not None and t >= end:
            break
        if not track.timescale:
            track.timescale, track.base = table.timescale, t
            frame = _AAC_FRAME
        here = (t - track.base) * track.timescale // clock
        if track.dts:
            expected = track.dts[-1] + frame
            if here < expected - frame // 2:
                continue  # overlaps the audio before it
            if here < expected + frame // 2:
                here = expected
        track.dts.append(here)  # shown as decoded, each a sync sample: no more said
        track.sizes.append(table.sizes[n])
        chosen.append(n)
    if chosen:
        entry = track.entry_index(table.entry)
        _runs_of(track, chosen, len(track.dts) - len(chosen), entry, item.source, recording)


def _assemble(
    session: Session,
    plan: Plan,
    items: Sequence[MediaItem],
    starts: Sequence[int],
    begin: int,
    end: int,
    video: _Track,
    audio: _Track,
    stamps: dict[str, tuple[int, int, int]],
) -> Clip:
    tracks: list[TrackOut] = []
    chunks: list[tuple[int, int, Chunk]] = []  # (time, track, chunk) before offsets
    # Video: 90 kHz; durations from one decode time to the next.
    out = TrackOut(1, b"vide", CLOCK, video.entries, width=video.width, height=video.height)
    out.durations = _durations(video.dts)
    out.offsets = array("i", (p - d for p, d in zip(video.pts, video.dts, strict=False)))
    out.sizes, out.sync = video.sizes, video.sync
    out.edits = [(end - begin, begin - video.dts[0])]
    tracks.append(out)
    _chunks(chunks, 0, video, out)
    if len(audio.dts):
        scale = audio.timescale
        sound = TrackOut(2, b"soun", scale, audio.entries, sizes=audio.sizes)
        sound.durations = _durations(audio.dts)
        sound.durations[-1] = _AAC_FRAME
        first = audio.base
        if first <= begin:
            sound.edits = [(end - begin, (begin - first) * scale // CLOCK)]
        else:
            sound.edits = [(first - begin, -1), (max(1, end - first), 0)]
        tracks.append(sound)
        _chunks(chunks, 1, audio, sound)
    text = _text_track(items, starts, begin, end, len(tracks) + 1)
    tracks.append(text[0])
    chunks.extend(text[1])
    chunks.sort(key=lambda c: (c[0], c[1]))
    hevc = any(b"hvc1" in entry[4:8] for entry in video.entries)
    creation = session.from_us // 1_000_000
    # The header's length does not depend on where the chunks go (co64 is 8 bytes each).
    header_size = len(progressive.ftyp(hevc)) + len(progressive.moov(tracks, creation)) + 16
    offset = header_size
    laid: list[Chunk] = []
    per_track: list[list[int]] = [[] for _ in tracks]
    for _, index, chunk in chunks:
        chunk.offset = offset
        laid.append(chunk)
        per_track[index].append(offset)
        offset += chunk.size
    for index, track in enumerate(tracks):
        track.chunks = [
            (count, entry, at)
            for (count, entry, _), at in zip(track.chunks, per_track[index], strict=True)
        ]
    payload = offset - header_size
    header = progressive.ftyp(hevc) + progressive.moov(tracks, creation)
    header += progressive.mdat_header(payload)
    if len(header) != header_size:
        raise ProbeError("the clip's header changed length as it was laid out")
    etag = _etag(session, plan, items, stamps)
    return Clip(header, laid, offset, etag, stamps)


def _durations(dts: array[int]) -> array[int]:
    """Each sample's duration to the next one's decode time; the last, the step before."""
    out = array("q", (dts[n + 1] - dts[n] for n in range(len(dts) - 1)))
    out.append(out[-1] if out else CLOCK // 25)
    return out


def _chunks(chunks: list[tuple[int, int, Chunk]], index: int, track: _Track, out: TrackOut) -> None:
    """Cut `track`'s runs into chunks of about CHUNK_TICKS each, each with its first
    sample's session time (90 kHz) to order the chunks of all tracks by."""
    scale = track.timescale or CLOCK
    span = CHUNK_TICKS * scale // CLOCK
    for first, stop, entry, source, recording, table_first in track.runs:
        n = first
        while n < stop:
            m = n + 1
            while m < stop and track.dts[m] - track.dts[n] < span:
                m += 1
            size = sum(track.sizes[n:m])
            chunk = Chunk(0, size, index, source, recording.container, table_first + n - first,
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
        texts.append(format_us(wall - wall % 1_000_000).replace("T", " ").replace("Z", " UTC"))
        following = t + -(-(1_000_000 - wall % 1_000_000) * CLOCK // 1_000_000)
        t = min(max(following, t + 1), starts[n + 1])
    out = TrackOut(track_id, b"sbtl", CLOCK, [progressive.text_entry()])
    out.durations = array("q", (b - a for a, b in zip(times, times[1:] + [end], strict=False)))
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
    stamps: dict[str, tuple[int, int, int]],
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
) -> bytes:
    """The clip's bytes from `position`: whole chunks up to about READ_BYTES, at most to
    `stop` (blocking: reads the recordings). ClipBroken if a recording changed."""
    if position < len(clip.header):  # the header alone: it is sent at once
        return clip.header[position:stop]
    parts = []
    held = 0
    while position < stop and held < READ_BYTES:
        k = bisect.bisect_right(clip.starts, position) - 1
        chunk = clip.chunks[k] if k >= 0 and position >= len(clip.header) else None
        if chunk is not None and chunk.container == "mpegts":
            data = _read_ts_chunks(clip, k, position, stop, path_of, tables)
        else:
            data = _read_chunk(clip, position, stop, path_of, tables)
        if not data:  # never: a layout's every byte is some chunk's
            raise ClipBroken(f"nothing to read at byte {position} of the clip")
        parts.append(data)
        held += len(data)
        position += len(data)
    return b"".join(parts)


def _read_ts_chunks(
    clip: Clip, k: int, position: int, stop: int, path_of: Callable[[str], Path], tables: Tables
) -> bytes:
    """From chunk `k` (an MPEG-TS recording's) on, its neighbours of the same recording up
    to about READ_BYTES, read in one pass (samples.ts_ranges); from `position` to at most
    `stop`."""
    first = clip.chunks[k]
    recording = tables(first.source)
    group = [first]
    size = first.size
    while (
        k + len(group) < len(clip.chunks)
        and size < READ_BYTES
        and clip.chunks[k + len(group)].source == first.source
        and first.offset + size < stop
    ):
        group.append(clip.chunks[k + len(group)])
        size += group[-1].size
    wanted = []
    for chunk in group:
        table = recording.video if chunk.track == 0 else recording.audio
        assert table is not None
        wanted.append((table, chunk.first, chunk.stop))
    fd = _open_checked(clip, first.source, path_of)
    try:
        datas = ts_ranges(fd, recording, wanted)
    except (ProbeError, OSError) as error:
        raise ClipBroken(f"{first.source}: {error}") from None
    finally:
        os.close(fd)
    data = b"".join(datas)
    if len(data) != size:
        raise ClipBroken(f"{first.source} holds less than the clip was laid out from")
    return data[position - first.offset : stop - first.offset]


def _open_checked(clip: Clip, source: str, path_of: Callable[[str], Path]) -> int:
    """The recording open, as it was when the clip was laid out; ClipBroken if not."""
    try:
        fd, info = open_regular(path_of(source), follow=False)
    except (OSError, ProbeError, AgentError) as error:
        raise ClipBroken(f"{source} is gone: {error}") from None
    if (info.st_size, info.st_mtime_ns, info.st_ino) != clip.stamps[source]:
        os.close(fd)
        raise ClipBroken(f"{source} changed since the clip was laid out")
    return fd


def _read_chunk(
    clip: Clip, position: int, stop: int, path_of: Callable[[str], Path], tables: Tables
) -> bytes:
    """The clip's bytes from `position`, up to the end of the chunk it falls in and at
    most to `stop`."""
    if position < len(clip.header):
        return clip.header[position:stop]
    k = bisect.bisect_right(clip.starts, position) - 1
    chunk = clip.chunks[k]
    into = position - chunk.offset
    if not chunk.source:
        return chunk.data[into : into + stop - position]
    recording = tables(chunk.source)
    table = recording.video if chunk.track == 0 else recording.audio
    assert table is not None
    # The sample the position falls in, and how far into it.
    n, skip = chunk.first, into
    while n < chunk.stop and skip >= table.sizes[n]:
        skip -= table.sizes[n]
        n += 1
    try:
        fd, info = open_regular(path_of(chunk.source), follow=False)
    except (OSError, ProbeError, AgentError) as error:
        raise ClipBroken(f"{chunk.source} is gone: {error}") from None
    try:
        if (info.st_size, info.st_mtime_ns, info.st_ino) != clip.stamps[chunk.source]:
            raise ClipBroken(f"{chunk.source} changed since the clip was laid out")
        wanted = min(stop, chunk.offset + chunk.size) - position
        parts, held = [], -skip
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
    data = b"".join(parts)[skip : skip + wanted]
    if len(data) != wanted:
        raise ClipBroken(f"{chunk.source} holds less than the clip was laid out from")
    return data


# --- the service -------------------------------------------------------------------------


class Exporter:
    """Lays clips out and keeps what that costs to read: recordings' sample tables (in
    memory, LRU within TABLE_CACHE_BYTES; on disk in a SampleStore) and the last few
    clips. Recordings that arrive while the agent runs have their tables read and kept
    as they arrive (`prepare_forever`), so that an export of recent footage never waits
    for its recordings to be read whole."""

    def __init__(
        self,
        path_of: Callable[[str], Path],
        store: SampleStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path_of = path_of  # a recording's path, refused if not plainly under the root
        self.store = store
        self.clock = clock
        self._tables: OrderedDict[tuple[str, int, int, int], Recording] = OrderedDict()
        self._table_bytes = 0
        self._clips: OrderedDict[str, Clip] = OrderedDict()
        self._lock = threading.Lock()
        self._arrived: asyncio.Queue[Change] = asyncio.Queue(ARRIVALS_QUEUED)
        self.read_whole = 0  # recordings read whole for their tables, since start

    def told(self, change: Change) -> None:
        """An index change (Index.watch): recordings written lately are prepared."""
        if change.removed or change.end_us < self.clock() * 1e6 - ARRIVED_WITHIN_US:
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

    def stamps(self, sources: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """Each recording's (size, mtime_ns, inode) now (blocking)."""
        found = {}
        for source in dict.fromkeys(sources):
            try:
                info = os.stat(self.path_of(source), follow_symlinks=False)
            except (OSError, AgentError) as error:
                raise ClipBroken(f"{source} is gone: {error}") from None
            found[source] = (info.st_size, info.st_mtime_ns, info.st_ino)
        return found

    def clip(self, session: Session, plan: Plan) -> Clip:
        """`session`'s clip, laid out anew unless a recording changed since (blocking)."""
        sources = [item.source for item in plan.items]
        stamps = self.stamps(sources)
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

    def recording(self, source: str, stamp: tuple[int, int, int]) -> Recording:
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
            while self._table_bytes > TABLE_CACHE_BYTES and len(self._tables) > 1:
                _, dropped = self._tables.popitem(last=False)
                self._table_bytes -= dropped.nbytes
        return recording

    def _read(self, source: str, stamp: tuple[int, int, int]) -> Recording:
        try:
            fd, info = open_regular(self.path_of(source), follow=False)
        except (OSError, ProbeError, AgentError) as error:
            raise ClipBroken(f"{source} is gone: {error}") from None
        try:
            if (info.st_size, info.st_mtime_ns, info.st_ino) != stamp:
                raise ClipBroken(f"{source} changed while the clip was laid out")
            try:
                recording = read_recording(fd, info.st_size)
            except (ProbeError, OSError) as error:
                raise ClipBroken(f"{source} cannot be read: {error}") from None
        finally:
            os.close(fd)
        self.read_whole += 1
        return recording

    def read(self, clip: Clip, position: int, stop: int) -> bytes:
        """`read` with this exporter's recordings and tables (blocking)."""
        return read(clip, position, stop, self.path_of,
                    lambda source: self.recording(source, clip.stamps[source]))  # fmt: skip

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._clips.pop(session_id, None)
