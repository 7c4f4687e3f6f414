"""Sample tables: each video and audio sample of a recording, when it decodes and shows,
how many bytes it is as an MP4 sample, and where those bytes are in the recording.

What an MP4 built from the recordings' own sample data needs (ISO/IEC 14496-12 8.6, 8.7):
from a plain MP4, its `moov`'s tables; from a fragmented one, its `moof`s' track runs;
from MPEG-TS, a scan of the file, each PES with a PTS a sample (Annex B NAL units given
4-byte lengths, ISO/IEC 14496-15 5.3.2 / 8.3.2; each ADTS frame's raw data an AAC
sample, ISO/IEC 14496-3 1.A.2). `sample_bytes` gives the samples' bytes as an MP4
holds them, read again from the recording, checked against the table.

Tables are compact (the array module): about 23 bytes a video sample and 18 an audio
one. `encode` and `decode` keep them on disk (samplestore.py).
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import os
import re
import sys
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import mp4, mpegts, nal
from .errors import CORRUPT, ProbeError, total
from .mp4 import (
    MAX_TRACK_SAMPLES,
    boxes,
    child,
    read_box,
    table_entries,
    top_level,
    traf_entries,
    u32,
    u64,
)
from .mpegts import CLOCK, PACKET, pts_delta
from .progressive import audio_entry, visual_entry

# The readers' own version: a change to what they make of the same recording changes it,
# so that tables kept on disk are read anew, and exports' entity tags change.
TABLES_VERSION = 2
# The largest sample (or PES) taken: a frame of 8K video is a few MB.
MAX_SAMPLE = 64 << 20
# MPEG-TS read a few hundred kilobytes at a time, whole packets, into buffers kept for
# the next read (a buffer this size made anew each time is mapped and faulted in anew).
_READ = PACKET * 2048
_SPARE: list[bytearray] = []
_SPARE_KEPT = 4
_NOT_SYNC = 0x10000  # sample_is_non_sync_sample (ISO/IEC 14496-12 8.8.3.1)
# NAL unit types of a random access point: H.264 IDR (7.4.1.2.4, type 5); H.265 IRAP
# (7.4.2.2, types 16 to 21: BLA, IDR, CRA).
_SYNC_TYPES = {"h264": frozenset({5}), "hevc": frozenset(range(16, 22))}
# Parameter set NAL unit types: H.264 SPS 7, PPS 8; H.265 VPS 32, SPS 33, PPS 34.
_PARAMETER_TYPES = {"h264": (7, 8), "hevc": (32, 33, 34)}


@dataclass(slots=True, eq=False)
class Table:
    """One track's samples, in decode order."""

    handler: bytes  # b"vide" or b"soun" (ISO/IEC 14496-12 8.4.3 handler_type)
    codec: str  # "h264", "hevc", "aac", or an MP4 entry's own name
    timescale: int  # ticks a second of `dts` and `cto`
    entry: bytes  # the MP4 sample entry (avc1, hvc1, mp4a...) its samples decode with
    width: int = 0
    height: int = 0
    dts: array[int] = field(default_factory=lambda: array("q"))  # unwrapped decode times
    # Video: presentation - decode, and 1 for a sync sample. Audio: none (every sample is
    # a sync sample, shown as decoded).
    cto: array[int] = field(default_factory=lambda: array("i"))
    sizes: array[int] = field(default_factory=lambda: array("I"))  # bytes as an MP4 sample
    sync: bytearray = field(default_factory=bytearray)
    # MP4: the file offset of each sample's bytes. MPEG-TS: of its PES's first packet.
    at: array[int] = field(default_factory=lambda: array("q"))
    # MPEG-TS audio: where its raw AAC data begins in its PES's payload. MPEG-TS video:
    # where its last NAL unit begins in its access unit's bytes (0: look for it), so that
    # reading it again looks for start codes before there only (the last unit, a slice,
    # is most of a frame).
    sub: array[int] = field(default_factory=lambda: array("I"))
    end: int = 0  # MPEG-TS: where the last sample's packets end
    last_duration: int = 0  # the last sample's duration (MPEG-TS: the usual step)
    pid: int = 0  # MPEG-TS: the stream's PID
    shift: int = 0  # MP4: presentation = dts + cto + shift (its edit list, 8.6.6)

    def __len__(self) -> int:
        return len(self.dts)

    @property
    def nbytes(self) -> int:
        """About the memory the table takes."""
        arrays = (self.dts, self.cto, self.sizes, self.at, self.sub)
        return sum(a.itemsize * len(a) for a in arrays) + len(self.sync) + len(self.entry)

    def duration(self, n: int) -> int:
        """Sample `n`'s duration: to the next sample's decode time."""
        return self.dts[n + 1] - self.dts[n] if n + 1 < len(self.dts) else self.last_duration


@dataclass(frozen=True)
class Recording:
    """A recording's sample tables: its video's, and its audio's if it has any."""

    container: str  # "mpegts", "mp4" or "fmp4"
    size: int  # the file's bytes when it was read
    video: Table
    audio: Table | None

    @property
    def nbytes(self) -> int:
        return self.video.nbytes + (self.audio.nbytes if self.audio is not None else 0)


