"""MPEG-TS at the packet level: program tables, PES timestamps, keyframes and continuity
counters, read straight from the bytes (ISO/IEC 13818-1).

PTS, DTS and PCR bases are 33-bit counters of a 90 kHz clock; `pts_delta` is the one place
that does their wrapping arithmetic.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ProbeError
from .files import opened

PACKET = 188
PTS_WRAP = 1 << 33  # PTS and DTS are 33-bit counters of a 90 kHz clock
CLOCK = 90_000
NULL_PID = 0x1FFF
_VIDEO_TYPES = {0x1B: "h264", 0x24: "hevc", 0x02: "mpeg2video", 0x10: "mpeg4"}
_AUDIO_TYPES = {0x03, 0x04, 0x0F, 0x11, 0x81, 0x87}
_CHUNK = (1 << 20) - (1 << 20) % PACKET  # whole packets read at a time
_SCAN_CHUNK = PACKET * 349  # about 64 KiB: a scan for the next keyframe reads little more
_LATE_AUDIO_LIMIT = 4 << 20  # how far after a cut the audio of before it is looked for


def pts_delta(later: int, earlier: int) -> int:
    """`later - earlier` for 33-bit timestamps, taking the shorter way round the wrap.

    ISO/IEC 13818-1 2.4.3.7: PTS and DTS are 33 bits of a 90 kHz clock."""
    return (later - earlier + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2


def pusi_packets(buf: bytes, offset: int, pid: int) -> Iterator[int]:
    """Offsets of the packets of `pid` that start a PES or a section, in order.

    Works on every 188th byte at once (bytes.find runs in C), so a megabyte costs
    microseconds rather than a Python loop over 5,000 packets.

    ISO/IEC 13818-1 2.4.3.2: sync_byte 0x47, payload_unit_start_indicator, PID."""
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
    """ISO/IEC 13818-1 2.4.3.2 adaptation_field_control, 2.4.3.4 adaptation_field_length."""
    control = (buf[position + 3] >> 4) & 3
    start = position + 4
    if control & 2:
        start += 1 + buf[position + 4]
    if not control & 1 or start >= position + PACKET:
        return None
    return start


def section(buf: bytes, offset: int, pid: int) -> bytes | None:
    """The first PSI section carried on `pid` (PAT and PMT fit one packet in practice).

    ISO/IEC 13818-1 2.4.4.2 pointer_field, 2.4.4.3 and 2.4.4.8 section_length."""
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
    """ISO/IEC 13818-1 2.4.3.7: 33 bits in five bytes, with marker bits."""
    return (
        ((buf[at] >> 1) & 0x07) << 30
        | buf[at + 1] << 22
        | (buf[at + 2] >> 1) << 15
        | buf[at + 3] << 7
        | buf[at + 4] >> 1
    )


def keyframe_dts(path: Path | str, offset: int) -> int | None:
    """The DTS of the PES that starts in the packet at `offset` of a file (a cut's
    keyframe), or None if there is none there."""
    with opened(path) as (fd, _):
        packet = os.pread(fd, PACKET, offset)
    if len(packet) < PACKET or packet[0] != 0x47:
        return None
    times = pes_times(packet, 0, ((packet[1] & 0x1F) << 8) | packet[2])
    return times[0][1] if times else None


def pes_times(buf: bytes, offset: int, pid: int) -> list[tuple[int, int]]:
    """(pts, dts) of each PES of `pid` that starts in `buf`, in file order.

    ISO/IEC 13818-1 2.4.3.6 PES header, 2.4.3.7 PTS_DTS_flags (2: PTS, 3: PTS and DTS)."""
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


@dataclass(frozen=True)
class Program:
    """What the PAT and PMT at the head of a file say.

    ISO/IEC 13818-1 2.4.4.8: the elementary streams' stream_type (table 2-34) and PIDs."""

    pmt_pid: int
    video_pid: int
    video_codec: str
    audio_pid: int | None
    signature: str  # "pid:stream_type" of every stream: a change means new decoders


