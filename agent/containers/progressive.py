"""Writing a progressive MP4's header: `ftyp`, then a `moov` whose sample tables describe
media that follows in one `mdat` (ISO/IEC 14496-12), built from sample tables alone.

The writer never sees sample data: it is given each track's durations, composition
offsets, sizes and sync flags, how the samples fall into chunks and where each chunk will
be in the file, and the edit list that says which part of the media is shown. Sample
entries are made here too: avc1/hvc1 around a decoder configuration (ISO/IEC 14496-15),
mp4a around an AudioSpecificConfig (ISO/IEC 14496-14), and tx3g for a text track of the
wall-clock time (3GPP TS 26.245).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, islice
from operator import mul, ne, sub
from typing import TypeAlias

MOVIE_SCALE = 90_000  # the movie's timescale: an edit's durations are in these ticks
SECONDS_1904 = 2_082_844_800  # from 1904-01-01 (MP4's epoch) to 1970-01-01
# The identity matrix of mvhd and tkhd (ISO/IEC 14496-12 8.2.2.3): 16.16 and 2.30 fixed.
_MATRIX = b"".join(v.to_bytes(4, "big") for v in (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000))
_LANGUAGE_UND = 0x55C4  # ISO 639-2 "und", packed as three 5-bit letters (8.4.2.3)


def box(kind: bytes, *payload: bytes) -> bytes:
    """ISO/IEC 14496-12 4.2 Box (its payload copied once)."""
    size = 8 + sum(map(len, payload))
    return b"".join((size.to_bytes(4, "big"), kind, *payload))


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """ISO/IEC 14496-12 4.2 FullBox: version, then 24 bits of flags."""
    return box(kind, bytes([version]) + flags.to_bytes(3, "big"), *payload)


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _big_endian(values: array[int]) -> bytes:
    """An array's items as big-endian bytes (one C-speed pass)."""
    copy = array(values.typecode, values)
    if sys.byteorder == "little":
        copy.byteswap()
    return copy.tobytes()


# --- sample entries ----------------------------------------------------------------------


def visual_entry(tag: bytes, width: int, height: int, config_kind: bytes, config: bytes) -> bytes:
    """A video sample entry (avc1, hvc1) and its decoder configuration box (avcC, hvcC).

    ISO/IEC 14496-12 8.5.2.2 SampleEntry, 12.1.3.2 VisualSampleEntry (72 dpi, one frame a
    sample, depth 0x18); ISO/IEC 14496-15 5.4.2.1 (avc1, avcC), 8.4.1.1 (hvc1, hvcC)."""
    return box(
        tag,
        bytes(6), _u16(1),  # reserved, data_reference_index
        bytes(16),  # pre_defined, reserved
        _u16(width), _u16(height),
        _u32(0x00480000), _u32(0x00480000),  # horizresolution, vertresolution
        bytes(4), _u16(1),  # reserved, frame_count
        bytes(32),  # compressorname
        _u16(0x0018), (0xFFFF).to_bytes(2, "big"),  # depth, pre_defined = -1
        box(config_kind, config),
    )  # fmt: skip


def audio_entry(rate: int, channels: int, config: bytes) -> bytes:
    """An AAC sample entry: mp4a and its esds (ISO/IEC 14496-12 12.2.3.2 AudioSampleEntry;
    ISO/IEC 14496-14 5.6 esds; ISO/IEC 14496-1 7.2.6.5 ES_Descriptor)."""
    from .nal import esds_payload

    return box(
        b"mp4a",
        bytes(6), _u16(1),  # reserved, data_reference_index
        bytes(8),  # reserved
        _u16(channels), _u16(16),  # channelcount, samplesize
        bytes(4),  # pre_defined, reserved
        _u32((rate if rate < 1 << 16 else 0) << 16),  # samplerate, 16.16
        full_box(b"esds", 0, 0, esds_payload(config)),
    )  # fmt: skip


def text_entry() -> bytes:
    """A 3GPP timed text sample entry: white text, centred at the bottom, one serif font.

    3GPP TS 26.245 5.16 TextSampleEntry: displayFlags, horizontal and vertical
    justification, background colour, default text box (BoxRecord), default style
    (StyleRecord: startChar, endChar, font-ID, face style, font size, text colour), and
    the font table (FontTableBox `ftab`)."""
    font = b"Serif"
    return box(
        b"tx3g",
        bytes(6), _u16(1),  # reserved, data_reference_index
        _u32(0),  # displayFlags
        bytes([1, 0xFF]),  # centred, at the bottom (-1)
        bytes(4),  # background: transparent
        bytes(8),  # default text box: the whole track
        _u16(0), _u16(0), _u16(1), bytes([0, 18]), b"\xff\xff\xff\xff",  # default style
        box(b"ftab", _u16(1), _u16(1), bytes([len(font)]), font),
    )  # fmt: skip


