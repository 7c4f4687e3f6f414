"""Media facts of a recorded segment, read from its container headers in pure Python.

Running ffprobe costs ~150 ms a file (hours for a large archive on a Pi). The facts the
index needs are in a few container structures: for MPEG-TS, the PAT/PMT and the PES
timestamps at the head and tail of the file; for MP4, the `moov` box and, when
fragmented, each `moof`. Reading those takes well under a millisecond a file, and the
duration is exact to the tick (the tests compare it with ffprobe's packet timestamps).

The duration is the video's: from the first frame's presentation time to the end of the
last frame, which is what a playlist's EXTINF must state.
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ProbeError(Exception):
    """The file is not (or not yet) a segment whose facts can be read."""


@dataclass(frozen=True)
class MediaFacts:
    container: str  # "mpegts", "mp4" or "fmp4"
    video_codec: str  # "h264", "hevc" or the codec's own tag
    has_audio: bool
    timescale: int  # ticks per second of the three tick counts below
    first_pts: int  # presentation time of the first video frame, in ticks
    duration: int  # first frame's start to last frame's end, in ticks
    frame_ticks: int  # the usual interval between frames, in ticks

    @property
    def duration_us(self) -> int:
        return self.duration * 1_000_000 // self.timescale


def probe(path: Path | str) -> MediaFacts:
    """Read the facts of the segment at `path`; raises ProbeError or OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 65536, 0)
        if len(head) >= _TS and head[0] == 0x47 and (len(head) < 2 * _TS or head[_TS] == 0x47):
            return _probe_ts(fd, size, head)
        if len(head) >= 8 and head[4:8] in (b"ftyp", b"styp", b"moov", b"free", b"wide"):
            return _probe_mp4(fd, size)
        raise ProbeError("neither MPEG-TS nor MP4")
    finally:
        os.close(fd)