def program(head: bytes) -> Program:
    """The program of an MPEG-TS file from the PAT and PMT in its first bytes.

    ISO/IEC 13818-1 2.4.4.3 program_association_section, 2.4.4.8 TS_program_map_section."""
    pat = section(head, 0, 0)
    if pat is None or len(pat) < 12:
        raise ProbeError("MPEG-TS without a program table in its first 64 KiB")
    pmt_pid = None
    for at in range(8, len(pat) - 4 - 3, 4):
        if (pat[at] << 8 | pat[at + 1]) != 0:
            pmt_pid = ((pat[at + 2] & 0x1F) << 8) | pat[at + 3]
            break
    pmt = section(head, 0, pmt_pid) if pmt_pid is not None else None
    if pmt_pid is None or pmt is None or len(pmt) < 12:
        raise ProbeError("MPEG-TS without a program map in its first 64 KiB")
    video_pid, codec, audio_pid = None, "", None
    found = []
    at = 12 + (((pmt[10] & 0x0F) << 8) | pmt[11])
    while at + 5 <= len(pmt) - 4:
        stream_type = pmt[at]
        pid = ((pmt[at + 1] & 0x1F) << 8) | pmt[at + 2]
        found.append(f"{pid}:{stream_type:02x}")
        if stream_type in _VIDEO_TYPES and video_pid is None:
            video_pid, codec = pid, _VIDEO_TYPES[stream_type]
        if stream_type in _AUDIO_TYPES and audio_pid is None:
            audio_pid = pid
        at += 5 + (((pmt[at + 3] & 0x0F) << 8) | pmt[at + 4])
    if video_pid is None:
        raise ProbeError("MPEG-TS without a video stream")
    return Program(pmt_pid, video_pid, codec, audio_pid, ",".join(found))


def keyframes_in(data: bytes, video_pid: int, base: int = 0) -> list[tuple[int, int]]:
    """(PTS, byte offset + `base`) of the video PES packets in `data` (whole packets)
    flagged as random access points.

    ISO/IEC 13818-1 2.4.3.5: random_access_indicator in the adaptation field."""
    found = []
    for position in pusi_packets(data, 0, video_pid):
        control = data[position + 3] >> 4
        if control & 2 and data[position + 4] and data[position + 5] & 0x40:
            start = payload_start(data, position)
            if start is not None and start + 14 <= position + PACKET and data[start + 7] & 0x80:
                found.append((read_timestamp(data, start + 9), base + position))
    return found


def file_keyframes(fd: int, size: int, video_pid: int) -> list[tuple[int, int]]:
    """`keyframes_in` over a whole file, read in bounded chunks of whole packets."""
    found: list[tuple[int, int]] = []
    for position in range(0, size, _CHUNK):
        found.extend(keyframes_in(os.pread(fd, _CHUNK, position), video_pid, position))
    return found


def keyframes_from(fd: int, size: int, video_pid: int, offset: int) -> Iterator[tuple[int, int]]:
    """(PTS, byte offset) of the keyframes from `offset` (a packet boundary) on, in file
    order, read a small chunk at a time: the caller stops reading when it has enough."""
    position = offset - offset % PACKET
    while position < size:
        chunk = os.pread(fd, _SCAN_CHUNK, position)
        if not chunk:
            return
        yield from keyframes_in(chunk[: len(chunk) - len(chunk) % PACKET], video_pid, position)
        position += len(chunk) - len(chunk) % PACKET
        if len(chunk) < PACKET:
            return


NULL_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * (PACKET - 4)