def text_sample(text: str) -> bytes:
    """A timed text sample: its length, then UTF-8 (3GPP TS 26.245 5.17 TextSample)."""
    data = text.encode()
    return _u16(len(data)) + data


# --- the movie ---------------------------------------------------------------------------


# A run-length table: each run's length, and its value.
Runs: TypeAlias = "tuple[array[int], array[int]]"


@dataclass(eq=False)
class TrackOut:
    """One track of the movie, as its sample tables will say it."""

    track_id: int
    handler: bytes  # b"vide", b"soun" or b"sbtl"
    timescale: int
    entries: list[bytes]  # sample entries; a chunk names one by its 1-based index
    # Its samples' durations, run-length (`runs`).
    durations: Runs = field(default_factory=lambda: (array("q"), array("q")))
    sizes: array[int] = field(default_factory=lambda: array("I"))
    offsets: array[int] | None = None  # composition offsets (video), or none at all
    sync: bytearray | None = None  # 1 per sample, or None: every sample is a sync sample
    # Chunks in file order: (samples in it, sample entry index, offset in the file).
    chunks: list[tuple[int, int, int]] = field(default_factory=list)
    # The edit list: (duration in MOVIE_SCALE ticks, media time in the track's ticks or
    # -1 for an empty edit).
    edits: list[tuple[int, int]] = field(default_factory=list)
    width: int = 0
    height: int = 0
    tables: list[bytes] | None = None  # its stbl's boxes but co64, once made (_stbl)

    @property
    def shown(self) -> int:
        """How long the track is shown, in MOVIE_SCALE ticks (its edits)."""
        return sum(duration for duration, _ in self.edits)


def ftyp(hevc: bool) -> bytes:
    """ISO/IEC 14496-12 4.3 FileTypeBox: isom, with the brands the tracks need."""
    brands = [b"isom", b"iso2", b"mp41"] + ([b"hvc1"] if hevc else [b"avc1"])
    return box(b"ftyp", b"isom", _u32(512), *brands)


def moov(tracks: Sequence[TrackOut], creation_unix: int) -> bytes:
    """The movie box for `tracks` (ISO/IEC 14496-12 8.2.1), times version 1 (64 bits).

    `creation_unix` (seconds) is the creation and modification time of the movie and of
    each track: the wall-clock time the clip begins at."""
    return b"".join(_moov(tracks, creation_unix))


def moov_parts(tracks: Sequence[TrackOut], creation_unix: int) -> Parts:
    """`moov(tracks, creation_unix)` as the pieces that make it (their length its length),
    its sample tables made once and kept on the tracks."""
    return _moov(tracks, creation_unix)


Parts: TypeAlias = "list[bytes]"  # a box as the pieces that make it, in order


def _tree(kind: bytes, *payload: bytes | Parts) -> Parts:
    """A box of `payload` (bytes and boxes as parts) as parts (ISO/IEC 14496-12 4.2)."""
    parts: Parts = [b"", kind]
    for item in payload:
        if isinstance(item, bytes):
            parts.append(item)
        else:
            parts.extend(item)
    parts[0] = (4 + sum(map(len, parts))).to_bytes(4, "big")
    return parts


def _moov(tracks: Sequence[TrackOut], creation_unix: int) -> Parts:
    when = creation_unix + SECONDS_1904
    duration = max((t.shown for t in tracks), default=0)
    mvhd = full_box(
        b"mvhd", 1, 0,
        _u64(when), _u64(when), _u32(MOVIE_SCALE), _u64(duration),
        _u32(0x00010000), _u16(0x0100), bytes(10),  # rate 1.0, volume 1.0, reserved
        _MATRIX, bytes(24),  # pre_defined
        _u32(max((t.track_id for t in tracks), default=0) + 1),  # next_track_ID
    )  # fmt: skip
    return _tree(b"moov", mvhd, *(_trak(t, when) for t in tracks))