def keyframes(path: Path | str) -> list[int]:
    """Presentation times of the video keyframes, in the ticks and origin of `probe`'s facts.

    Reads the whole file for MPEG-TS (a few milliseconds for a short segment); only the
    sample tables for MP4.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 65536, 0)
        if len(head) >= _TS and head[0] == 0x47:
            video_pid = _ts_streams(head)[0]
            return sorted(_ts_keyframes(os.pread(fd, size, 0), video_pid))
        return [pts for pts, _, sync in _mp4_video_samples(fd, size)[1] if sync]
    finally:
        os.close(fd)


# --- MPEG-TS --------------------------------------------------------------------------

_TS = 188
_WRAP = 1 << 33  # PTS and DTS are 33-bit counters of a 90 kHz clock
_VIDEO_TYPES = {0x1B: "h264", 0x24: "hevc", 0x02: "mpeg2video", 0x10: "mpeg4"}
_AUDIO_TYPES = {0x03, 0x04, 0x0F, 0x11, 0x81, 0x87}
_MIN_TAIL_FRAMES = 8  # beyond any B-frame reorder depth a camera uses


def _pusi_packets(buf: bytes, offset: int, pid: int) -> Iterator[int]:
    """Offsets of the packets of `pid` that start a PES or a section, in order.

    Works on every 188th byte at once (bytes.find runs in C), so a megabyte costs
    microseconds rather than a Python loop over 5,000 packets.
    """
    second = buf[offset + 1 :: _TS]
    third = buf[offset + 2 :: _TS]
    high, low = 0x40 | (pid >> 8), pid & 0xFF
    index = second.find(high)
    while index != -1:
        position = offset + index * _TS
        if third[index] == low and position + _TS <= len(buf) and buf[position] == 0x47:
            yield position
        index = second.find(high, index + 1)


def _payload_start(buf: bytes, position: int) -> int | None:
    control = (buf[position + 3] >> 4) & 3
    start = position + 4
    if control & 2:
        start += 1 + buf[position + 4]
    if not control & 1 or start >= position + _TS:
        return None
    return start


def _section(buf: bytes, offset: int, pid: int) -> bytes | None:
    """The first PSI section carried on `pid` (PAT and PMT fit one packet in practice)."""
    for position in _pusi_packets(buf, offset, pid):
        start = _payload_start(buf, position)
        if start is None:
            continue
        start += 1 + buf[start]  # pointer_field
        end = position + _TS
        if start + 3 > end:
            continue
        length = ((buf[start + 1] & 0x0F) << 8) | buf[start + 2]
        return buf[start : min(end, start + 3 + length)]
    return None


def _timestamp(buf: bytes, at: int) -> int:
    return (
        ((buf[at] >> 1) & 0x07) << 30
        | buf[at + 1] << 22
        | (buf[at + 2] >> 1) << 15
        | buf[at + 3] << 7
        | buf[at + 4] >> 1
    )


def _pes_times(buf: bytes, offset: int, pid: int) -> list[tuple[int, int]]:
    """(pts, dts) of each PES of `pid` that starts in `buf`, in file order."""
    times = []
    for position in _pusi_packets(buf, offset, pid):
        start = _payload_start(buf, position)
        if start is None or start + 19 > position + _TS or buf[start : start + 3] != b"\0\0\1":
            continue
        flags = buf[start + 7] >> 6
        if not flags & 2:
            continue
        pts = _timestamp(buf, start + 9)
        dts = _timestamp(buf, start + 14) if flags == 3 else pts
        times.append((pts, dts))
    return times


def _ts_streams(head: bytes) -> tuple[int, str, bool]:
    """(video PID, video codec, has audio) from the PAT and PMT at the head of a file."""
    pat = _section(head, 0, 0)
    if pat is None or len(pat) < 12:
        raise ProbeError("MPEG-TS without a program table in its first 64 KiB")
    pmt_pid = None
    for at in range(8, len(pat) - 4 - 3, 4):
        if (pat[at] << 8 | pat[at + 1]) != 0:
            pmt_pid = ((pat[at + 2] & 0x1F) << 8) | pat[at + 3]
            break
    pmt = _section(head, 0, pmt_pid) if pmt_pid is not None else None
    if pmt is None or len(pmt) < 12:
        raise ProbeError("MPEG-TS without a program map in its first 64 KiB")
    video_pid, codec, has_audio = None, "", False
    at = 12 + (((pmt[10] & 0x0F) << 8) | pmt[11])
    while at + 5 <= len(pmt) - 4:
        stream_type = pmt[at]
        pid = ((pmt[at + 1] & 0x1F) << 8) | pmt[at + 2]
        if stream_type in _VIDEO_TYPES and video_pid is None:
            video_pid, codec = pid, _VIDEO_TYPES[stream_type]
        has_audio = has_audio or stream_type in _AUDIO_TYPES
        at += 5 + (((pmt[at + 3] & 0x0F) << 8) | pmt[at + 4])
    if video_pid is None:
        raise ProbeError("MPEG-TS without a video stream")
    return video_pid, codec, has_audio


def _ts_keyframes(data: bytes, video_pid: int) -> list[int]:
    """PTS of the video PES packets flagged as random access points."""
    found = []
    for position in _pusi_packets(data, 0, video_pid):
        control = data[position + 3] >> 4
        if control & 2 and data[position + 4] and data[position + 5] & 0x40:
            start = _payload_start(data, position)
            if start is not None and start + 14 <= position + _TS and data[start + 7] & 0x80:
                found.append(_timestamp(data, start + 9))
    return found


def _probe_ts(fd: int, size: int, head: bytes) -> MediaFacts:
    offset = 0
    video_pid, codec, has_audio = _ts_streams(head)
    first = _pes_times(head, offset, video_pid)
    if not first:
        raise ProbeError("MPEG-TS without a timestamped video frame in its first 64 KiB")
    first_pts = first[0][0]

    tail_size = 131072
    while True:
        start = max(0, size - tail_size)
        tail = os.pread(fd, size - start, start)
        tail_offset = (offset - start) % _TS
        last = _pes_times(tail, tail_offset, video_pid)
        if len(last) >= _MIN_TAIL_FRAMES or start == 0:
            break
        tail_size *= 4
    if len(last) < 2:
        raise ProbeError("MPEG-TS with fewer than two video frames")
    steps = [(b - a) % _WRAP for (_, a), (_, b) in itertools.pairwise(last)]
    frame_ticks = int(statistics.median_low([s for s in steps if s > 0] or [0]))
    end = max(((pts - first_pts) % _WRAP for pts, _ in last), default=0) + frame_ticks
    return MediaFacts("mpegts", codec, has_audio, 90000, first_pts, end, frame_ticks)


def ts_end_counters(path: Path | str) -> dict[int, int]:
    """The last continuity counter of every PID in an MPEG-TS file (from its tail)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 65536, 0)
        wanted = {
            ((head[at + 1] & 0x1F) << 8) | head[at + 2] for at in range(0, len(head) - 187, _TS)
        }
        wanted.discard(0x1FFF)  # null packets carry no counter
        found: dict[int, int] = {}
        end = size - size % _TS
        window = 32768 - 32768 % _TS
        while end > 0 and not wanted <= found.keys():
            start = max(0, end - window)
            window = min(window * 4, 1 << 20)
            chunk = os.pread(fd, end - start, start)
            for at in range(len(chunk) - _TS, -1, -_TS):
                pid = ((chunk[at + 1] & 0x1F) << 8) | chunk[at + 2]
                if pid not in found and pid != 0x1FFF and chunk[at] == 0x47:
                    found[pid] = chunk[at + 3] & 0x0F
            end = start
        return found
    finally:
        os.close(fd)


