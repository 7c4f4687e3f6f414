"""Hostile recordings, built box by box: each is a file that once took the agent down or
misled it, kept in tests/regressions/ (written by `python -m tests.hostile_media`)."""

from __future__ import annotations

import contextlib
import random
import struct
import time
import tracemalloc
from pathlib import Path

from agent.containers.errors import ProbeError
from agent.containers.files import opened
from agent.containers.probe import MediaFacts, cut_point, keyframes, probe
from agent.containers.samples import read_recording, sample_bytes

REGRESSIONS = Path(__file__).with_name("regressions")


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full(kind: bytes, payload: bytes = b"", version: int = 0, flags: int = 0) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def _mvhd() -> bytes:
    return full(b"mvhd", struct.pack(">IIII", 0, 0, 1000, 0) + bytes(80))


def _tkhd(track_id: int = 1) -> bytes:
    return full(b"tkhd", struct.pack(">III", 0, 0, track_id) + bytes(68), flags=3)


def _mdhd(timescale: int = 90_000) -> bytes:
    return full(b"mdhd", struct.pack(">IIII", 0, 0, timescale, 0) + bytes(4))


def _hdlr() -> bytes:
    return full(b"hdlr", bytes(4) + b"vide" + bytes(12) + b"video\0")


def _stsd() -> bytes:
    entry = box(b"avc1", bytes(6) + b"\0\1" + bytes(16) + struct.pack(">HH", 320, 240) + bytes(50))
    return full(b"stsd", struct.pack(">I", 1) + entry)


def plain_mp4(stbl: bytes, extra_trak: bytes = b"") -> bytes:
    """ftyp and a moov of one video track whose sample tables are `stbl`'s boxes."""
    minf = box(b"minf", box(b"stbl", _stsd() + stbl))
    trak = box(b"trak", _tkhd() + box(b"mdia", _mdhd() + _hdlr() + minf) + extra_trak)
    return box(b"ftyp", b"isom\0\0\2\0isom") + box(b"moov", _mvhd() + trak)


def stts_of(count: int, delta: int = 3600) -> bytes:
    return full(b"stts", struct.pack(">III", 1, count, delta))


def fragmented(moofs: list[bytes]) -> bytes:
    """An init section of one video track, then each moof with an empty mdat."""
    trex = full(b"trex", struct.pack(">IIIII", 1, 1, 3600, 100, 0))
    minf = box(b"minf", box(b"stbl", _stsd() + stts_of(0) + full(b"stsz", bytes(8))))
    trak = box(b"trak", _tkhd() + box(b"mdia", _mdhd() + _hdlr() + minf))
    moov = box(b"moov", _mvhd() + trak + box(b"mvex", trex))
    out = box(b"ftyp", b"iso5\0\0\2\0iso5") + moov
    for moof in moofs:
        out += moof + box(b"mdat", b"")
    return out


def moof_of(trun: bytes, tfdt: bytes | None = None) -> bytes:
    tfhd = full(b"tfhd", struct.pack(">I", 1), flags=0x020000)
    tfdt = full(b"tfdt", struct.pack(">Q", 0), version=1) if tfdt is None else tfdt
    return box(b"moof", full(b"mfhd", struct.pack(">I", 1)) + box(b"traf", tfhd + tfdt + trun))


def ts_random_timestamps(seed: int, packets: int) -> bytes:
    """MPEG-TS with a PAT, a PMT of one H.264 stream, then video PES packets whose PTS
    are random: a file whose timestamps claim any span at all."""
    rnd = random.Random(seed)
    return ts_of_timestamps([rnd.randrange(1 << 33) for _ in range(packets)])


def ts_of_timestamps(stamps: list[int]) -> bytes:
    """MPEG-TS with a PAT, a PMT of one H.264 stream, then a video PES packet at each of
    `stamps` (90 kHz): each an IDR slice of a byte."""

    def packet(pid: int, payload: bytes, start: bool, counter: int) -> bytes:
        header = bytes([0x47, (0x40 if start else 0) | pid >> 8, pid & 0xFF, 0x10 | counter])
        return (header + payload).ljust(188, b"\xff")

    def section(table: bytes) -> bytes:
        return b"\0" + table + b"\0\0\0\0"  # pointer field; CRC not checked by readers

    pat = section(bytes([0, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xF0, 0]))
    pmt = section(bytes([2, 0xB0, 18, 0, 1, 0xC1, 0, 0, 0xE1, 0, 0xF0, 0, 0x1B, 0xE1, 0, 0xF0, 0]))
    out = packet(0, pat, True, 0) + packet(0x1000, pmt, True, 0)
    for n, pts in enumerate(stamps):
        pts %= 1 << 33
        stamp = bytes(
            [0x21 | (pts >> 29) & 0x0E, pts >> 22 & 0xFF, (pts >> 14) & 0xFE | 1,
             pts >> 7 & 0xFF, (pts << 1) & 0xFE | 1]
        )  # fmt: skip
        pes = b"\0\0\1\xe0\0\0\x80\x80\x05" + stamp + b"\0\0\0\1\x65"
        out += packet(0x100, pes, True, n % 16)
    return out