def _trak(track: TrackOut, when: int) -> Parts:
    """ISO/IEC 14496-12 8.3.1 trak, 8.3.2 tkhd (enabled, in movie), 8.6.5 edts, 8.6.6 elst,
    8.4.1 mdia, 8.4.2 mdhd, 8.4.3 hdlr."""
    tkhd = full_box(
        b"tkhd", 1, 0x3,
        _u64(when), _u64(when), _u32(track.track_id), bytes(4), _u64(track.shown),
        bytes(8), _u16(0), _u16(0),  # reserved, layer, alternate_group
        _u16(0x0100 if track.handler == b"soun" else 0), bytes(2),  # volume, reserved
        _MATRIX, _u32(track.width << 16), _u32(track.height << 16),
    )  # fmt: skip
    elst = full_box(
        b"elst", 1, 0, _u32(len(track.edits)),
        *(_u64(d) + (m if m >= 0 else (1 << 64) - 1).to_bytes(8, "big") + _u32(0x00010000)
          for d, m in track.edits),
    )  # fmt: skip
    media_duration = sum(map(mul, *track.durations))
    mdhd = full_box(
        b"mdhd", 1, 0, _u64(when), _u64(when), _u32(track.timescale), _u64(media_duration),
        _u16(_LANGUAGE_UND), _u16(0),
    )  # fmt: skip
    names = {b"vide": b"VideoHandler", b"soun": b"SoundHandler", b"sbtl": b"Wall clock"}
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), track.handler, bytes(12),
                    names.get(track.handler, b"") + b"\0")  # fmt: skip
    if track.handler == b"vide":
        header = full_box(b"vmhd", 0, 1, bytes(8))  # 12.1.2 vmhd
    elif track.handler == b"soun":
        header = full_box(b"smhd", 0, 0, bytes(4))  # 12.2.2 smhd
    else:
        header = full_box(b"nmhd", 0, 0)  # 8.4.5.2 nmhd
    dinf = box(b"dinf", full_box(b"dref", 0, 0, _u32(1), full_box(b"url ", 0, 1)))  # 8.7.1
    minf = _tree(b"minf", header, dinf, _stbl(track))
    edts = box(b"edts", elst) if track.edits else b""
    return _tree(b"trak", tkhd, edts, _tree(b"mdia", mdhd, hdlr, minf))


