"""MP4 boxes, read in pure Python: the box tree, a track's samples from its sample tables
or from each fragment's `moof`, and where a fragment's decode times lie, for the media
service to move them onto a session's timeline in flight."""

from __future__ import annotations

import bisect
import os
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .errors import ProbeError

_MAX_BOX = 64 << 20  # a moov or moof larger than this is not a camera segment
# The most samples one track of a recording may have: over four hours at 60 fps, and about
# 100 MB of Python objects at the most, whatever a file claims.
MAX_TRACK_SAMPLES = 1 << 20
_CODECS = {b"avc1": "h264", b"avc3": "h264", b"hvc1": "hevc", b"hev1": "hevc"}


def u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def u64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 8], "big")


def s32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big", signed=True)


def tfdt_value(moof: bytes, tfdt: tuple[int, int]) -> tuple[int, int, int]:
    """A Track Fragment Decode Time box (ISO/IEC 14496-12 8.8.12) whose body is
    moof[body:end]: (offset of baseMediaDecodeTime in the moof, its width in bytes, its
    value), 64 bits in version 1 and 32 in version 0; ProbeError if the box is too short."""
    body, end = tfdt
    width = 8 if end > body and moof[body] == 1 else 4
    if end - body < 4 + width:
        raise ProbeError("corrupt MP4 tfdt: shorter than its version says")
    return body + 4, width, int.from_bytes(moof[body + 4 : body + 4 + width], "big")


def boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, box end) of each box in data[start:end].

    ISO/IEC 14496-12 4.2: a box is size, type, then largesize if size is 1; size 0 runs to the
    end."""
    position = start
    while position + 8 <= end:
        size, kind, header = u32(data, position), data[position + 4 : position + 8], 8
        if size == 1:
            size, header = u64(data, position + 8), 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise ProbeError("truncated MP4 box")
        yield kind, position + header, position + size
        position += size


def child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, body, box_end in boxes(data, start, end):
        if found == kind:
            return body, box_end
    return None


def top_level(fd: int, size: int, start: int = 0) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box offset, body offset, box end) of each top-level box from `start` (a box's
    offset), reading only headers; raises ProbeError at a box that is cut short.

    ISO/IEC 14496-12 4.2, as `boxes`."""
    position = start
    while position < size:
        header = os.pread(fd, 16, position)
        if len(header) < 8:
            raise ProbeError(f"MP4 box cut short at byte {position}")
        length, kind, skip = u32(header, 0), header[4:8], 8
        if length == 1:
            length, skip = u64(header, 8), 16
        elif length == 0:
            length = size - position
        if length < skip or position + length > size:
            raise ProbeError(f"MP4 box cut short at byte {position}")
        yield kind, position, position + skip, position + length
        position += length


@dataclass
class Track:
    """ISO/IEC 14496-12: tkhd 8.3.2 (track_ID), mdhd 8.4.2 (timescale), hdlr 8.4.3 (handler_type),
    trex 8.8.3 (fragment defaults)."""

    track_id: int = 0
    handler: bytes = b""
    timescale: int = 0
    codec: str = ""
    default_duration: int = 0  # from trex
    default_flags: int = 0  # from trex
    default_size: int = 0  # from trex
    entry: bytes = b""  # video: what its decoder is configured with (_decoder_config);
    # audio: its first sample entry
    samples: list[tuple[int, int, bool]] | None = None  # (pts, duration, sync), plain MP4
    shift: int = 0  # media time to presentation time (edit list), in ticks
    entry_at: int = 0  # where in the moov its first sample entry's type (avc1, hev1...) is


_VISUAL_ENTRY = 78  # a visual sample entry's own fields, before its child boxes
_CONFIG_BOXES = {b"avcC", b"hvcC"}


def _decoder_config(moov: bytes, entry: int) -> bytes:
    """A video sample entry's width, height and codec configuration box (avcC, hvcC):
    what its decoder is set up with. Not the whole entry: a muxer writes each file's
    own bitrate (btrt) there.

    The sample entry: ISO/IEC 14496-12 8.5.2 stsd, 12.1.3 VisualSampleEntry; its avcC or
    hvcC: ISO/IEC 14496-15 5.3.3.1, 8.3.3.1."""
    end = min(entry + u32(moov, entry), len(moov))
    found = bytearray(moov[entry + 32 : entry + 36])  # width, height
    children = entry + 8 + _VISUAL_ENTRY
    for kind, body, box_end in boxes(moov, children, end) if children < end else ():
        if kind in _CONFIG_BOXES:
            found += moov[body:box_end]
    return bytes(found)