def cc_suffix(counters: dict[int, int]) -> bytes:
    """Packets that bring every PID's continuity counter to 15, so that a following file
    whose counters start at 0 continues it without a discontinuity.

    Each packet is all adaptation-field stuffing and one payload byte: a zero byte after
    a video access unit (a trailing zero that H.264 and H.265 allow), ignored after a
    PES of known length or a complete PSI section.
    """
    packets = []
    for pid, last in sorted(counters.items()):
        for counter in range(last + 1, 16):
            header = bytes((0x47, (pid >> 8) & 0x1F, pid & 0xFF, 0x30 | counter))
            adaptation = bytes((182, 0x00)) + b"\xff" * 181
            packets.append(header + adaptation + b"\x00")
    return b"".join(packets)


# --- MP4 and fragmented MP4 --------------------------------------------------------------

_MAX_BOX = 64 << 20  # a moov or moof larger than this is not a camera segment
_CODECS = {b"avc1": "h264", b"avc3": "h264", b"hvc1": "hevc", b"hev1": "hevc"}


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def _u64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 8], "big")


def _s32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big", signed=True)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, box end) of each box in data[start:end]."""
    position = start
    while position + 8 <= end:
        size, kind, header = _u32(data, position), data[position + 4 : position + 8], 8
        if size == 1:
            size, header = _u64(data, position + 8), 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise ProbeError("truncated MP4 box")
        yield kind, position + header, position + size
        position += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, body, box_end in _boxes(data, start, end):
        if found == kind:
            return body, box_end
    return None