def _stbl(track: TrackOut) -> Parts:
    """ISO/IEC 14496-12 8.5.1 stbl: 8.5.2 stsd, 8.6.1.2 stts, 8.6.1.3 ctts (version 1,
    signed), 8.6.2 stss, 8.7.3 stsz, 8.7.4 stsc, 8.7.5 co64. All but co64 (the chunks'
    offsets) are made once and kept on the track: a header is made twice, to learn its
    length and then with the chunks where that length puts them."""
    if track.tables is None:
        stsd = full_box(b"stsd", 0, 0, _u32(len(track.entries)), *track.entries)
        parts = [stsd, full_box(b"stts", 0, 0, *_run_table(track.durations))]
        if track.offsets is not None and any(track.offsets):
            parts.append(full_box(b"ctts", 1, 0, *_run_table(runs(track.offsets))))
        if track.sync is not None and not all(track.sync):
            numbers = array("I", compress(range(1, len(track.sync) + 1), track.sync))
            parts.append(full_box(b"stss", 0, 0, _u32(len(numbers)), _big_endian(numbers)))
        parts.append(full_box(b"stsz", 0, 0, _u32(0), _u32(len(track.sizes)),
                              _big_endian(track.sizes)))  # fmt: skip
        stsc = array("I")
        previous: tuple[int, int] | None = None
        for n, (count, entry, _) in enumerate(track.chunks):
            if (count, entry) != previous:
                stsc.extend((n + 1, count, entry))
                previous = (count, entry)
        parts.append(full_box(b"stsc", 0, 0, _u32(len(stsc) // 3), _big_endian(stsc)))
        track.tables = parts
    offsets = array("Q", (offset for _, _, offset in track.chunks))
    co64 = full_box(b"co64", 0, 0, _u32(len(offsets)), _big_endian(offsets))
    return _tree(b"stbl", track.tables, co64)


def runs(values: array[int]) -> Runs:
    """`values` run-length, each run's length and value 32-bit (pure; C-speed passes:
    where a value differs from the one before, then each run's length and value).
    OverflowError if a value is not 32-bit."""
    total = len(values)
    changes = chain((1,), map(ne, values[1:], values[:-1]))
    starts = array("i", compress(range(total), changes))
    counts = array("i", map(sub, chain(islice(starts, 1, None), (total,)), starts))
    low, high = min(values, default=0), max(values, default=0)
    kind = "i" if low >= -(1 << 31) and high < 1 << 31 else "I"
    return counts, array(kind, map(values.__getitem__, starts))


def _run_table(table: Runs) -> tuple[bytes, bytes]:
    """A (count, value) table's entry count and entries, each 32 bits (a value signed or
    not as the box says: both fit when it is below 2^31)."""
    counts, values = table
    entries = array("i", bytes(8 * len(counts)))
    entries[0::2] = counts if counts.typecode == "i" else array("i", counts)
    if values.typecode == "i":
        entries[1::2] = values
    elif min(values, default=0) >= 0 and max(values, default=0) < 1 << 32:
        entries[1::2] = array("i", array("I", values).tobytes())  # the same 32 bits
    else:
        raise ValueError("a sample table value that 32 bits cannot hold")
    if sys.byteorder == "little":
        entries.byteswap()
    return _u32(len(counts)), entries.tobytes()


def mdat_header(payload: int) -> bytes:
    """A media data box's header with a 64-bit size (ISO/IEC 14496-12 4.2 largesize,
    8.1.1 mdat)."""
    return _u32(1) + b"mdat" + _u64(16 + payload)


# --- fragmented MP4 (an HLS init section and media segments) -----------------------------


def init_section(tracks: Sequence[TrackOut]) -> bytes:
    """An init section for fragmented media of `tracks` (their sample entries; no
    samples, no edits): ftyp, then a moov with empty sample tables and an mvex saying
    that fragments follow.

    ISO/IEC 14496-12 8.8.1 mvex, 8.8.3 trex (default sample description 1, nothing else
    by default: every fragment states each sample's fields)."""
    hevc = any(entry[4:8] == b"hvc1" for t in tracks for entry in t.entries)
    mvex = box(
        b"mvex",
        *(full_box(b"trex", 0, 0, _u32(t.track_id), _u32(1), bytes(12)) for t in tracks),
    )
    movie = moov(tracks, 0)
    return ftyp(hevc) + box(b"moov", movie[8:], mvex)


@dataclass(eq=False)
class Run:
    """One track's samples in a fragment: where they begin on the track's timeline and
    each one's fields; their bytes follow in the mdat in this order."""

    track_id: int
    decode_time: int
    durations: Sequence[int]
    sizes: Sequence[int]
    flags: Sequence[int]  # sample_flags (8.8.3.1): 0x2000000 a sync sample, 0x1010000 not
    offsets: Sequence[int]  # composition offsets


SYNC_FLAGS = 0x02000000  # sample_depends_on 2: depends on no other sample
OTHER_FLAGS = 0x01010000  # sample_depends_on 1, sample_is_non_sync_sample


def header_size(runs: Sequence[Run]) -> int:
    """The bytes of `fragment_header(_, runs)`: the moof and the mdat's header (pure)."""
    return 8 + 16 + sum(8 + 16 + 20 + 20 + 16 * len(run.sizes) for run in runs) + 8


def fragment_header(sequence: int, runs: Sequence[Run]) -> bytes:
    """A moof and the header of the mdat that follows it, for `runs` whose bytes come
    after (each run's data where the one before ends).

    ISO/IEC 14496-12: mfhd 8.8.5; tfhd 8.8.7 with default-base-is-moof (0x020000); tfdt
    8.8.12 version 1 (64 bits); trun 8.8.8 version 1 (signed composition offsets) with
    data-offset and every sample field (0xF01); mdat 8.1.1."""
    moof_size = header_size(runs) - 8
    trafs = []
    at = moof_size + 8
    for run in runs:
        entries = array("i")
        for fields in zip(run.durations, run.sizes, run.flags, run.offsets, strict=True):
            entries.extend(v if v < 1 << 31 else v - (1 << 32) for v in fields)
        head = _u32(len(run.sizes)) + at.to_bytes(4, "big", signed=True)
        trafs.append(
            box(
                b"traf",
                full_box(b"tfhd", 0, 0x020000, _u32(run.track_id)),
                full_box(b"tfdt", 1, 0, _u64(run.decode_time)),
                full_box(b"trun", 1, 0xF01, head, _big_endian(entries)),
            )
        )
        at += sum(run.sizes)
    moof = box(b"moof", full_box(b"mfhd", 0, 0, _u32(sequence)), *trafs)
    payload = at - moof_size - 8
    return moof + _u32(8 + payload) + b"mdat"
