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

    @property
    def frame_us(self) -> int:
        return self.frame_ticks * 1_000_000 // self.timescale


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


def _probe_ts(fd: int, size: int, head: bytes) -> MediaFacts:
    offset = 0
    pat = _section(head, offset, 0)
    if pat is None or len(pat) < 12:
        raise ProbeError("MPEG-TS without a program table in its first 64 KiB")
    pmt_pid = None
    for at in range(8, len(pat) - 4 - 3, 4):
        if (pat[at] << 8 | pat[at + 1]) != 0:
            pmt_pid = ((pat[at + 2] & 0x1F) << 8) | pat[at + 3]
            break
    pmt = _section(head, offset, pmt_pid) if pmt_pid is not None else None
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
    duration: int = 0  # from stts (decode durations), the track's media duration
    codec: str = ""
    first_delta: int = 0
    default_duration: int = 0  # from trex


def _read_box(fd: int, body: int, end: int) -> bytes:
    if end - body > _MAX_BOX:
        raise ProbeError("MP4 box too large for a segment")
    return os.pread(fd, end - body, body)


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
        version_1 = moov[mdhd[0]] == 1
        track.timescale = _u32(moov, mdhd[0] + (20 if version_1 else 12))
        track.handler = moov[hdlr[0] + 8 : hdlr[0] + 12]
        minf = _child(moov, *mdia, b"minf")
        stbl = _child(moov, *minf, b"stbl") if minf else None
        if stbl is not None:
            stsd = _child(moov, *stbl, b"stsd")
            if stsd is not None and _u32(moov, stsd[0] + 4) > 0:
                tag = moov[stsd[0] + 12 : stsd[0] + 16]
                track.codec = _CODECS.get(tag, tag.decode("latin-1").strip())
            stts = _child(moov, *stbl, b"stts")
            if stts is not None:
                count = _u32(moov, stts[0] + 4)
                for at in range(stts[0] + 8, stts[0] + 8 + 8 * count, 8):
                    samples, delta = _u32(moov, at), _u32(moov, at + 4)
                    track.duration += samples * delta
                    track.first_delta = track.first_delta or delta
        tracks.append(track)
    return tracks, fragmented


def _traf_samples(moof: bytes, track: _Track) -> tuple[int | None, int, int] | None:
    """(first pts, summed durations, first duration) of `track`'s samples in one moof."""
    for kind, body, end in _boxes(moof, 0, len(moof)):
        if kind != b"traf":
            continue
        tfhd = _child(moof, body, end, b"tfhd")
        if tfhd is None or _u32(moof, tfhd[0] + 4) != track.track_id:
            continue
        flags = _u32(moof, tfhd[0]) & 0xFFFFFF
        at = tfhd[0] + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
        default = _u32(moof, at) if flags & 0x8 else track.default_duration
        tfdt = _child(moof, body, end, b"tfdt")
        base = 0
        if tfdt is not None:
            base = _u64(moof, tfdt[0] + 4) if moof[tfdt[0]] == 1 else _u32(moof, tfdt[0] + 4)
        first_pts: int | None = None
        total = first_duration = 0
        for inner, ibody, _ in _boxes(moof, body, end):
            if inner != b"trun":
                continue
            version, tflags = moof[ibody], _u32(moof, ibody) & 0xFFFFFF
            count = _u32(moof, ibody + 4)
            at = ibody + 8 + (4 if tflags & 0x1 else 0) + (4 if tflags & 0x4 else 0)
            for _ in range(count):
                duration = default
                if tflags & 0x100:
                    duration, at = _u32(moof, at), at + 4
                at += (4 if tflags & 0x200 else 0) + (4 if tflags & 0x400 else 0)
                offset = 0
                if tflags & 0x800:
                    offset = _s32(moof, at) if version else _u32(moof, at)
                    at += 4
                if first_pts is None:
                    first_pts, first_duration = base + total + offset, duration
                total += duration
        return first_pts, total, first_duration
    return None


def _probe_mp4(fd: int, size: int) -> MediaFacts:
    tracks: list[_Track] = []
    fragmented = False
    video: _Track | None = None
    first_pts: int | None = None
    total = 0
    frame_ticks = 0
    for kind, body, end in _top_level(fd, size):
        if kind == b"moov":
            tracks, fragmented = _tracks(_read_box(fd, body, end))
            video = next((t for t in tracks if t.handler == b"vide"), None)
            if video is None or not video.timescale:
                raise ProbeError("MP4 without a video track")
        elif kind == b"moof" and video is not None:
            found = _traf_samples(_read_box(fd, body, end), video)
            if found is not None:
                pts, duration, first_duration = found
                if first_pts is None and pts is not None:
                    first_pts, frame_ticks = pts, first_duration
                total += duration
    if video is None:
        raise ProbeError("MP4 without a moov box (still being written?)")
    has_audio = any(t.handler == b"soun" for t in tracks)
    if fragmented:
        if first_pts is None or total <= 0:
            raise ProbeError("fragmented MP4 without video samples")
        return MediaFacts(
            "fmp4", video.codec, has_audio, video.timescale, first_pts, total, frame_ticks
        )
    if video.duration <= 0:
        raise ProbeError("MP4 without video samples")
    return MediaFacts(
        "mp4",
        video.codec,
        has_audio,
        video.timescale,
        0,  # a plain MP4 file starts its own timeline (its edit list maps it to zero)
        video.duration,
        video.first_delta,
    )