def read_box(fd: int, body: int, end: int) -> bytes:
    if end - body > _MAX_BOX:
        raise ProbeError("MP4 box too large for a segment")
    return os.pread(fd, end - body, body)


def table_entries(
    moov: bytes, box: tuple[int, int] | None, width: int, limit: int
) -> list[tuple[int, ...]]:
    """The entries of a full box made of a 32-bit count and `width` 32-bit fields each;
    ProbeError if it claims more than the box holds or than `limit` entries.

    ISO/IEC 14496-12 4.2 FullBox, then entry_count and the entries of the tables in 8.6 and 8.7."""
    if box is None:
        return []
    if box[1] - box[0] < 8:
        raise ProbeError("truncated MP4 sample table")
    count = u32(moov, box[0] + 4)
    at = box[0] + 8
    if at + count * width * 4 > box[1] or count > limit:
        raise ProbeError("corrupt MP4 sample table: more entries than it holds")
    flat = array("I", moov[at : at + count * width * 4])
    if sys.byteorder == "little":
        flat.byteswap()
    return [tuple(flat[n * width : (n + 1) * width]) for n in range(count)]


def _runs(entries: list[tuple[int, ...]], limit: int) -> int:
    """The samples a table of (count, value) runs covers; ProbeError past `limit`."""
    total = sum(entry[0] for entry in entries)
    if total > limit:
        raise ProbeError(f"corrupt MP4 sample table: {total} samples, more than the file holds")
    return total


def _plain_samples(
    moov: bytes, stbl: tuple[int, int], shift: int, limit: int
) -> list[tuple[int, int, bool]]:
    """(pts, duration, sync) of each sample from the stts, ctts and stss tables; at most
    `limit` samples (what the file can hold), else ProbeError before anything is
    expanded.

    ISO/IEC 14496-12 8.6.1.2 stts, 8.6.1.3 ctts, 8.6.2 stss (none: every sample is a sync
    sample)."""
    stts = table_entries(moov, child(moov, *stbl, b"stts"), 2, limit)
    _runs(stts, limit)
    durations = [d for count, d in stts for _ in range(count)]
    ctts_box = child(moov, *stbl, b"ctts")
    offsets: list[int] = []
    if ctts_box is not None:
        signed = moov[ctts_box[0]] == 1
        ctts = table_entries(moov, ctts_box, 2, limit)
        _runs(ctts, limit)
        for count, offset in ctts:
            if signed and offset >= 1 << 31:
                offset -= 1 << 32
            offsets.extend([offset] * count)
    stss = child(moov, *stbl, b"stss")
    sync = None if stss is None else {n for (n,) in table_entries(moov, stss, 1, limit)}
    samples = []
    dts = 0
    for n, duration in enumerate(durations):
        offset = offsets[n] if n < len(offsets) else 0
        samples.append((dts + offset + shift, duration, sync is None or n + 1 in sync))
        dts += duration
    return samples


def _edit_shift(moov: bytes, elst: tuple[int, int], movie_scale: int, track_scale: int) -> int:
    """Ticks from a track's media time to its presentation time, from its edit list:
    leading empty edits delay it, the first real edit's media_time starts it later.

    ISO/IEC 14496-12 8.6.6 elst (segment_duration in the movie's timescale, media_time in the
    track's)."""
    version_1 = moov[elst[0]] == 1
    width = 20 if version_1 else 12
    empty = 0
    for n in range(u32(moov, elst[0] + 4)):
        at = elst[0] + 8 + n * width
        if version_1:
            duration, media_time = u64(moov, at), u64(moov, at + 8)
            media_time = media_time - (1 << 64) if media_time >= 1 << 63 else media_time
        else:
            duration, media_time = u32(moov, at), s32(moov, at + 4)
        if media_time == -1:
            empty += duration
            continue
        return _rescale(empty, track_scale, movie_scale) - media_time
    return _rescale(empty, track_scale, movie_scale)