def all_regressions() -> dict[str, bytes]:
    """Every hostile input by file name."""
    trun_many = full(b"trun", struct.pack(">I", 1 << 20), flags=0)  # 2^20 samples, no fields
    return {
        # A 349-byte-class plain MP4 whose stts claims 30 million samples (3.7 GB before).
        "stts-30M.mp4": plain_mp4(stts_of(30_000_000) + full(b"stsz", struct.pack(">II", 1, 1))),
        # stts and ctts counts of a billion (MemoryError before).
        "stts-1e9.mp4": plain_mp4(stts_of(10**9)),
        "ctts-1e9.mp4": plain_mp4(stts_of(2) + full(b"ctts", struct.pack(">III", 1, 10**9, 0))),
        # Four moofs, each trun claiming 2^20 samples with no per-sample fields (927 MB).
        "trun-2e20.mp4": fragmented([moof_of(trun_many)] * 4),
        # Empty boxes at the end of their parents (IndexError before).
        "empty-tfdt.mp4": fragmented([moof_of(full(b"trun", struct.pack(">I", 0)), box(b"tfdt"))]),
        "empty-trun.mp4": fragmented([moof_of(box(b"trun"))]),
        "empty-ctts.mp4": plain_mp4(stts_of(2) + box(b"ctts")),
        "empty-mvhd.mp4": box(b"ftyp", b"isom\0\0\2\0isom") + box(b"moov", box(b"mvhd")),
        # 10^7 frames of 3600 ticks claimed by a small file (a 4.6-day recording before).
        "frames-1e7.mp4": plain_mp4(stts_of(10_000_000) + full(b"stsz", struct.pack(">II", 1, 1))),
        # Random timestamps: 27 h indexed from 500 KB before, hiding the footage after it.
        "random-pts.ts": ts_random_timestamps(5, 2000),
        # An stsc whose runs go back and forth (1, 10^9, 1, ...) over 20,000 chunks of
        # 10,000 samples: each run walked every chunk again (minutes of CPU before).
        "samples-stsc-back-and-forth.mp4": plain_mp4(
            stts_of(10_000)
            + full(b"stsz", struct.pack(">II", 1, 10_000))
            + full(
                b"stsc",
                struct.pack(">I", 2000)
                + b"".join(
                    struct.pack(">III", 1 if n % 2 == 0 else 10**9, 1, 1) for n in range(2000)
                ),
            )
            + full(b"stco", struct.pack(">I", 20_000) + bytes(4 * 20_000))
        ),  # fmt: skip
    }


def read_in_bounds(path: Path) -> tuple[MediaFacts | None, int, float]:
    """Every container reader on one file: its facts (None where they said ProbeError),
    the peak of Python's allocations (bytes) and the CPU seconds it took; raises what
    else they raise."""
    tracemalloc.start()
    started = time.process_time()
    try:
        try:
            facts: MediaFacts | None = probe(path)
        except ProbeError:
            facts = None
        for reader in (
            lambda: keyframes(path),
            lambda: cut_point(path, 0, 90_000),
            lambda: every_sample(path),
        ):
            with contextlib.suppress(ProbeError):
                reader()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return facts, peak, time.process_time() - started


def every_sample(path: Path) -> None:
    """The export's reader: a recording's sample tables, then every sample's bytes."""
    with opened(path, follow=False) as (fd, size):
        recording = read_recording(fd, size)
        for table in (recording.video, recording.audio):
            if table is not None and len(table):
                for _ in sample_bytes(fd, recording, table, 0, len(table)):
                    pass


def write_all() -> None:
    REGRESSIONS.mkdir(exist_ok=True)
    for name, data in all_regressions().items():
        (REGRESSIONS / name).write_bytes(data)


if __name__ == "__main__":
    write_all()