@total
def read_recording(fd: int, size: int) -> Recording:
    """The sample tables of the recording open at `fd` (blocking: an MPEG-TS file is read
    whole; an MP4 file's boxes that describe samples). ProbeError for anything that is
    not a recording of H.264 or HEVC video with AAC audio, or none."""
    head = os.pread(fd, 12, 0)
    if head[:1] == b"\x47":
        container = "mpegts"
        video, audio = _ts_tables(fd, size)
    else:
        container, video, audio = _mp4_tables(fd, size)
    return Recording(container, size, _compact(video), audio and _compact(audio))


# --- MP4 and fragmented MP4 --------------------------------------------------------------


def _mp4_tables(fd: int, size: int) -> tuple[str, Table, Table | None]:
    """ISO/IEC 14496-12 8.2.1 moov, 8.8.4 moof, 8.1.1 mdat."""
    moov: bytes | None = None
    fragmented = False
    wanted: list[tuple[mp4.Track, Table]] = []
    decode: dict[int, int] = {}  # track ID -> the next sample's decode time (fragmented)
    for kind, start, body, end in top_level(fd, size):
        if kind == b"moov":
            moov = read_box(fd, body, end)
            tracks, fragmented = mp4.read_tracks(moov, size)
            video = next((t for t in tracks if t.handler == b"vide" and t.timescale), None)
            if video is None:
                raise ProbeError("MP4 without a video track")
            audio = next((t for t in tracks if t.handler == b"soun" and t.timescale), None)
            for track in (video, audio):
                if track is not None:
                    wanted.append((track, _mp4_table(moov, track)))
            if not fragmented:
                for track, table in wanted:
                    _plain_table(moov, track, table, size)
                break
        elif kind == b"moof" and moov is not None:
            moof = read_box(fd, body, end)
            for track, table in wanted:
                # Every sample takes at least a byte of the file: no more than that many.
                room = size - sum(len(t) for _, t in wanted)
                limit = min(room, MAX_TRACK_SAMPLES - len(table))
                tfdt, entries = traf_entries(moof, start, track, limit)
                if not entries:
                    continue
                dts = tfdt if child_tfdt(moof, track.track_id) else decode.get(track.track_id, 0)
                if any(length > MAX_SAMPLE for _, length, _, _, _ in entries):
                    raise ProbeError("an MP4 sample too large for one")
                if any(data_at + length > size for _, length, _, _, data_at in entries):
                    return _finish_mp4(fragmented, wanted)  # cut short: its whole fragments
                for duration, length, flags, offset, data_at in entries:
                    _add(table, dts, offset, length, not flags & _NOT_SYNC, data_at)
                    dts += duration
                    table.last_duration = duration
                decode[track.track_id] = dts
    if moov is None or not wanted:
        raise ProbeError("MP4 without a moov box")
    return _finish_mp4(fragmented, wanted)


def _finish_mp4(
    fragmented: bool, wanted: list[tuple[mp4.Track, Table]]
) -> tuple[str, Table, Table | None]:
    tables = [table for _, table in wanted]
    if not len(tables[0]):
        raise ProbeError("MP4 without video samples")
    audio_table = tables[1] if len(tables) > 1 and len(tables[1]) else None
    return ("fmp4" if fragmented else "mp4"), tables[0], audio_table


def child_tfdt(moof: bytes, track_id: int) -> bool:
    """Whether `track_id`'s traf in a moof states its decode time (ISO/IEC 14496-12
    8.8.12 tfdt)."""
    for kind, body, end in boxes(moof, 0, len(moof)):
        if kind != b"traf":
            continue
        tfhd = child(moof, body, end, b"tfhd")
        if tfhd is not None and u32(moof, tfhd[0] + 4) == track_id:
            return child(moof, body, end, b"tfdt") is not None
    return False


def _add(table: Table, dts: int, cto: int, size: int, sync: bool, at: int) -> None:
    table.dts.append(dts)
    if table.handler == b"vide":  # audio: every sample a sync sample, shown as decoded
        table.cto.append(cto)
        table.sync.append(sync)
    table.sizes.append(size)
    table.at.append(at)


def _compact(table: Table) -> Table:
    """The table in the narrowest arrays that hold it: 32-bit offsets in a file under
    4 GiB, 16-bit places in a PES payload under 64 KiB."""
    if table.at.typecode == "q" and table.at and max(table.at) < 1 << 32:
        table.at = array("I", table.at)
    if table.sub.typecode == "I" and table.sub and max(table.sub) < 1 << 16:
        table.sub = array("H", table.sub)
    return table