def _rescale(ticks: int, to_scale: int, from_scale: int) -> int:
    """`ticks` of one timescale in another, rounded to the nearest (as ffmpeg does)."""
    return (ticks * to_scale + max(from_scale, 1) // 2) // max(from_scale, 1)


def read_tracks(moov: bytes, limit: int) -> tuple[list[Track], bool]:
    """ISO/IEC 14496-12: moov 8.2.1, mvhd 8.2.2, mvex 8.8.1, trex 8.8.3, trak 8.3.1, mdia 8.4.1,
    minf 8.4.4, stbl 8.5.1, edts 8.6.5.

    `limit`: the most samples a track may have, what the file can hold (a sample takes
    at least a byte of it), and never more than MAX_TRACK_SAMPLES."""
    limit = min(limit, MAX_TRACK_SAMPLES)
    tracks: list[Track] = []
    fragmented = False
    movie_scale = 1000
    mvhd = child(moov, 0, len(moov), b"mvhd")
    if mvhd is not None:
        movie_scale = u32(moov, mvhd[0] + (20 if moov[mvhd[0]] == 1 else 12))
    for kind, body, end in boxes(moov, 0, len(moov)):
        if kind == b"mvex":
            fragmented = True
            for inner, ibody, _ in boxes(moov, body, end):
                if inner == b"trex":
                    for track in tracks:
                        if track.track_id == u32(moov, ibody + 4):
                            track.default_duration = u32(moov, ibody + 12)
                            track.default_size = u32(moov, ibody + 16)
                            track.default_flags = u32(moov, ibody + 20)
        if kind != b"trak":
            continue
        track = Track()
        tkhd = child(moov, body, end, b"tkhd")
        mdia = child(moov, body, end, b"mdia")
        if tkhd is None or mdia is None:
            continue
        track.track_id = u32(moov, tkhd[0] + (20 if moov[tkhd[0]] == 1 else 12))
        mdhd = child(moov, *mdia, b"mdhd")
        hdlr = child(moov, *mdia, b"hdlr")
        if mdhd is None or hdlr is None:
            continue
        track.timescale = u32(moov, mdhd[0] + (20 if moov[mdhd[0]] == 1 else 12))
        track.handler = moov[hdlr[0] + 8 : hdlr[0] + 12]
        edts = child(moov, body, end, b"edts")
        elst = child(moov, *edts, b"elst") if edts else None
        if elst is not None:
            track.shift = _edit_shift(moov, elst, movie_scale, track.timescale)
        minf = child(moov, *mdia, b"minf")
        stbl = child(moov, *minf, b"stbl") if minf else None
        if stbl is not None:
            stsd = child(moov, *stbl, b"stsd")
            if stsd is not None and u32(moov, stsd[0] + 4) > 0:
                tag = moov[stsd[0] + 12 : stsd[0] + 16]
                track.entry_at = stsd[0] + 12
                track.codec = _CODECS.get(tag, tag.decode("latin-1").strip())
                if track.handler == b"vide":
                    track.entry = _decoder_config(moov, stsd[0] + 8)
                elif track.handler == b"soun":  # the whole entry: its esds names the codec
                    first = stsd[0] + 8
                    track.entry = moov[first : min(first + u32(moov, first), stsd[1])]
            if track.handler in (b"vide", b"soun"):
                track.samples = _plain_samples(moov, stbl, track.shift, limit)
        tracks.append(track)
    return tracks, fragmented


_MAX_SAMPLES = 1 << 20  # a fragment's samples of one track: hours of video at 60 fps
# A sample of a fragment: (duration, size, flags, composition offset, file offset).
Sample = tuple[int, int, int, int, int]
NOT_SYNC = 0x10000  # sample_is_non_sync_sample, in sample flags


def traf_samples(
    moof: bytes, track: Track, limit: int = _MAX_SAMPLES
) -> list[tuple[int, int, bool]]:
    """(pts, duration, sync) of `track`'s samples in one moof (at most `limit`).

    ISO/IEC 14496-12 8.8.6 traf, 8.8.8 trun; sample_is_non_sync_sample in the sample flags,
    8.8.3.1."""
    samples = []
    dts, entries = traf_entries(moof, 0, track, limit)
    dts += track.shift
    for duration, _, flags, offset, _ in entries:
        samples.append((dts + offset, duration, not flags & NOT_SYNC))
        dts += duration
    return samples


def keyframe_at(fd: int, start: int, moof_at: int, video: Track, sample: int) -> bool:
    """Whether, walking the file's top-level boxes from `start`, a moof begins exactly at
    `moof_at` and its video sample `sample` is a sync sample whose bytes lie in the mdat
    that follows it (blocking: reads box headers and that moof). False for anything
    else, whatever the bytes: an offset asked for by a client is trusted no further."""
    size = os.fstat(fd).st_size
    try:
        boxes_from = top_level(fd, size, start)
        for kind, at, body, end in boxes_from:
            if at > moof_at:
                return False
            if at == moof_at:
                if kind != b"moof":
                    return False
                _, samples = traf_entries(read_box(fd, body, end), moof_at, video)
                mdat = next(boxes_from, None)
                if mdat is None or mdat[0] != b"mdat" or not 0 < sample < len(samples):
                    return False
                _, length, flags, _, data = samples[sample]
                return not flags & NOT_SYNC and mdat[2] <= data and data + length <= mdat[3]
    except ProbeError:
        return False
    return False


def _stride(flags: int) -> int:
    """The bytes a track run gives each sample, by its flags.

    ISO/IEC 14496-12 8.8.8 trun: flags 0x100 duration, 0x200 size, 0x400 flags, 0x800 composition
    offset."""
    return 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)