def early_audio(fd: int, size: int, audio_pid: int, offset: int, pts: int) -> tuple[int, ...]:
    """Offsets of the audio packets from `offset` on that belong before `pts`: the tail of
    an audio PES begun before `offset`, and whole PES presented before `pts` (a muxer may
    write audio a few hundred milliseconds after the video of the same time). They end
    at the first audio PES presented at or after `pts`."""
    found: list[int] = []
    position = offset - offset % PACKET
    while position < min(size, offset + _LATE_AUDIO_LIMIT):
        chunk = os.pread(fd, _SCAN_CHUNK, position)
        chunk = chunk[: len(chunk) - len(chunk) % PACKET]
        if not chunk:
            break
        for at in range(0, len(chunk), PACKET):
            if chunk[at] != 0x47 or ((chunk[at + 1] & 0x1F) << 8 | chunk[at + 2]) != audio_pid:
                continue
            start = payload_start(chunk, at) if chunk[at + 1] & 0x40 else None  # a PES
            if (
                start is not None
                and start + 14 <= at + PACKET
                and chunk[start + 7] & 0x80
                and pts_delta(read_timestamp(chunk, start + 9), pts) >= 0
            ):
                return tuple(found)
            found.append(position + at)
        position += len(chunk)
    return ()  # no audio at or after `pts` near here: leave the stream as it is


def last_pusi_before(fd: int, offset: int, pid: int) -> int | None:
    """Offset of the last packet of `pid` that starts a section or PES before `offset`."""
    end = offset - offset % PACKET
    window = _SCAN_CHUNK  # tables repeat often: look close first, then further back
    while end > 0:
        start = max(0, end - window)
        found = list(pusi_packets(os.pread(fd, end - start, start), 0, pid))
        if found:
            return start + found[-1]
        end = start
        window = min(window * 4, _CHUNK)
    return None


def _has_payload(header_byte3: int) -> bool:
    return bool(header_byte3 & 0x10)


_PID_HIGH = bytes(n & 0x1F for n in range(256))  # a header's second byte: the PID's top bits
_PAYLOAD = bytes(1 if n & 0x10 else 0 for n in range(256))  # adaptation_field_control's bit