def _mp4_table(moov: bytes, track: mp4.Track) -> Table:
    """An empty table for `track`, with its sample entry: an HEVC `hev1` named `hvc1`
    (Safari plays only that) and the file's own bit rate box (btrt) left out, so that
    recordings of one stream share one entry (ISO/IEC 14496-12 8.5.2 stsd, 8.5.2.2 btrt;
    ISO/IEC 14496-15 8.4.1 hvc1/hev1)."""
    at = track.entry_at - 4
    if at < 0 or at + 8 > len(moov):
        raise ProbeError("MP4 track without a sample entry")
    entry = moov[at : at + u32(moov, at)]
    if len(entry) < 16:
        raise ProbeError("MP4 sample entry cut short")
    fields = 78 if track.handler == b"vide" else 28  # Visual/AudioSampleEntry's own fields
    kept = entry[: 8 + fields]
    at = 8 + fields
    while at + 8 <= len(entry):
        length = u32(entry, at)
        if length < 8 or at + length > len(entry):
            break
        if entry[at + 4 : at + 8] != b"btrt":
            kept += entry[at : at + length]
        at += length
    kept = kept[:4] + nal.served_tag(kept[4:8].decode("latin-1")).encode("latin-1") + kept[8:]
    if kept[4:8] == b"mp4a":  # made anew: each file states its own bit rate in its esds
        config = nal.audio_specific_config(kept)
        if config is not None:
            channels = int.from_bytes(entry[24:26], "big")
            kept = audio_entry(track.timescale, channels, config)
    kept = len(kept).to_bytes(4, "big") + kept[4:]
    width = int.from_bytes(entry[32:34], "big") if track.handler == b"vide" else 0
    height = int.from_bytes(entry[34:36], "big") if track.handler == b"vide" else 0
    table = Table(track.handler, track.codec, track.timescale, kept, width, height)
    table.shift = track.shift
    return table


def _plain_table(moov: bytes, track: mp4.Track, table: Table, size: int) -> None:
    """A plain MP4 track's samples from its sample table (ISO/IEC 14496-12 8.6.1.2 stts,
    8.6.1.3 ctts, 8.6.2 stss, 8.7.3 stsz, 8.7.4 stsc, 8.7.5 stco/co64), each sample's
    bytes checked to lie inside the file."""
    stbl = _stbl(moov, track)
    limit = min(size, MAX_TRACK_SAMPLES)
    stts = table_entries(moov, child(moov, *stbl, b"stts"), 2, limit)
    ctts_box = child(moov, *stbl, b"ctts")
    ctts = table_entries(moov, ctts_box, 2, limit)
    signed = ctts_box is not None and moov[ctts_box[0]] == 1
    stss_box = child(moov, *stbl, b"stss")
    sync = None if stss_box is None else {n for (n,) in table_entries(moov, stss_box, 1, limit)}
    sizes = _sizes(moov, child(moov, *stbl, b"stsz"), limit)
    offsets = _chunk_offsets(moov, stbl, limit)
    stsc = table_entries(moov, child(moov, *stbl, b"stsc"), 3, limit)
    count = len(sizes)
    if sum(n for n, _ in stts) != count:
        raise ProbeError("MP4 time table and size table disagree")
    durations = array("q")
    for n, duration in stts:
        durations.extend([duration] * n)
    compositions = array("q")
    for n, offset in ctts:
        if signed and offset >= 1 << 31:
            offset -= 1 << 32
        compositions.extend([offset] * n)
    compositions.extend([0] * max(0, count - len(compositions)))
    firsts = [entry[0] for entry in stsc]
    if firsts and (firsts[0] != 1 or any(b <= a for a, b in itertools.pairwise(firsts))):
        raise ProbeError("corrupt MP4 chunk table: its runs do not follow one another")
    dts = sample = 0
    for run, (first, per_chunk, _) in enumerate(stsc):
        if sample >= count:
            break
        last = stsc[run + 1][0] - 1 if run + 1 < len(stsc) else len(offsets)
        for chunk in range(first - 1, min(last, len(offsets))):
            if sample >= count:
                break
            at = offsets[chunk]
            for _ in range(per_chunk):
                if sample >= count:
                    break
                length = sizes[sample]
                if at + length > size or length > MAX_SAMPLE:
                    raise ProbeError("MP4 sample past the file's end, or too large for one")
                _add(table, dts, compositions[sample], length,
                     sync is None or sample + 1 in sync, at)  # fmt: skip
                at += length
                dts += durations[sample]
                sample += 1
    if sample != count:
        raise ProbeError("MP4 chunk table holds fewer samples than its size table")
    table.last_duration = durations[-1] if count else 0


def _stbl(moov: bytes, track: mp4.Track) -> tuple[int, int]:
    for kind, body, end in boxes(moov, 0, len(moov)):
        if kind != b"trak":
            continue
        tkhd = child(moov, body, end, b"tkhd")
        if (
            tkhd is None
            or u32(moov, tkhd[0] + (20 if moov[tkhd[0]] == 1 else 12)) != track.track_id
        ):
            continue
        mdia = child(moov, body, end, b"mdia")
        minf = child(moov, *mdia, b"minf") if mdia else None
        stbl = child(moov, *minf, b"stbl") if minf else None
        if stbl is not None:
            return stbl
    raise ProbeError("MP4 track without a sample table")


def _sizes(moov: bytes, box: tuple[int, int] | None, limit: int) -> array[int]:
    """ISO/IEC 14496-12 8.7.3.2 stsz: one size for all samples, or one each."""
    if box is None or box[1] - box[0] < 12:
        raise ProbeError("MP4 track without a sample size table")
    same, count = u32(moov, box[0] + 4), u32(moov, box[0] + 8)
    if count > limit:
        raise ProbeError("corrupt MP4 sample size table")
    if same:
        return array("I", [same]) * count
    at = box[0] + 12
    if at + 4 * count > box[1]:
        raise ProbeError("corrupt MP4 sample size table: more entries than it holds")
    sizes = array("I", moov[at : at + 4 * count])
    if sys.byteorder == "little":
        sizes.byteswap()
    return sizes