def _top_level(fd: int, size: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body offset, box end) of each top-level box, reading only headers."""
    position = 0
    while position < size:
        header = os.pread(fd, 16, position)
        if len(header) < 8:
            raise ProbeError("truncated MP4 file")
        length, kind, skip = _u32(header, 0), header[4:8], 8
        if length == 1:
            length, skip = _u64(header, 8), 16
        elif length == 0:
            length = size - position
        if length < skip or position + length > size:
            raise ProbeError("MP4 file still being written or truncated")
        yield kind, position + skip, position + length
        position += length


@dataclass
class _Track:
    track_id: int = 0
    handler: bytes = b""
    timescale: int = 0
    codec: str = ""
    default_duration: int = 0  # from trex
    default_flags: int = 0  # from trex
    samples: list[tuple[int, int, bool]] | None = None  # (pts, duration, sync), plain MP4


def _read_box(fd: int, body: int, end: int) -> bytes:
    if end - body > _MAX_BOX:
        raise ProbeError("MP4 box too large for a segment")
    return os.pread(fd, end - body, body)


def _table(moov: bytes, box: tuple[int, int] | None, width: int) -> list[tuple[int, ...]]:
    """The entries of a full box made of a 32-bit count and `width` 32-bit fields each."""
    if box is None:
        return []
    count = _u32(moov, box[0] + 4)
    at = box[0] + 8
    if at + count * width * 4 > box[1]:
        raise ProbeError("truncated MP4 sample table")
    return [tuple(_u32(moov, at + 4 * (n * width + k)) for k in range(width)) for n in range(count)]


def _plain_samples(
    moov: bytes, stbl: tuple[int, int], media_time: int
) -> list[tuple[int, int, bool]]:
    """(pts, duration, sync) of each sample from the stts, ctts and stss tables."""
    durations = [
        d for count, d in _table(moov, _child(moov, *stbl, b"stts"), 2) for _ in range(count)
    ]
    ctts_box = _child(moov, *stbl, b"ctts")
    offsets: list[int] = []
    if ctts_box is not None:
        signed = moov[ctts_box[0]] == 1
        for count, offset in _table(moov, ctts_box, 2):
            if signed and offset >= 1 << 31:
                offset -= 1 << 32
            offsets.extend([offset] * count)
    stss = _child(moov, *stbl, b"stss")
    sync = None if stss is None else {n for (n,) in _table(moov, stss, 1)}
    samples = []
    dts = 0
    for n, duration in enumerate(durations):
        offset = offsets[n] if n < len(offsets) else 0
        samples.append((dts + offset - media_time, duration, sync is None or n + 1 in sync))
        dts += duration
    return samples


def _tracks(moov: bytes) -> tuple[list[_Track], bool]:
    tracks: list[_Track] = []
    fragmented = False
    for kind, body, end in _boxes(moov, 0, len(moov)):
        if kind == b"mvex":
            fragmented = True
            for inner, ibody, _ in _boxes(moov, body, end):
                if inner == b"trex":
                    for track in tracks:
                        if track.track_id == _u32(moov, ibody + 4):
                            track.default_duration = _u32(moov, ibody + 12)
                            track.default_flags = _u32(moov, ibody + 20)
        if kind != b"trak":
            continue
        track = _Track()
        tkhd = _child(moov, body, end, b"tkhd")
        mdia = _child(moov, body, end, b"mdia")
        if tkhd is None or mdia is None:
            continue
        track.track_id = _u32(moov, tkhd[0] + (20 if moov[tkhd[0]] == 1 else 12))
        mdhd = _child(moov, *mdia, b"mdhd")
        hdlr = _child(moov, *mdia, b"hdlr")
        if mdhd is None or hdlr is None:
            continue
        track.timescale = _u32(moov, mdhd[0] + (20 if moov[mdhd[0]] == 1 else 12))
        track.handler = moov[hdlr[0] + 8 : hdlr[0] + 12]
        media_time = 0
        edts = _child(moov, body, end, b"edts")
        elst = _child(moov, *edts, b"elst") if edts else None
        if elst is not None and _u32(moov, elst[0] + 4) > 0:
            version_1 = moov[elst[0]] == 1
            at = elst[0] + 8 + (8 if version_1 else 4)  # after the first segment_duration
            media_time = _u64(moov, at) if version_1 else _s32(moov, at)
            if media_time < 0:  # an empty edit (a leading pause): no shift of the media
                media_time = 0
        minf = _child(moov, *mdia, b"minf")
        stbl = _child(moov, *minf, b"stbl") if minf else None
        if stbl is not None:
            stsd = _child(moov, *stbl, b"stsd")
            if stsd is not None and _u32(moov, stsd[0] + 4) > 0:
                tag = moov[stsd[0] + 12 : stsd[0] + 16]
                track.codec = _CODECS.get(tag, tag.decode("latin-1").strip())
            if track.handler == b"vide":
                track.samples = _plain_samples(moov, stbl, media_time)
        tracks.append(track)
    return tracks, fragmented


def _traf_samples(moof: bytes, track: _Track) -> list[tuple[int, int, bool]]:
    """(pts, duration, sync) of `track`'s samples in one moof."""
    samples: list[tuple[int, int, bool]] = []
    for kind, body, end in _boxes(moof, 0, len(moof)):
        if kind != b"traf":
            continue
        tfhd = _child(moof, body, end, b"tfhd")
        if tfhd is None or _u32(moof, tfhd[0] + 4) != track.track_id:
            continue
        flags = _u32(moof, tfhd[0]) & 0xFFFFFF
        at = tfhd[0] + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
        default_duration, default_flags = track.default_duration, track.default_flags
        if flags & 0x8:
            default_duration, at = _u32(moof, at), at + 4
        if flags & 0x10:
            at += 4
        if flags & 0x20:
            default_flags = _u32(moof, at)
        tfdt = _child(moof, body, end, b"tfdt")
        dts = 0
        if tfdt is not None:
            dts = _u64(moof, tfdt[0] + 4) if moof[tfdt[0]] == 1 else _u32(moof, tfdt[0] + 4)
        for inner, ibody, _ in _boxes(moof, body, end):
            if inner != b"trun":
                continue
            version, tflags = moof[ibody], _u32(moof, ibody) & 0xFFFFFF
            count = _u32(moof, ibody + 4)
            at = ibody + 8 + (4 if tflags & 0x1 else 0)
            first_flags = None
            if tflags & 0x4:
                first_flags, at = _u32(moof, at), at + 4
            for n in range(count):
                duration, sample_flags = default_duration, default_flags
                if tflags & 0x100:
                    duration, at = _u32(moof, at), at + 4
                if tflags & 0x200:
                    at += 4
                if tflags & 0x400:
                    sample_flags, at = _u32(moof, at), at + 4
                elif n == 0 and first_flags is not None:
                    sample_flags = first_flags
                offset = 0
                if tflags & 0x800:
                    offset = _s32(moof, at) if version else _u32(moof, at)
                    at += 4
                samples.append((dts + offset, duration, not sample_flags & 0x10000))
                dts += duration
    return samples