def traf_entries(
    moof: bytes, moof_at: int, track: Track, limit: int = _MAX_SAMPLES
) -> tuple[int, list[Sample]]:
    """`track`'s decode time (tfdt, 0 if none) and samples in one moof that starts at file
    offset `moof_at` (its body is `moof`), each with where its data lies in the file;
    ProbeError if its runs claim more than they hold, or more than `limit` samples.

    ISO/IEC 14496-12: moof 8.8.4, traf 8.8.6, tfhd 8.8.7 (base-data-offset 0x1, defaults 0x8 0x10
    0x20), trun 8.8.8 (data-offset 0x1, first-sample-flags 0x4), tfdt 8.8.12."""
    samples: list[Sample] = []
    decode_time = 0
    for kind, body, end in boxes(moof, 0, len(moof)):
        if kind != b"traf":
            continue
        tfhd = child(moof, body, end, b"tfhd")
        if tfhd is None or u32(moof, tfhd[0] + 4) != track.track_id:
            continue
        flags = u32(moof, tfhd[0]) & 0xFFFFFF
        base = moof_at  # default-base-is-moof, as every fragmenting muxer of cameras writes
        at = tfhd[0] + 8
        if flags & 0x1:
            base, at = u64(moof, at), at + 8
        at += 4 if flags & 0x2 else 0
        default_duration, default_size = track.default_duration, track.default_size
        default_flags = track.default_flags
        if flags & 0x8:
            default_duration, at = u32(moof, at), at + 4
        if flags & 0x10:
            default_size, at = u32(moof, at), at + 4
        if flags & 0x20:
            default_flags = u32(moof, at)
        tfdt = child(moof, body, end, b"tfdt")
        if tfdt is not None:
            _, _, decode_time = tfdt_value(moof, tfdt)
        data = base
        for inner, ibody, iend in boxes(moof, body, end):
            if inner != b"trun":
                continue
            version, tflags = moof[ibody], u32(moof, ibody) & 0xFFFFFF
            count = u32(moof, ibody + 4)
            at = ibody + 8
            if tflags & 0x1:
                data, at = base + s32(moof, at), at + 4
            first_flags = None
            if tflags & 0x4:
                first_flags, at = u32(moof, at), at + 4
            stride = _stride(tflags)
            if at + count * stride > iend or count > _MAX_SAMPLES:
                raise ProbeError("corrupt MP4 track run: more samples than it holds")
            if len(samples) + count > limit:
                raise ProbeError("corrupt MP4 track run: more samples than the file holds")
            for n in range(count):
                duration, size, sample_flags = default_duration, default_size, default_flags
                if tflags & 0x100:
                    duration, at = u32(moof, at), at + 4
                if tflags & 0x200:
                    size, at = u32(moof, at), at + 4
                if tflags & 0x400:
                    sample_flags, at = u32(moof, at), at + 4
                elif n == 0 and first_flags is not None:
                    sample_flags = first_flags
                offset = 0
                if tflags & 0x800:
                    offset = s32(moof, at) if version else u32(moof, at)
                    at += 4
                samples.append((duration, size, sample_flags, offset, data))
                data += size
    return decode_time, samples


# --- a fragmented recording on a session's timeline ----------------------------------