def _chunk_offsets(moov: bytes, stbl: tuple[int, int], limit: int) -> list[int]:
    """ISO/IEC 14496-12 8.7.5 stco (32-bit) or co64 (64-bit) chunk offsets."""
    box = child(moov, *stbl, b"stco")
    if box is not None:
        return [n for (n,) in table_entries(moov, box, 1, limit)]
    box = child(moov, *stbl, b"co64")
    if box is None or box[1] - box[0] < 8:
        raise ProbeError("MP4 track without a chunk offset table")
    count = u32(moov, box[0] + 4)
    if count > limit or box[0] + 8 + 8 * count > box[1]:
        raise ProbeError("corrupt MP4 chunk offset table")
    return [u64(moov, box[0] + 8 + 8 * n) for n in range(count)]


# --- MPEG-TS -----------------------------------------------------------------------------


def _ts_tables(fd: int, size: int) -> tuple[Table, Table | None]:
    """Scan an MPEG-TS file: each video PES with a PTS starts a sample (one without a PTS
    continues the one before), each ADTS frame is an audio sample.

    ISO/IEC 13818-1 2.4.3.6 PES; 2.4.3.7 PTS and DTS."""
    head = os.pread(fd, 1 << 16, 0)
    program = mpegts.program(head)
    codec = program.video_codec
    if codec not in _SYNC_TYPES:
        raise ProbeError(f"MPEG-TS video is {codec}, not H.264 or HEVC")
    video = Table(b"vide", codec, CLOCK, b"", pid=program.video_pid)
    audio = None
    if program.audio_pid is not None:
        audio = Table(b"soun", "aac", 0, b"", pid=program.audio_pid)
    state = _TsState(video, audio)
    for offset, pid, pts, dts, data in pes_units(fd, 0, size, program.video_pid,
                                                  program.audio_pid):  # fmt: skip
        if pid == program.video_pid:
            state.video_unit(offset, pts, dts, data)
        elif audio is not None:
            state.audio_unit(offset, pts, data)
    state.finish(size)
    if not len(video):
        raise ProbeError("MPEG-TS without video samples")
    if not video.entry:
        raise ProbeError("MPEG-TS video without parameter sets")
    return video, (audio if audio is not None and len(audio) else None)


# Per header byte value, 1 where it says something of a packet: byte 1's
# payload_unit_start_indicator, byte 3's adaptation field or no payload (a packet whose
# payload is not bytes 4 to 188).
_PUSI = bytes(1 if value & 0x40 else 0 for value in range(256))
_ODD = bytes(1 if value & 0x30 != 0x10 else 0 for value in range(256))
_PID_HIGH = [bytes(1 if value & 0x1F == high else 0 for value in range(256)) for high in range(32)]
_EQUAL = [bytes(1 if value == low else 0 for value in range(256)) for low in range(256)]
_RUN = re.compile(b"\x01+")
_ONE = re.compile(b"\x01")