def _mp4_video_samples(
    fd: int, size: int
) -> tuple[_Track, list[tuple[int, int, bool]], bool, bool]:
    """(video track, its samples, fragmented, has audio) of an MP4 file."""
    video: _Track | None = None
    fragmented = has_audio = False
    samples: list[tuple[int, int, bool]] = []
    for kind, body, end in _top_level(fd, size):
        if kind == b"moov":
            tracks, fragmented = _tracks(_read_box(fd, body, end))
            video = next((t for t in tracks if t.handler == b"vide"), None)
            if video is None or not video.timescale:
                raise ProbeError("MP4 without a video track")
            has_audio = any(t.handler == b"soun" for t in tracks)
            samples = [] if fragmented else list(video.samples or [])
        elif kind == b"moof" and video is not None:
            samples.extend(_traf_samples(_read_box(fd, body, end), video))
    if video is None:
        raise ProbeError("MP4 without a moov box (still being written?)")
    if not samples:
        raise ProbeError("MP4 without video samples")
    return video, samples, fragmented, has_audio


def _probe_mp4(fd: int, size: int) -> MediaFacts:
    video, samples, fragmented, has_audio = _mp4_video_samples(fd, size)
    first = min(pts for pts, _, _ in samples[:16])
    duration = sum(d for _, d, _ in samples)
    return MediaFacts(
        "fmp4" if fragmented else "mp4",
        video.codec,
        has_audio,
        video.timescale,
        first,
        duration,
        samples[0][1],
    )