@dataclass(frozen=True)
class Retimed:
    """How a fragmented MP4 recording is served on a session's timeline: each fragment's
    decode time (`tfdt`) moved by its track's shift, and an HEVC sample entry `hev1`
    named `hvc1` (Safari plays only that). Both are rewritten in place, same length, so
    that every byte range of the file maps 1:1.

    ISO/IEC 14496-12 8.8.12 tfdt; hev1 and hvc1 are the two HEVC sample entries of ISO/IEC
    14496-15 8.4.1."""

    size: int  # the file's bytes when it was looked at
    init_size: int  # the init section: bytes 0 to here
    starts: tuple[int, ...]  # fragments known to start at these offsets (sorted)
    shifts: dict[int, int] = field(default_factory=dict)  # track ID -> ticks added
    entry_at: int = -1  # the offset of a `hev1` to name `hvc1`, if any
    fixed: tuple[tuple[int, bytes], ...] = ()  # bytes written at file offsets, last
    tracks: tuple[Track, ...] = ()  # from the init section; the video's first

    def cut(self, fd: int, moof_at: int, low: int, high: int | None) -> tuple[bytes, int]:
        """Part of the fragment whose moof is at `moof_at`, as a fragment of its own on
        the timeline: its video samples `low` to `high` (None: to the end; in decode
        order, `low` a keyframe), the other tracks' samples presented from the first of
        those frames' time up to the next's; and the offset where the fragment after it
        begins (blocking: reads the moof and those samples)."""
        return cut_fragment(fd, moof_at, self.tracks, self.shifts, low, high)

    def served(
        self, fd: int, cut_at: int, stop_at: int, cut_sample: int, stop_sample: int
    ) -> tuple[bytes, int, int, bytes]:
        """How a part of the recording is served: (prefix, start, stop, suffix), the
        bytes sent before the file's bytes `start` to `stop` and after them. The part
        runs from video sample `cut_sample` (a keyframe) of the fragment at `cut_at` to
        the fragment at `stop_at` (0: the file's end), whose first `stop_sample` video
        samples are the part's; a fragment cut so is made a fragment of its own (`cut`;
        blocking)."""
        prefix = suffix = b""
        start, stop = cut_at, stop_at
        same = stop_at == cut_at
        if cut_sample:
            prefix, start = self.cut(fd, cut_at, cut_sample, stop_sample if same else None)
            stop = start if same else stop
        if stop_sample and not (same and cut_sample):
            suffix, _ = self.cut(fd, stop_at, 0, stop_sample)
        return prefix, start, stop, suffix

    def apply(self, fd: int, position: int, data: bytearray) -> None:
        """Rewrite `data`, the file's bytes from `position`, in place (blocking: reads
        the moof boxes it overlaps)."""
        end = position + len(data)
        if 0 <= self.entry_at < end and position < self.entry_at + 4:
            _put(data, position, self.entry_at, b"hvc1")
        if end <= self.init_size or not self.starts:
            return
        known = bisect.bisect_right(self.starts, position) - 1
        try:
            for kind, at, body, box_end in top_level(fd, self.size, self.starts[max(known, 0)]):
                if at >= end:
                    break
                if kind == b"moof" and box_end > position:
                    moof = read_box(fd, body, box_end)
                    for offset, width, track_id, value in _decode_times(moof):
                        moved = (value + self.shifts.get(track_id, 0)) % (1 << (8 * width))
                        _put(data, position, body + offset, moved.to_bytes(width, "big"))
        except ProbeError:
            pass  # past the last whole fragment: the rest goes as it is
        for at, raw in self.fixed:
            _put(data, position, at, raw)