def counters(data: bytes, last: bool = False) -> dict[int, int]:
    """The first (or last) continuity counter of each PID's payload packets in `data`.

    Every packet's PID is gathered at C speed (strided slices, `bytes.translate`) and each
    PID looked for with `find`: a file's head is thousands of packets of a few PIDs.

    ISO/IEC 13818-1 2.4.3.3: continuity_counter counts a PID's packets with a payload, mod 16."""
    count = len(data) // PACKET
    end = count * PACKET
    pids = bytearray(2 * count)  # each packet's PID, two bytes, big-endian
    pids[0::2] = data[1:end:PACKET].translate(_PID_HIGH)
    pids[1::2] = data[2:end:PACKET]
    flags = data[3:end:PACKET]
    payload = flags.translate(_PAYLOAD)
    found: dict[int, int] = {}
    for value in set(memoryview(pids).cast("H")):  # each PID once (native byte order)
        key = value.to_bytes(2, sys.byteorder)
        pid = int.from_bytes(key, "big")
        if pid == NULL_PID:
            continue
        at = len(pids) if last else 0
        while True:  # the first (last) packet of this PID with a payload
            at = pids.rfind(key, 0, at) if last else pids.find(key, at)
            if at < 0:
                break
            if at % 2 == 0 and payload[at // 2]:
                found[pid] = flags[at // 2] & 0x0F
                break
            at += 1  # on past this byte (a match across two PIDs, or no payload)
    return found


def end_counters(
    fd: int, size: int, pids: set[int], tail: tuple[bytes, int] | None = None
) -> dict[int, int]:
    """The last continuity counter of each of `pids`, read from the tail of a file
    (`tail`: its last bytes already read, from this offset, looked in first)."""
    found: dict[int, int] = {}
    end = size - size % PACKET
    window = 32768 - 32768 % PACKET
    if tail is not None:
        data, start = tail
        first = -start % PACKET  # the first whole packet of `data`
        start += first
        if start < end:
            found = counters(data[first : end - start + first], last=True)
            end = start
    while end > 0 and not pids <= found.keys():
        start = max(0, end - window)
        window = min(window * 4, _CHUNK)
        for pid, counter in counters(os.pread(fd, end - start, start), last=True).items():
            found.setdefault(pid, counter)
        end = start
    return {pid: found[pid] for pid in pids if pid in found}


def encode_counters(first: dict[int, int], last: dict[int, int]) -> str:
    """Each PID's first and last counter as "pid:first:last,..." (for the index)."""
    return ",".join(f"{pid}:{first[pid]}:{last[pid]}" for pid in sorted(first) if pid in last)


@functools.lru_cache(maxsize=4096)
def decode_counters(text: str) -> tuple[tuple[int, int, int], ...]:
    """(PID, first, last counter) of each PID, from `encode_counters`' text. Kept: a day's
    plan reads 8,641 of them, mostly the same few hundred strings."""
    found = []
    for part in text.split(",") if text else ():
        pid, first, last = part.split(":")
        found.append((int(pid), int(first), int(last)))
    return tuple(found)


# ISO/IEC 14496-3 1.6.3.4 Table 1.18 samplingFrequencyIndex (13 to 15: none in ADTS).
ADTS_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


def pes_payload(buf: bytes, position: int, pid: int, most: int = 0) -> bytes:
    """The payload of the PES of `pid` that starts in the packet at `position`, as far as
    `buf` holds it (its header skipped); with `most`, once that many bytes are gathered
    (about: whole packets).

    ISO/IEC 13818-1 2.4.3.6: packet_start_code_prefix, then PES_header_data_length."""
    data = bytearray()
    at = position
    while at + PACKET <= len(buf) and not (most and len(data) >= most):
        if (((buf[at + 1] & 0x1F) << 8) | buf[at + 2]) == pid:
            if at != position and buf[at + 1] & 0x40:
                break  # the next PES starts
            start = payload_start(buf, at)
            if start is not None:
                data += buf[start : at + PACKET]
        at += PACKET
    if len(data) < 9 or data[:3] != b"\0\0\1":
        return b""
    return bytes(data[9 + data[8] :])


# Per codec: where a NAL unit's header keeps its type (mask, shift), the types of the
# parameter sets (H.264: SPS and PPS; HEVC: VPS, SPS and PPS), and the types of a picture's
# coded slices (VCL NAL units), which come after its parameter sets.
_PARAMETER_SETS = {
    "h264": (0x1F, 0, {7, 8}, range(1, 6)),
    "hevc": (0x7E, 1, {32, 33, 34}, range(0, 32)),
}


def parameter_sets(payload: bytes, codec: str, cut: bool = False) -> bytes | None:
    """The parameter set NAL units in a video PES payload (Annex B), concatenated: what
    a decoder is configured with (resolution, profile, ...). Empty if there are none.
    `cut`: the payload's head alone; None if that cannot tell (no coded slice in it yet:
    a parameter set may come, or go on, past it).

    ITU-T H.264 7.4.1.2 (nal_unit_type 7, 8), H.265 7.4.2.2 (32, 33, 34); Annex B start codes."""
    kind = _PARAMETER_SETS.get(codec)
    if kind is None:
        return b""
    mask, shift, wanted, slices = kind
    found = bytearray()
    start = payload.find(b"\0\0\1")
    while start >= 0 and start + 3 < len(payload):
        following = payload.find(b"\0\0\1", start + 3)
        end = len(payload) if following < 0 else following
        kind_of = (payload[start + 3] & mask) >> shift
        if cut and kind_of in slices:
            return bytes(found)  # the picture's parameter sets are all before it
        if kind_of in wanted:
            found += payload[start + 3 : end].rstrip(b"\0")  # a 4-byte start code's zero
        start = following
    return None if cut else bytes(found)


def adts_ticks(payload: bytes) -> int | None:
    """How long the whole ADTS (AAC) frames at the start of `payload` play, in 90 kHz
    ticks; None if it does not start with one.

    ISO/IEC 13818-7 6.2 (ADTS): sampling_frequency_index, aac_frame_length,
    number_of_raw_data_blocks."""
    at, ticks = 0, 0
    while at + 7 <= len(payload) and payload[at] == 0xFF and payload[at + 1] & 0xF6 == 0xF0:
        rate_index = (payload[at + 2] >> 2) & 0x0F
        length = ((payload[at + 3] & 0x03) << 11) | (payload[at + 4] << 3) | (payload[at + 5] >> 5)
        if rate_index >= len(ADTS_RATES) or length < 7 or at + length > len(payload):
            break
        samples = 1024 * ((payload[at + 6] & 0x03) + 1)
        ticks += samples * CLOCK // ADTS_RATES[rate_index]
        at += length
    return ticks if at else None


# --- rewriting served packets ---------------------------------------------------------

_PUSI_MASK = bytes(1 if byte & 0x40 else 0 for byte in range(256))
_AF_MASK = bytes(1 if byte & 0x20 else 0 for byte in range(256))
_ONE = re.compile(b"\x01")
# PES stream ids without the optional header (ISO/IEC 13818-1 table 2-21): no timestamps.
_NO_PES_HEADER = {0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF}


def _shift_timestamp(buf: bytearray, at: int, shift: int) -> None:
    """ISO/IEC 13818-1 2.4.3.7: the marker bits kept."""
    value = (read_timestamp(buf, at) + shift) % PTS_WRAP
    buf[at] = (buf[at] & 0xF1) | ((value >> 29) & 0x0E)
    buf[at + 1] = (value >> 22) & 0xFF
    buf[at + 2] = ((value >> 14) & 0xFE) | (buf[at + 2] & 0x01)
    buf[at + 3] = (value >> 7) & 0xFF
    buf[at + 4] = ((value << 1) & 0xFE) | (buf[at + 4] & 0x01)


def _shift_pcr(buf: bytearray, at: int, shift: int) -> None:
    """ISO/IEC 13818-1 2.4.3.5: program_clock_reference_base (33 bits), its extension kept."""
    base = buf[at] << 25 | buf[at + 1] << 17 | buf[at + 2] << 9 | buf[at + 3] << 1
    base = ((base | buf[at + 4] >> 7) + shift) % PTS_WRAP
    buf[at : at + 4] = (base >> 1).to_bytes(4, "big")
    buf[at + 4] = ((base & 1) << 7) | (buf[at + 4] & 0x7F)


@functools.cache
def _counter_table(delta: int) -> bytes:
    """bytes.translate table: a header's fourth byte with its counter moved by `delta`."""
    return bytes((c & 0xF0) | ((c + delta) & 0x0F) for c in range(256))


@functools.cache
def _not_low(low: int) -> bytes:
    """translate table: 0 for a PID's low byte `low`, 1 for any other."""
    return bytes(0 if byte == low else 1 for byte in range(256))


@functools.cache
def _not_high(high: int) -> bytes:
    """translate table: 0 for a header's second byte whose PID bits are `high`, else 1."""
    return bytes(0 if byte & 0x1F == high else 1 for byte in range(256))


_IDENTITY = _counter_table(0)
_PID_HIGH = bytes(byte & 0x1F for byte in range(256))


def _shift_counters(b1: bytes, b2: bytes, b3: bytes, cc_shift: dict[int, int]) -> bytes:
    """The fourth header byte of each packet with its PID's counter shift applied.

    The PID with the most packets (the video) is done for every packet at once in C
    (bytes.translate); only the other packets, a few percent, are looked at one by one.
    """
    tables = {pid: _counter_table(delta) for pid, delta in cc_shift.items() if delta}
    high_bytes = b1.translate(_PID_HIGH)
    # How many packets each PID has, at most: PAT, PMT and video often share a low byte.
    main = max(tables, key=lambda pid: min(b2.count(pid & 0xFF), high_bytes.count(pid >> 8)))
    high, low = main >> 8, main & 0xFF
    others = int.from_bytes(b2.translate(_not_low(low)), "big") | int.from_bytes(
        b1.translate(_not_high(high)), "big"
    )
    result = bytearray(b3.translate(tables[main]))
    for match in _ONE.finditer(others.to_bytes(len(b3), "big")):
        n = match.start()
        result[n] = tables.get(((b1[n] & 0x1F) << 8) | b2[n], _IDENTITY)[b3[n]]
    return bytes(result)


def rewrite(buf: bytearray, shift: int, cc_shift: dict[int, int]) -> None:
    """Move every PTS, DTS and PCR in `buf` (whole packets) by `shift` ticks, and every
    continuity counter of a PID by `cc_shift[pid]`, in place: same length, same offsets."""
    count = len(buf) // PACKET
    b1 = bytes(buf[1 : count * PACKET : PACKET])
    b3 = bytes(buf[3 : count * PACKET : PACKET])
    if any(cc_shift.values()):
        buf[3 : count * PACKET : PACKET] = _shift_counters(
            b1, bytes(buf[2 : count * PACKET : PACKET]), b3, cc_shift
        )
    if not shift % PTS_WRAP:
        return
    for match in _ONE.finditer(b3.translate(_AF_MASK)):
        at = match.start() * PACKET
        if buf[at] == 0x47 and buf[at + 4] >= 7 and buf[at + 5] & 0x10:
            _shift_pcr(buf, at + 6, shift)
    for match in _ONE.finditer(b1.translate(_PUSI_MASK)):
        at = match.start() * PACKET
        if buf[at] != 0x47:
            continue
        start = payload_start(buf, at)
        if (
            start is None
            or start + 19 > at + PACKET
            or buf[start : start + 3] != b"\0\0\1"
            or buf[start + 3] in _NO_PES_HEADER
        ):
            continue  # a PSI section, or a PES header split across packets: left alone
        flags = buf[start + 7] >> 6
        if flags & 2:
            _shift_timestamp(buf, start + 9, shift)
        if flags == 3:
            _shift_timestamp(buf, start + 14, shift)


def _split(packet: bytes, extra: int) -> list[bytes]:
    """`packet` as 1 + `extra` packets carrying the same payload bytes (the last `extra`
    bytes one per packet), so that its PID's packet count grows by `extra` while every
    demuxer reads the same PES or section (the counters are set afterwards)."""
    start = payload_start(packet, 0)
    if start is None:
        raise ProbeError("a packet without a payload cannot be split")
    payload = packet[start:]
    keep = len(payload) - extra
    field = packet[4:start]  # the adaptation field, with its length byte, or nothing
    room = PACKET - 4 - keep  # adaptation field bytes the first packet needs
    if field:
        field = bytes((room - 1,)) + field[1:] + b"\xff" * (room - len(field))
    else:
        field = b"\x00" if room == 1 else bytes((room - 1, 0)) + b"\xff" * (room - 2)
    header = bytes((packet[0], packet[1], packet[2], (packet[3] & 0xC0) | 0x30))
    pieces = [header + field + payload[:keep]]
    follow = bytes((0x47, packet[1] & 0x9F, packet[2], (packet[3] & 0xC0) | 0x30))
    stuffing = bytes((182, 0)) + b"\xff" * 181
    pieces.extend(follow + stuffing + payload[keep + n : keep + n + 1] for n in range(extra))
    return pieces


def renumber(data: bytes) -> bytes:
    """A whole MPEG-TS file whose every PID's counters run from 0 and end at 15, so that
    any such file follows any other without a discontinuity. The counts are made
    multiples of 16 by splitting one packet of each PID into several (no payload added)."""
    count = len(data) // PACKET
    packets = [data[n * PACKET : (n + 1) * PACKET] for n in range(count)]
    totals: dict[int, int] = {}
    for packet in packets:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid != NULL_PID and _has_payload(packet[3]):
            totals[pid] = totals.get(pid, 0) + 1
    missing = {pid: -total % 16 for pid, total in totals.items() if total % 16}
    out: list[bytes] = []
    counter: dict[int, int] = {}
    for packet in packets:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        pieces = [packet]
        extra = missing.get(pid, 0)
        if extra and _has_payload(packet[3]):
            start = payload_start(packet, 0)
            if start is not None and PACKET - start > extra:
                pieces = _split(packet, extra)
                del missing[pid]
        for piece in pieces:
            if pid == NULL_PID:
                out.append(piece)
                continue
            if _has_payload(piece[3]):
                counter[pid] = (counter.get(pid, -1) + 1) & 0x0F
            value = counter.get(pid, 0)
            out.append(piece[:3] + bytes(((piece[3] & 0xF0) | value,)) + piece[4:])
    return b"".join(out) + data[count * PACKET :]
