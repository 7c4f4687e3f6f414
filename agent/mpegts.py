"""MPEG-TS at the packet level: program tables, PES timestamps, keyframes and continuity
counters, read straight from the bytes (ISO/IEC 13818-1).

PTS, DTS and PCR bases are 33-bit counters of a 90 kHz clock; `pts_delta` is the one place
that does their wrapping arithmetic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ProbeError

PACKET = 188
PTS_WRAP = 1 << 33  # PTS and DTS are 33-bit counters of a 90 kHz clock
CLOCK = 90_000
_VIDEO_TYPES = {0x1B: "h264", 0x24: "hevc", 0x02: "mpeg2video", 0x10: "mpeg4"}
_AUDIO_TYPES = {0x03, 0x04, 0x0F, 0x11, 0x81, 0x87}
_CHUNK = (1 << 20) - (1 << 20) % PACKET  # whole packets read at a time


def pts_delta(later: int, earlier: int) -> int:
    """`later - earlier` for 33-bit timestamps, taking the shorter way round the wrap."""
    return (later - earlier + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2


def pusi_packets(buf: bytes, offset: int, pid: int) -> Iterator[int]:
    """Offsets of the packets of `pid` that start a PES or a section, in order.

    Works on every 188th byte at once (bytes.find runs in C), so a megabyte costs
    microseconds rather than a Python loop over 5,000 packets.
    """
    second = buf[offset + 1 :: PACKET]
    third = buf[offset + 2 :: PACKET]
    high, low = 0x40 | (pid >> 8), pid & 0xFF
    index = second.find(high)
    while index != -1:
        position = offset + index * PACKET
        if third[index] == low and position + PACKET <= len(buf) and buf[position] == 0x47:
            yield position
        index = second.find(high, index + 1)


def payload_start(buf: bytes, position: int) -> int | None:
    control = (buf[position + 3] >> 4) & 3
    start = position + 4
    if control & 2:
        start += 1 + buf[position + 4]
    if not control & 1 or start >= position + PACKET:
        return None
    return start


def section(buf: bytes, offset: int, pid: int) -> bytes | None:
    """The first PSI section carried on `pid` (PAT and PMT fit one packet in practice)."""
    for position in pusi_packets(buf, offset, pid):
        start = payload_start(buf, position)
        if start is None:
            continue
        start += 1 + buf[start]  # pointer_field
        end = position + PACKET
        if start + 3 > end:
            continue
        length = ((buf[start + 1] & 0x0F) << 8) | buf[start + 2]
        return buf[start : min(end, start + 3 + length)]
    return None


def read_timestamp(buf: bytes, at: int) -> int:
    return (
        ((buf[at] >> 1) & 0x07) << 30
        | buf[at + 1] << 22
        | (buf[at + 2] >> 1) << 15
        | buf[at + 3] << 7
        | buf[at + 4] >> 1
    )


def pes_times(buf: bytes, offset: int, pid: int) -> list[tuple[int, int]]:
    """(pts, dts) of each PES of `pid` that starts in `buf`, in file order."""
    times = []
    for position in pusi_packets(buf, offset, pid):
        start = payload_start(buf, position)
        if start is None or start + 19 > position + PACKET or buf[start : start + 3] != b"\0\0\1":
            continue
        flags = buf[start + 7] >> 6
        if not flags & 2:
            continue
        pts = read_timestamp(buf, start + 9)
        dts = read_timestamp(buf, start + 14) if flags == 3 else pts
        times.append((pts, dts))
    return times


def streams(head: bytes) -> tuple[int, str, bool]:
    """(video PID, video codec, has audio) from the PAT and PMT at the head of a file."""
    pat = section(head, 0, 0)
    if pat is None or len(pat) < 12:
        raise ProbeError("MPEG-TS without a program table in its first 64 KiB")
    pmt_pid = None
    for at in range(8, len(pat) - 4 - 3, 4):
        if (pat[at] << 8 | pat[at + 1]) != 0:
            pmt_pid = ((pat[at + 2] & 0x1F) << 8) | pat[at + 3]
            break
    pmt = section(head, 0, pmt_pid) if pmt_pid is not None else None
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


def keyframes_in(data: bytes, video_pid: int) -> list[int]:
    """PTS of the video PES packets in `data` (whole packets) flagged as random access."""
    found = []
    for position in pusi_packets(data, 0, video_pid):
        control = data[position + 3] >> 4
        if control & 2 and data[position + 4] and data[position + 5] & 0x40:
            start = payload_start(data, position)
            if start is not None and start + 14 <= position + PACKET and data[start + 7] & 0x80:
                found.append(read_timestamp(data, start + 9))
    return found


def file_keyframes(fd: int, size: int, video_pid: int) -> list[int]:
    """`keyframes_in` over a whole file, read in bounded chunks of whole packets."""
    found: list[int] = []
    for position in range(0, size, _CHUNK):
        found.extend(keyframes_in(os.pread(fd, _CHUNK, position), video_pid))
    return found


def ts_end_counters(path: Path | str) -> dict[int, int]:
    """The last continuity counter of every PID in an MPEG-TS file (from its tail)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 65536, 0)
        wanted = {
            ((head[at + 1] & 0x1F) << 8) | head[at + 2] for at in range(0, len(head) - 187, PACKET)
        }
        wanted.discard(0x1FFF)  # null packets carry no counter
        found: dict[int, int] = {}
        end = size - size % PACKET
        window = 32768 - 32768 % PACKET
        while end > 0 and not wanted <= found.keys():
            start = max(0, end - window)
            window = min(window * 4, 1 << 20)
            chunk = os.pread(fd, end - start, start)
            for at in range(len(chunk) - PACKET, -1, -PACKET):
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