def retimed(fd: int, init_size: int, starts: Sequence[int], video_shift: int) -> Retimed:
    """A fragmented recording's Retimed: its video's decode times moved by `video_shift`
    ticks, every other track's by the same time in its own ticks (blocking: reads the
    init section)."""
    body, tracks, video = init_tracks(fd, init_size)
    shifts = {
        t.track_id: (video_shift * t.timescale + video.timescale // 2) // video.timescale
        for t in tracks
    }
    return _retimed(fd, init_size, starts, shifts, body, tracks, video)


def placed(fd: int, init_size: int, zero: int, clock: int) -> Retimed:
    """The Retimed of a fragmented MP4 file a muxer wrote from zero (ffmpeg, out of an
    MPEG-TS segment that was on the session's timeline): every track moved so that time
    zero lands at `zero` (`clock` ticks). ffmpeg starts a track that began later than
    zero at zero all the same, its first sample stretched to reach the second: that
    sample gets the second's duration back and starts where it really did (blocking:
    reads the init section and the first fragment)."""
    body, tracks, video = init_tracks(fd, init_size)
    shifts = {t.track_id: (zero * t.timescale + clock // 2) // clock for t in tracks}
    fixed: list[tuple[int, bytes]] = []
    for kind, _, moof_body, end in top_level(fd, os.fstat(fd).st_size, init_size):
        if kind != b"moof":
            continue
        moof = read_box(fd, moof_body, end)
        for track_id, (at, width, value), (duration_at, first, second) in _first_runs(moof):
            if first > second > 0 and track_id in shifts:
                later = value + shifts[track_id] + first - second
                fixed.append((moof_body + at, later.to_bytes(width, "big")))
                fixed.append((moof_body + duration_at, second.to_bytes(4, "big")))
        break
    return _retimed(fd, init_size, (init_size,), shifts, body, tracks, video, tuple(fixed))


def _first_runs(moof: bytes) -> Iterator[tuple[int, tuple[int, int, int], tuple[int, int, int]]]:
    """Per track of a moof whose first run states each sample's duration: its ID, its
    tfdt (offset of the value in the moof's body, width, value), and its first sample's
    duration (offset), that duration and the second's.

    ISO/IEC 14496-12 8.8.7 tfhd, 8.8.8 trun, 8.8.12 tfdt."""
    for kind, body, end in boxes(moof, 0, len(moof)):
        tfhd = child(moof, body, end, b"tfhd") if kind == b"traf" else None
        tfdt = child(moof, body, end, b"tfdt") if kind == b"traf" else None
        trun = child(moof, body, end, b"trun") if kind == b"traf" else None
        if tfhd is None or tfdt is None or trun is None:
            continue
        flags, count = u32(moof, trun[0]) & 0xFFFFFF, u32(moof, trun[0] + 4)
        if not flags & 0x100 or count < 2:
            continue
        at = trun[0] + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
        stride = _stride(flags)
        yield (
            u32(moof, tfhd[0] + 4),
            tfdt_value(moof, tfdt),
            (at, u32(moof, at), u32(moof, at + stride)),
        )


def init_tracks(fd: int, init_size: int) -> tuple[int, list[Track], Track]:
    """The moov's body offset, its tracks with a timescale, and its video track, from a
    fragmented MP4 file's init section (its first `init_size` bytes; blocking)."""
    for kind, _, body, end in top_level(fd, init_size):
        if kind != b"moov":
            continue
        moov = read_box(fd, body, end)
        tracks = [t for t in read_tracks(moov, os.fstat(fd).st_size)[0] if t.timescale]
        video = next((t for t in tracks if t.handler == b"vide"), None)
        if video is not None:
            return body, tracks, video
    raise ProbeError("fragmented MP4 without a video track")


def _retimed(
    fd: int,
    init_size: int,
    starts: Sequence[int],
    shifts: dict[int, int],
    body: int,
    tracks: list[Track],
    video: Track,
    fixed: tuple[tuple[int, bytes], ...] = (),
) -> Retimed:
    hev1 = video.codec == "hevc" and os.pread(fd, 4, body + video.entry_at) == b"hev1"
    size = os.fstat(fd).st_size
    at = body + video.entry_at if hev1 else -1
    ordered = (video, *(t for t in tracks if t is not video))
    return Retimed(size, init_size, tuple(sorted(starts)), shifts, at, fixed, ordered)


def _decode_times(moof: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(offset in the moof's body, width in bytes, track ID, value) of each `tfdt`.

    ISO/IEC 14496-12 8.8.7 tfhd (track_ID), 8.8.12 tfdt."""
    for kind, body, end in boxes(moof, 0, len(moof)):
        if kind != b"traf":
            continue
        tfhd = child(moof, body, end, b"tfhd")
        tfdt = child(moof, body, end, b"tfdt")
        if tfhd is None or tfdt is None:
            continue
        at, width, value = tfdt_value(moof, tfdt)
        yield at, width, u32(moof, tfhd[0] + 4), value


def _put(data: bytearray, position: int, at: int, raw: bytes) -> None:
    """Write `raw`, meant for file offset `at`, into `data` (the bytes from `position`),
    as much of it as `data` covers."""
    low, high = max(at, position), min(at + len(raw), position + len(data))
    if low < high:
        data[low - position : high - position] = raw[low - at : high - at]


# --- a fragment cut at a keyframe inside it ---------------------------------------------


def cut_fragment(
    fd: int,
    moof_at: int,
    tracks: Sequence[Track],
    shifts: dict[int, int],
    low: int,
    high: int | None,
) -> tuple[bytes, int]:
    """Retimed.cut; `tracks[0]` is the video.

    ISO/IEC 14496-12: moof 8.8.4, mfhd 8.8.5, mdat 8.1.1."""
    kind, _, body, end = next(top_level(fd, os.fstat(fd).st_size, moof_at))
    if kind != b"moof":
        raise ProbeError(f"no fragment at byte {moof_at}")
    moof = read_box(fd, body, end)
    following = end
    for inner, _, _, box_end in top_level(fd, os.fstat(fd).st_size, end):
        following = box_end
        if inner == b"mdat":
            break
    mfhd = child(moof, 0, len(moof), b"mfhd")
    sequence = u32(moof, mfhd[0] + 4) if mfhd is not None else 0
    video = tracks[0]
    start, samples = traf_entries(moof, moof_at, video)
    high = len(samples) if high is None else high

    def presented(n: int) -> int | None:  # the earliest frame from sample n, video ticks
        if n <= 0 or n >= len(samples):
            return None
        dts = start + sum(sample[0] for sample in samples[:n]) + video.shift
        return dts + min(sample[3] for sample in samples[n : n + 8])

    since, until = presented(low), presented(high)
    parts = []
    for track in tracks:
        decode_time, entries = traf_entries(moof, moof_at, track)
        if track is video:
            first, last = low, high
        else:  # by presentation time, against the video's (in each other's timescale)
            times = []
            dts = decode_time + track.shift
            for duration, _, _, offset, _ in entries:
                times.append((dts + offset) * video.timescale)
                dts += duration
            first = sum(1 for t in times if since is not None and t < since * track.timescale)
            last = sum(1 for t in times if until is None or t < until * track.timescale)
        chosen = entries[first:last]
        if chosen:
            skipped = sum(entry[0] for entry in entries[:first])
            moved = decode_time + skipped + shifts.get(track.track_id, 0)
            parts.append((track.track_id, moved, chosen))
    return _fragment(fd, sequence, parts), following


def _box(kind: bytes, payload: bytes) -> bytes:
    """ISO/IEC 14496-12 4.2 Box."""
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def _full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    """ISO/IEC 14496-12 4.2 FullBox: version, then 24 bits of flags."""
    return _box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def _fragment(fd: int, sequence: int, parts: list[tuple[int, int, list[Sample]]]) -> bytes:
    """A moof and its mdat for `parts` (track ID, decode time, samples), each sample's
    every field stated, its data read from the file.

    ISO/IEC 14496-12: mfhd 8.8.5; tfhd 8.8.7 with default-base-is-moof (0x020000); tfdt 8.8.12
    version 1 (64 bits); trun 8.8.8 version 1 (signed composition offsets) with data-offset and
    every sample field (0xF01)."""
    moof_size = 8 + 16 + sum(8 + 16 + 20 + 20 + 16 * len(samples) for _, _, samples in parts)
    trafs, data = [], []
    at = moof_size + 8  # where the next track's data begins, from the moof's start
    for track_id, decode_time, samples in parts:
        entries = b"".join(
            b"".join(value.to_bytes(4, "big", signed=n == 3) for n, value in enumerate(sample[:4]))
            for sample in samples
        )
        run = len(samples).to_bytes(4, "big") + at.to_bytes(4, "big") + entries
        trafs.append(
            _box(
                b"traf",
                _full_box(b"tfhd", 0, 0x020000, track_id.to_bytes(4, "big"))
                + _full_box(b"tfdt", 1, 0, decode_time.to_bytes(8, "big"))
                + _full_box(b"trun", 1, 0xF01, run),
            )
        )
        for _, size, _, _, offset in samples:
            data.append(os.pread(fd, size, offset))
            at += size
    moof = _box(b"moof", _full_box(b"mfhd", 0, 0, sequence.to_bytes(4, "big")) + b"".join(trafs))
    if len(moof) != moof_size:
        raise ProbeError(f"a fragment made {len(moof)} bytes of moof, not {moof_size}")
    return moof + _box(b"mdat", b"".join(data))