def _and(a: bytes, b: bytes) -> bytes:
    """Bytewise AND of two strings of 0s and 1s (C speed, through integers)."""
    return (int.from_bytes(a, "little") & int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _or(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _payloads(data: bytearray) -> bytearray:
    """The payloads of whole packets that have no adaptation field: each packet's 4-byte
    header removed, in place, by four strided deletions (C speed)."""
    for stride in (PACKET, PACKET - 1, PACKET - 2, PACKET - 3):
        del data[::stride]
    return data


@dataclass
class _Pid:
    """One PID's PES being gathered, packet run by packet run."""

    pid: int
    stop: int  # no PES that starts at or after this offset
    offset: int = -1  # the open PES's first packet (-1: none open)
    parts: list[bytes | bytearray] = field(default_factory=list)
    done: bool = False
    held: int = 0  # bytes of the open PES

    def _add(self, data: bytes | bytearray) -> None:
        self.held += len(data)
        if self.held > MAX_SAMPLE:
            raise ProbeError(f"an MPEG-TS PES of over {MAX_SAMPLE >> 20} MB")
        self.parts.append(data)

    def feed(
        self, buf: bytearray, base: int, count: int, odd: bytes, pusi: bytes
    ) -> Iterator[tuple[int, list[bytes | bytearray]]]:
        """The PES of this PID that end in `buf` (`count` whole packets at file offset
        `base`): each its first packet's offset and its payload's parts."""
        mine = _and(buf[1::PACKET][:count].translate(_PID_HIGH[self.pid >> 8]),
                    buf[2::PACKET][:count].translate(_EQUAL[self.pid & 0xFF]))  # fmt: skip
        special = _and(mine, _or(odd, pusi))
        at = 0
        for match in _ONE.finditer(special):
            n = match.start()
            self._plain(buf, mine, at, n)
            at = n + 1
            p = n * PACKET
            control = buf[p + 3]
            if not control & 0x10:
                continue  # no payload (adaptation field only)
            if pusi[n]:
                if self.offset >= 0:
                    yield self.offset, self.parts
                    self.offset, self.parts, self.held = -1, [], 0
                if base + p >= self.stop:
                    self.done = True
                    return
                self.offset = base + p
            if self.offset >= 0:
                begin = p + 4 + (1 + buf[p + 4] if control & 0x20 else 0)
                self._add(buf[begin : p + PACKET])
        self._plain(buf, mine, at, count)

    def _plain(self, buf: bytearray, mine: bytes, low: int, high: int) -> None:
        """Add the payloads of this PID's plain packets (no PES start, no adaptation
        field) between packet `low` and `high`, a run of neighbours at a time."""
        if self.offset < 0 or low >= high:
            return
        for run in _RUN.finditer(mine, low, high):
            self._add(_payloads(buf[run.start() * PACKET : run.end() * PACKET]))


def pes_units(
    fd: int, start: int, stop: int, video_pid: int | None, audio_pid: int | None, limit: int = 0
) -> Iterator[tuple[int, int, int | None, int | None, bytes]]:
    """(offset of its first packet, PID, PTS, DTS, payload) of each PES of the two PIDs
    that starts in [start, stop), read in bounded chunks: the PES at the end runs on past
    `stop` no further than its own packets do (up to the next PES of its PID). The two
    PIDs' PES come each in file order, not in order with each other.

    `limit` (when not 0): no byte at or past it is read (where the caller knows the last
    PES ends).

    ISO/IEC 13818-1 2.4.3.2 transport packet (sync byte, PUSI, PID, adaptation field
    control), 2.4.3.6 PES header."""
    readers = [_Pid(pid, stop) for pid in (video_pid, audio_pid) if pid is not None]
    position = start
    size = os.fstat(fd).st_size
    if limit:
        size = min(size, limit)
    try:
        buf = _SPARE.pop()
    except IndexError:
        buf = bytearray(_READ)
    try:
        yield from _pes_units(fd, position, size, readers, buf)
    finally:
        if len(_SPARE) < _SPARE_KEPT:
            _SPARE.append(buf)


def _pes_units(
    fd: int, position: int, size: int, readers: list[_Pid], buf: bytearray
) -> Iterator[tuple[int, int, int | None, int | None, bytes]]:
    """`pes_units` read into `buf`: whatever it held after the bytes read is never looked
    at (each look is bounded by the count of packets read)."""
    while position < size and not all(r.done for r in readers):
        count = os.preadv(fd, [memoryview(buf)[: min(_READ, size - position)]], position)
        count //= PACKET
        if not count:
            break
        syncs = buf[::PACKET][:count]
        if syncs.count(0x47) != count:
            bad = next(n for n, byte in enumerate(syncs) if byte != 0x47)
            raise ProbeError(f"MPEG-TS lost its packet sync at byte {position + bad * PACKET}")
        odd = buf[3::PACKET][:count].translate(_ODD)
        pusi = buf[1::PACKET][:count].translate(_PUSI)
        for reader in readers:
            if not reader.done:
                for offset, parts in reader.feed(buf, position, count, odd, pusi):
                    yield _unit((offset, parts), reader.pid)
        position += count * PACKET
    for reader in readers:
        if reader.offset >= 0 and not reader.done:
            yield _unit((reader.offset, reader.parts), reader.pid)


def _unit(
    done: tuple[int, list[bytes | bytearray]], pid: int
) -> tuple[int, int, int | None, int | None, bytes]:
    """ISO/IEC 13818-1 2.4.3.6: packet_start_code_prefix, PTS_DTS_flags,
    PES_header_data_length."""
    offset, parts = done
    first = parts[0] if parts else b""
    if len(first) >= 9 and len(first) >= 9 + first[8]:
        # The header in the first packet (as it nearly always is): the payload joined
        # without it, in one copy.
        data: bytes | bytearray = first
        payload: Iterator[bytes | bytearray] | None = itertools.chain(
            (memoryview(first)[9 + first[8] :],), itertools.islice(parts, 1, None)
        )
    else:
        data, payload = b"".join(parts), None
    if len(data) < 9 or data[:3] != b"\0\0\1":
        return offset, pid, None, None, b""
    flags = data[7] >> 6
    header = 9 + data[8]
    pts = dts = None
    if flags & 2 and len(data) >= 14:
        pts = mpegts.read_timestamp(data, 9)
        dts = mpegts.read_timestamp(data, 14) if flags == 3 and len(data) >= 19 else pts
    return offset, pid, pts, dts, data[header:] if payload is None else b"".join(payload)


def nal_units(data: bytes) -> Iterator[memoryview]:
    """The NAL units of an Annex B byte stream, each without its start code or the zero
    bytes that trail it (ITU-T H.264 / H.265 Annex B.2)."""
    view = memoryview(data)
    for begin, end in nal_spans(data):
        yield view[begin:end]


def nal_spans(data: bytes, stop: int = -1) -> Iterator[tuple[int, int]]:
    """Where each NAL unit of `data[:stop]` (an Annex B byte stream) begins and ends, as
    `nal_units` takes them."""
    stop = len(data) if stop < 0 else stop
    start = data.find(b"\0\0\1", 0, stop)
    while start >= 0:
        begin = start + 3
        following = data.find(b"\0\0\1", begin, stop)
        end = stop if following < 0 else following
        while end > begin and data[end - 1] == 0:
            end -= 1
        if end > begin:
            yield begin, end
        start = following


def lead_of(data: bytes, begin: int, end: int) -> int:
    """What a table keeps of an access unit whose last NAL unit spans [begin, end): where
    it begins, if nothing but zeros follows it; else 0 (the start code of an empty unit
    follows: the whole is looked through again)."""
    tail = len(data)
    while tail > end and data[tail - 1] == 0:
        tail -= 1
    return begin if tail == end and end > begin else 0


def led_spans(data: bytes, lead: int) -> list[tuple[int, int]]:
    """`nal_spans(data)`, told where the last unit begins (a table's `sub`): start codes
    are looked for before it only. Where no start code leads to it (a recording that
    changed, or 0), the whole is looked through."""
    if lead >= 3 and data[lead - 3 : lead] == b"\0\0\1":
        end = len(data)
        while end > lead and data[end - 1] == 0:
            end -= 1
        if end > lead:
            return [*nal_spans(data, lead - 3), (lead, end)]
    return list(nal_spans(data))


@dataclass
class _TsState:
    video: Table
    audio: Table | None
    unit: tuple[int, int, int, list[bytes]] | None = None  # offset, pts, dts, payloads
    first_dts: int | None = None
    last_dts: int = 0  # unwrapped, 90 kHz
    audio_last: int | None = None  # the last audio PES's PTS, unwrapped, 90 kHz
    parameter_sets: dict[int, bytes] = field(default_factory=dict)
    unit_bytes: int = 0  # the open access unit's, across its PES

    def video_unit(self, offset: int, pts: int | None, dts: int | None, data: bytes) -> None:
        if pts is None or dts is None:
            if self.unit is not None:
                self.unit[3].append(data)  # an access unit carried on in a second PES
                self.unit_bytes += len(data)
                if self.unit_bytes > MAX_SAMPLE:
                    raise ProbeError(f"a video frame of over {MAX_SAMPLE >> 20} MB")
            return
        self._close()
        if self.first_dts is None:
            self.first_dts, self.last_dts = dts, dts
        else:
            self.last_dts += pts_delta(dts, self.last_dts % mpegts.PTS_WRAP)
        self.unit = (offset, self.last_dts + pts_delta(pts, dts), self.last_dts, [data])
        self.unit_bytes = len(data)

    def _close(self) -> None:
        if self.unit is None:
            return
        offset, pts, dts, parts = self.unit
        self.unit = None
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        codec = self.video.codec
        types = _SYNC_TYPES[codec]
        sync = False
        length = begin = end = 0
        for begin, end in nal_spans(data):
            kind = nal.nal_type(data[begin : begin + 2], codec)
            sync = sync or kind in types
            if kind in _PARAMETER_TYPES[codec] and kind not in self.parameter_sets:
                self.parameter_sets[kind] = bytes(data[begin:end])
            length += 4 + end - begin
        if not length:
            return
        if not self.video.entry and all(k in self.parameter_sets for k in _PARAMETER_TYPES[codec]):
            self._configure()
        _add(self.video, dts, pts - dts, length, sync, offset)
        self.video.sub.append(lead_of(data, begin, end))

    def _configure(self) -> None:
        sets = self.parameter_sets
        if self.video.codec == "h264":
            config, width, height = nal.avc_config([sets[7]], [sets[8]])
            tag, box = b"avc1", b"avcC"
        else:
            config, width, height = nal.hevc_config([sets[32]], [sets[33]], [sets[34]])
            tag, box = b"hvc1", b"hvcC"
        self.video.entry = visual_entry(tag, width, height, box, config)
        self.video.width, self.video.height = width, height

    def audio_unit(self, offset: int, pts: int | None, data: bytes) -> None:
        audio = self.audio
        if audio is None or pts is None:
            return
        if self.audio_last is None:
            self.audio_last = pts
        else:
            self.audio_last += pts_delta(pts, self.audio_last % mpegts.PTS_WRAP)
        at, ticks = 0, 0
        while at + 7 <= len(data) and data[at] == 0xFF and data[at + 1] & 0xF6 == 0xF0:
            length = ((data[at + 3] & 0x03) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
            header = 7 if data[at + 1] & 0x01 else 9  # protection_absent
            if length <= header or at + length > len(data):
                break
            if not audio.entry:
                config, rate, channels = nal.aac_config(data[at : at + 7])
                audio.timescale = rate
                audio.entry = audio_entry(rate, channels, config)
            frames = 1024 * ((data[at + 6] & 0x03) + 1)
            time = (self.audio_last * audio.timescale + CLOCK // 2) // CLOCK + ticks
            if len(audio) and abs(time - audio.dts[-1] - audio.last_duration) * 2 < frames:
                time = audio.dts[-1] + audio.last_duration  # carries straight on
            _add(audio, time, 0, length - header, True, offset)
            audio.sub.append(at + header)
            audio.last_duration = frames
            ticks += frames
            at += length

    def finish(self, size: int) -> None:
        self._close()
        self.video.end = size
        if len(self.video) > 1:
            last = len(self.video) - 1
            steps = sorted(
                self.video.dts[n + 1] - self.video.dts[n] for n in range(max(0, last - 15), last)
            )
            self.video.last_duration = steps[len(steps) // 2]
        elif len(self.video):
            self.video.last_duration = CLOCK // 25
        if self.audio is not None:
            self.audio.end = size
            # Samples at one time would be one in an MP4: a PES's frames are apart.
            self._audio_times()

    def _audio_times(self) -> None:
        """A PES's frames follow its PTS one after another; a PES that starts before the
        frames of the one before end overlaps them: its frames follow them instead, so
        that no two samples share a decode time."""
        audio = self.audio
        if audio is None:
            return
        for n in range(1, len(audio)):
            floor = audio.dts[n - 1] + 1
            if audio.dts[n] < floor:
                audio.dts[n] = floor


def sample_bytes(
    fd: int, recording: Recording, table: Table, first: int, stop: int
) -> Iterator[bytes]:
    """The bytes of `table`'s samples `first` to `stop` (exclusive) as an MP4 holds them,
    read from the recording at `fd`: from MP4, a piece of about a megabyte at a time; from
    MPEG-TS, the run whole (ts_ranges). ProbeError if the recording no longer holds them
    as its table says (cut short, replaced)."""
    if recording.container == "mpegts":
        yield ts_ranges(fd, recording, [(table, first, stop)])[0]
        return
    try:
        yield from _mp4_bytes(fd, table, first, stop)
    except CORRUPT as error:
        raise ProbeError(f"corrupt recording ({type(error).__name__}: {error})") from None


_PIECE = 1 << 20  # bytes gathered before they are handed on


def _mp4_bytes(fd: int, table: Table, first: int, stop: int) -> Iterator[bytes]:
    """Samples' bytes read straight from the file: neighbours in the file in one read."""
    n = first
    while n < stop:
        begin = table.at[n]
        length = table.sizes[n]
        n += 1
        while n < stop and table.at[n] == begin + length and length < _PIECE:
            length += table.sizes[n]
            n += 1
        data = os.pread(fd, length, begin)
        if len(data) != length:
            raise ProbeError("the recording is shorter than its samples")
        yield data


def _span(table: Table, first: int, stop: int) -> tuple[int, int, int]:
    """The bytes whose PES start the samples `first` to `stop`: from the first's PES up
    to the last's (a PES may hold several audio samples; a video sample may go on in PES
    without a PTS, up to the next sample's); and where the last PES ends at the latest
    (the next PES of the stream that starts a sample, or the recording's end)."""
    last = table.at[stop - 1]
    ends = bisect.bisect_right(table.at, last)  # the first sample of a later PES
    limit = table.at[ends] if ends < len(table) else table.end
    if table.handler == b"vide":
        return table.at[first], limit, limit
    return table.at[first], last + 1, limit


# --- kept on disk ------------------------------------------------------------------------

_ENCODING = 1  # the format `encode` writes; `decode` refuses any other
_ARRAYS = ("dts", "cto", "sizes", "at", "sub")
_DELTAS = ("dts", "at")  # stored as differences: they compress to little


def encode(recording: Recording) -> bytes:
    """A recording's tables as bytes to keep (pure): a JSON header, then each table's
    arrays little-endian, `dts` and `at` as differences, all compressed (zlib)."""
    header: dict[str, Any] = {"v": _ENCODING, "readers": TABLES_VERSION,
                              "container": recording.container, "size": recording.size,
                              "tables": []}  # fmt: skip
    body = bytearray()
    for table in (recording.video, recording.audio):
        if table is None:
            continue
        arrays = {}
        for name in _ARRAYS:
            values = getattr(table, name)
            kept = values.typecode
            if name in _DELTAS and values:
                values = array("q", itertools.chain(
                    values[:1], map(operator.sub, itertools.islice(values, 1, None), values)
                ))  # fmt: skip
            values = array(values.typecode, values)
            if sys.byteorder != "little":
                values.byteswap()
            # (stored as, how many, kept as): differences are stored 64-bit
            arrays[name] = (values.typecode, len(values), kept)
            body += values.tobytes()
        header["tables"].append({
            "handler": table.handler.decode("latin-1"), "codec": table.codec,
            "timescale": table.timescale, "entry": table.entry.hex(), "width": table.width,
            "height": table.height, "end": table.end, "last_duration": table.last_duration,
            "pid": table.pid, "shift": table.shift, "sync": len(table.sync), "arrays": arrays,
        })  # fmt: skip
        body += bytes(table.sync)
    text = json.dumps(header, separators=(",", ":")).encode()
    return zlib.compress(len(text).to_bytes(4, "little") + text + bytes(body), 6)


def decode(data: bytes) -> Recording:
    """`encode`'s bytes back as a Recording; ProbeError if they are not that."""
    try:
        raw = zlib.decompress(data)
        length = int.from_bytes(raw[:4], "little")
        header = json.loads(raw[4 : 4 + length])
        if header.get("v") != _ENCODING or header.get("readers") != TABLES_VERSION:
            raise ProbeError("sample tables kept in another format")
        at = 4 + length
        tables = []
        for fields_ in header["tables"]:
            table = Table(fields_["handler"].encode("latin-1"), fields_["codec"],
                          fields_["timescale"], bytes.fromhex(fields_["entry"]),
                          fields_["width"], fields_["height"])  # fmt: skip
            table.end, table.last_duration = fields_["end"], fields_["last_duration"]
            table.pid, table.shift = fields_["pid"], fields_["shift"]
            for name in _ARRAYS:
                code, count, *kept = fields_["arrays"][name]
                values = array(code)
                width = values.itemsize * count
                if at + width > len(raw):
                    raise ProbeError("sample tables cut short")
                values.frombytes(raw[at : at + width])
                at += width
                if sys.byteorder != "little":
                    values.byteswap()
                if name in _DELTAS:
                    final = kept[0] if kept else code if name == "dts" else "q"
                    values = array(final, itertools.accumulate(values))
                setattr(table, name, values)
            table.sync = bytearray(raw[at : at + fields_["sync"]])
            at += fields_["sync"]
            tables.append(_compact(table))
        if not tables or at != len(raw):
            raise ProbeError("sample tables of another length than they say")
        return Recording(header["container"], header["size"], tables[0],
                         tables[1] if len(tables) > 1 else None)  # fmt: skip
    except (zlib.error, json.JSONDecodeError, KeyError, TypeError, ValueError,
            OverflowError) as error:  # fmt: skip
        raise ProbeError(f"kept sample tables unreadable: {error}") from None


Piece = bytes | memoryview  # part of a run's bytes, joined once where they are sent


def ts_ranges(
    fd: int, recording: Recording, wanted: Sequence[tuple[Table, int, int]]
) -> list[bytes]:
    """The bytes of several runs of an MPEG-TS recording's samples, (table, first, stop)
    each, in one pass over the file however the two streams' packets interleave: the
    clip's neighbouring chunks of one recording, video and audio, read together (a run
    of audio alone would read the video's packets around it again). ProbeError if the
    recording no longer holds them as its tables say."""
    return [b"".join(pieces) for pieces in ts_pieces(fd, recording, wanted)]


def ts_pieces(
    fd: int, recording: Recording, wanted: Sequence[tuple[Table, int, int]]
) -> list[list[Piece]]:
    """`ts_ranges`, each run's bytes as pieces in order (not joined: the bytes are copied
    once, by the caller, into what it sends)."""
    try:
        return _ts_ranges(fd, recording, wanted)
    except CORRUPT as error:
        raise ProbeError(f"corrupt recording ({type(error).__name__}: {error})") from None


def _ts_ranges(
    fd: int, recording: Recording, wanted: Sequence[tuple[Table, int, int]]
) -> list[list[Piece]]:
    spans = [_span(table, first, stop) for table, first, stop in wanted]
    start = min(s[0] for s in spans)
    end = max(s[1] for s in spans)
    limit = max(s[2] for s in spans)
    video, audio = recording.video, recording.audio
    # Per track, which run each sample goes to (sample index -> run), and the range of
    # samples to make.
    owner: dict[int, dict[int, int]] = {id(video): {}, id(audio): {}}
    for k, (table, first, stop) in enumerate(wanted):
        for n in range(first, stop):
            owner[id(table)][n] = k
    out: list[list[Piece]] = [[] for _ in wanted]
    v_owner, a_owner = owner[id(video)], owner[id(audio)]
    v_next = min(v_owner, default=len(video))  # the next video sample, in decode order
    v_last = max(v_owner, default=-1)
    a_first = min(a_owner, default=0)
    a_last = max(a_owner, default=-1)
    a_next = a_first
    parts: list[bytes] = []
    held = 0  # bytes in parts

    def close() -> None:
        nonlocal v_next
        pieces: list[Piece] = []
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        view = memoryview(data)
        lead = video.sub[v_next] if v_next < len(video.sub) else 0
        for begin, end in led_spans(data, lead):
            # Each NAL unit after a 4-byte length (ISO/IEC 14496-15 5.3.2, 8.3.2;
            # lengthSizeMinusOne 3).
            pieces.append((end - begin).to_bytes(4, "big"))
            pieces.append(view[begin:end])
        if not pieces:
            return  # a PES without NAL units: never a sample
        if v_next <= v_last:
            if sum(map(len, pieces)) != video.sizes[v_next]:
                raise ProbeError("the recording's video is not what its sample table says")
            run = v_owner.get(v_next)  # None: a sample between the runs (left out)
            if run is not None:
                out[run].extend(pieces)
        v_next += 1

    audio_pid = audio.pid if audio is not None and a_owner else None
    video_pid = video.pid if v_owner else None
    for offset, pid, pts, _, data in pes_units(fd, start, end, video_pid, audio_pid, limit):
        if pid == video_pid:
            if v_next > v_last and not parts:
                continue
            if pts is None:
                if parts:
                    parts.append(data)
                    held += len(data)
                    if held > MAX_SAMPLE:
                        raise ProbeError(f"a video frame of over {MAX_SAMPLE >> 20} MB")
                continue
            if parts:
                close()
                parts = []
            if v_next <= v_last and offset >= video.at[v_next]:  # not one before the run
                parts, held = [data], len(data)
        elif audio is not None and pid == audio_pid:
            while a_next <= a_last and audio.at[a_next] < offset:
                a_next += 1  # a PES that did not start where its table says
            while a_next <= a_last and audio.at[a_next] == offset:
                at, length = audio.sub[a_next], audio.sizes[a_next]
                piece = data[at : at + length]
                if len(piece) != length:
                    raise ProbeError("the recording's audio is not what its sample table says")
                run = a_owner.get(a_next)
                if run is not None:
                    out[run].append(piece)
                a_next += 1
    if parts:
        close()
    if v_next <= v_last or a_next <= a_last:
        raise ProbeError("the recording holds fewer samples than its sample tables")
    for (table, first, stop), pieces in zip(wanted, out, strict=True):
        if sum(map(len, pieces)) != sum(table.sizes[first:stop]):
            raise ProbeError("the recording holds other samples than its sample tables")
    return out
