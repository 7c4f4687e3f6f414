"""MPEG-TS rewriting on real ffmpeg output, checked against ffprobe and a plain reading of
every packet: timestamps moved (across the 33-bit wrap), counters carried on, nothing
else changed."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
from pathlib import Path

from agent.containers import mpegts
from agent.containers.mpegts import NULL_PID, PACKET, PTS_WRAP, renumber, rewrite
from agent.demo import Rendered


def _packets(path: Path) -> list[tuple[int, int, int]]:
    """(stream index, pts, dts) of every packet, from ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts,dts", "-of",
         "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [
        (int(p["stream_index"]), int(p["pts"]), int(p["dts"])) for p in json.loads(out)["packets"]
    ]


def _headers(data: bytes) -> list[tuple[int, int, bool]]:
    """(PID, continuity counter, has payload) of every packet."""
    return [
        (
            ((data[at + 1] & 0x1F) << 8) | data[at + 2],
            data[at + 3] & 0x0F,
            bool(data[at + 3] & 0x10),
        )
        for at in range(0, len(data) - len(data) % PACKET, PACKET)
    ]


def test_rewrite_moves_every_timestamp_across_the_wrap(
    tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    source = footage["ts"][1].path
    data = bytearray(source.read_bytes())
    shift = PTS_WRAP - 200_000  # the shifted timestamps wrap past 2**33 mid-segment
    deltas = {256: 5, 257: 11, 0: 3}
    rewrite(data, shift, deltas)
    moved = tmp_path / "moved.ts"
    moved.write_bytes(data)
    before, after = _packets(source), _packets(moved)
    assert len(after) == len(before)
    for (stream, pts, dts), (stream2, pts2, dts2) in zip(before, after, strict=True):
        assert stream2 == stream
        assert (pts2 - pts - shift) % PTS_WRAP == 0
        assert (dts2 - dts - shift) % PTS_WRAP == 0
    original = _headers(source.read_bytes())
    for (pid, cc, payload), (pid2, cc2, payload2) in zip(original, _headers(data), strict=True):
        assert (pid2, payload2) == (pid, payload)
        assert cc2 == (cc + deltas.get(pid, 0)) & 0x0F
    # Only timestamps and counters change: the rest of every packet is the same.
    plain = source.read_bytes()
    changed = sum(1 for a, b in zip(plain, data, strict=True) if a != b)
    assert changed < len(plain) // 50


def test_renumbered_files_run_0_to_15_and_carry_the_same_media(
    tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    source = footage["ts"][0].path
    out = tmp_path / "renumbered.ts"
    out.write_bytes(renumber(source.read_bytes()))
    by_pid: dict[int, list[int]] = {}
    for pid, cc, payload in _headers(out.read_bytes()):
        if payload and pid != NULL_PID:
            by_pid.setdefault(pid, []).append(cc)
    for pid, counters in by_pid.items():
        assert counters[0] == 0, pid
        assert counters[-1] == 15, pid
        assert all(b == (a + 1) & 0x0F for a, b in itertools.pairwise(counters)), pid
    assert _packets(out) == _packets(source)
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert decoded.returncode == 0
    assert decoded.stderr == ""


def test_parameter_sets_are_taken_from_an_annex_b_payload() -> None:
    """SPS and PPS (H.264), VPS, SPS and PPS (HEVC), whatever their start codes; no
    other NAL unit, and nothing for a payload without them."""
    aud, sps, pps, idr = b"\x09\xf0", b"\x67\x64\x00\x0d\xac", b"\x68\xeb\xe3", b"\x65\x88\x84"
    payload = b"\0\0\0\1" + aud + b"\0\0\0\1" + sps + b"\0\0\1" + pps + b"\0\0\1" + idr
    assert mpegts.parameter_sets(payload, "h264") == sps + pps
    assert mpegts.parameter_sets(b"\0\0\1" + idr, "h264") == b""
    vps, hsps, hpps, cra = b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1", b"\x2a\x01\xaf"
    payload = b"".join(b"\0\0\0\1" + nal for nal in (vps, hsps, hpps, cra))
    assert mpegts.parameter_sets(payload, "hevc") == vps + hsps + hpps
    assert mpegts.parameter_sets(payload, "mpeg2") == b""


def _counters_one_by_one(data: bytes, last: bool) -> dict[int, int]:
    """ISO/IEC 13818-1 2.4.3.3 read packet by packet: what `counters` finds at C speed."""
    found: dict[int, int] = {}
    count = len(data) // 188
    for n in range(count - 1, -1, -1) if last else range(count):
        at = n * 188
        pid = ((data[at + 1] & 0x1F) << 8) | data[at + 2]
        if pid not in found and pid != 0x1FFF and data[at + 3] & 0x10:
            found[pid] = data[at + 3] & 0x0F
    return found


def test_counters_are_each_pids_first_and_last_with_a_payload() -> None:
    """Random packets of a few PIDs (some whose two bytes repeat, so that a PID's bytes
    also appear across two packets' PIDs), with and without payloads, a partial packet
    at the end: the same counters as read one packet at a time."""
    from agent.containers.mpegts import counters

    chance = random.Random(3)
    for _ in range(1_500):
        pool = [chance.randrange(8192) for _ in range(chance.randrange(1, 5))]
        pool += [0x1FFF, 0x0101, 0x1F1F, 0]
        data = bytearray()
        for _ in range(chance.randrange(60)):
            pid = chance.choice(pool)
            packet = bytearray(chance.randbytes(188))
            packet[0], packet[1], packet[2] = 0x47, chance.randrange(8) << 5 | pid >> 8, pid & 0xFF
            data += packet
        data += chance.randbytes(chance.randrange(3))
        for last in (False, True):
            assert counters(bytes(data), last) == _counters_one_by_one(bytes(data), last)


def test_parameter_sets_from_a_payloads_head_or_none_if_it_cannot_tell() -> None:
    """An access unit's head holds its parameter sets: the same as from all of it; a head
    that ends inside one, or holds none, says it cannot tell (None)."""
    from agent.containers.mpegts import parameter_sets

    aud, sps, pps = b"\0\0\0\1\x09\xf0", b"\0\0\0\1\x67" + b"\x64" * 30, b"\0\0\0\1\x68\xee\x3c"
    slice_ = b"\0\0\1\x65" + bytes(range(1, 256)) * 100
    unit = aud + sps + pps + slice_
    whole = parameter_sets(unit, "h264")
    assert whole == sps[4:] + pps[4:]
    assert parameter_sets(unit[:4096], "h264", cut=True) == whole
    assert parameter_sets(unit[: len(aud) + 20], "h264", cut=True) is None  # inside the SPS
    # A large SEI across the cut, the PPS after it: no slice yet, so it cannot tell.
    sei = b"\0\0\0\1\x06" + b"\x05" * 20_000
    assert parameter_sets((aud + sps + sei + pps + slice_)[:16384], "h264", cut=True) is None
    assert parameter_sets((aud + sps)[: len(aud) + len(sps)] + b"\0\0\1", "h264", cut=True) is None
    assert parameter_sets(slice_[:4096], "h264", cut=True) == b""  # a picture without any
    assert parameter_sets(slice_, "h264") == b""
