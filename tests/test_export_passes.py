"""The export's layout in whole-array passes (export.py, containers/progressive.py) against
the rules they stand for, one sample at a time (pure; no footage)."""

from __future__ import annotations

import itertools
import os
import random
import shutil
from array import array
from pathlib import Path
from typing import Any

import pytest

from agent.containers.mpegts import CLOCK, PTS_WRAP
from agent.containers.progressive import _run_table, runs
from agent.containers.samples import (
    Recording,
    Table,
    lead_of,
    led_spans,
    nal_spans,
    read_recording,
    ts_ranges,
)
from agent.export import (
    _AAC_FRAME,
    Clip,
    ClipBroken,
    _audio_durations,
    _audio_samples,
    _cut,
    _open_checked,
    _Piece,
    _Track,
    joined,
)
from agent.media import recording_path
from agent.playlists import RECORDED, MediaItem
from agent.samplestore import stamp_of


def _placed_one_by_one(
    pieces: list[tuple[list[int], int]], begin: int | None = None, end: int | None = None
) -> list[int]:
    """The rule `_audio_samples` documents, a sample at a time, over pieces of (session
    times, rate): each ADTS frame's time in the first piece's rate, snapped onto the one
    before when within half a frame, left out when it overlaps more than that, where it
    is after a gap; from the frame playing at `begin` in the first piece, before `end`
    in the last."""
    out: list[int] = []
    base, rate0 = None, 0
    for number, (times, rate) in enumerate(pieces):
        for t in times:
            if begin is not None and number == 0 and t + _AAC_FRAME * CLOCK // rate <= begin:
                continue
            if end is not None and number == len(pieces) - 1 and t >= end:
                break
            if base is None:
                base, rate0 = t, rate
            frame = _AAC_FRAME * rate0 // rate
            here = (t - base) * rate0 // CLOCK
            if out:
                expected = out[-1] + frame
                if here < expected - frame // 2:
                    continue
                if here < expected + frame // 2:
                    here = expected
            out.append(here)
    return out


def _audio_table(rate: int, ticks: list[int]) -> Table:
    table = Table(b"soun", "aac", rate, b"mp4a")
    table.dts = array("q", ticks)
    table.sizes = array("I", [100 + n % 7 for n in range(len(ticks))])
    table.at = array("q", range(len(ticks)))
    return table


@pytest.mark.parametrize("seed", range(40))
def test_audio_placed_at_once_is_placed_as_one_by_one(seed: int) -> None:
    """Runs of frames that follow on (with jitter up to, and past, half a frame), gaps,
    overlaps and drift: the same decode times and sizes as the rule one at a time."""
    rng = random.Random(seed)
    rate = rng.choice([8000, 16000, 44100, 48000])
    ticks, t = [], rng.randrange(1 << 30)
    for _ in range(rng.randrange(1, 3000)):
        ticks.append(t)
        roll = rng.random()
        if roll < 0.002:
            t += _AAC_FRAME * rng.randrange(2, 50)  # a gap
        elif roll < 0.004 and seed % 4 == 0:
            t -= _AAC_FRAME * rng.randrange(1, 4)  # back: overlaps (out of order)
        elif roll < 0.3:
            t += _AAC_FRAME + rng.randrange(-530, 530) * (seed % 3)  # jitter, some past half
        else:
            t += _AAC_FRAME + (seed % 5 == 0)  # drifts a tick a frame
    table = _audio_table(rate, ticks)
    item = MediaItem(
        source="a.ts", kind=RECORDED, duration=0.0, pdt_us=0, discontinuity=False, size=0
    )
    times = [(v * CLOCK + rate // 2) // rate for v in ticks]
    start = times[0]
    begin = rng.choice([None, times[len(times) // 3]])
    end = rng.choice([None, times[-1] - rng.randrange(0, max(1, times[-1] - times[0]))])
    track = _Track()
    _audio_samples(
        track,
        _Piece(item, start, start + 1),
        Recording("mpegts", 0, Table(b"vide", "h264", CLOCK, b""), table),
        table,
        begin,
        end,
    )
    mapped = [t - times[0] + start for t in times]
    expected = _placed_one_by_one([(mapped, rate)], begin, end)
    assert list(track.dts) == expected
    counts, values = _audio_durations(track.segments)
    durations = [v for c, v in zip(counts, values, strict=True) for _ in range(c)]
    assert durations == [b - a for a, b in itertools.pairwise(expected)] + (
        [_AAC_FRAME] if expected else []
    )
    assert sum(run[1] - run[0] for run in track.runs) == len(expected)


@pytest.mark.parametrize(
    "values",
    [[], [5], [1, 1, 1], [3, -2, 3, 3, 0, 0, 7], [0, (1 << 31) - 1, -(1 << 31)], [4] * 1000],
)
def test_runs_say_each_value_once_in_order(values: list[int]) -> None:
    counts, kept = runs(array("q", values))
    assert [v for c, v in zip(counts, kept, strict=True) for _ in range(c)] == values
    assert all(a != b for a, b in itertools.pairwise(kept))  # each run whole
    entries, data = _run_table((counts, kept))
    assert int.from_bytes(entries, "big") == len(counts)
    table = array("i", data)
    table.byteswap()
    assert list(table[1::2]) == list(kept)
    assert list(table[0::2]) == list(counts)


def test_run_table_takes_unsigned_32_bits_and_refuses_more() -> None:
    _, data = _run_table(runs(array("q", [(1 << 32) - 1, 1 << 31])))
    assert data[4:8] == b"\xff\xff\xff\xff"
    assert data[12:16] == b"\x80\x00\x00\x00"
    with pytest.raises((ValueError, OverflowError)):
        _run_table(runs(array("q", [1 << 32])))
    with pytest.raises((ValueError, OverflowError)):
        _run_table(runs(array("q", [-(1 << 31) - 1])))


def test_cut_gives_the_bytes_of_the_pieces_joined() -> None:
    rng = random.Random(7)
    pieces: list[bytes | memoryview] = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(0, 9))) for _ in range(12)
    ]
    pieces[3] = memoryview(b"view bytes")
    whole = b"".join(pieces)
    for start in range(len(whole) + 1):
        for stop in range(start, len(whole) + 2):
            assert b"".join(_cut(pieces, start, stop)) == whole[start:stop]


def test_joined_parts_are_the_pieces_bytes_in_parts_of_at_most_so_many() -> None:
    rng = random.Random(11)
    for _ in range(200):
        pieces: list[bytes | memoryview] = [
            rng.randbytes(rng.choice([0, 1, 5, 16, 40])) for _ in range(rng.randrange(0, 12))
        ]
        if pieces:
            pieces[0] = memoryview(pieces[0])
        most = rng.randrange(1, 24)
        parts = joined(pieces, most)
        assert b"".join(parts) == b"".join(pieces)
        assert all(len(part) == most for part in parts[:-1])
        assert all(0 < len(part) <= most and type(part) is bytes for part in parts)


def _annex_b(rng: random.Random) -> bytes:
    """Bytes rich in start codes, zeros and empty units: a few NAL units' worth."""
    words = [b"\0\0\1", b"\0\0\0\1", b"\0", b"\0\0", b"\1", b"\3", b"\x65\x88", b"\x67"]
    return b"".join(rng.choice(words) for _ in range(rng.randrange(0, 40)))


def test_start_codes_looked_for_before_the_last_unit_find_what_a_whole_look_finds() -> None:
    """An access unit read again, told where its last unit begins (as its table keeps it),
    has the units it had: at the lead its table keeps, or with none (0)."""
    rng = random.Random(5)
    checked = 0
    for _ in range(5000):
        data = _annex_b(rng)
        spans = list(nal_spans(data))
        lead = lead_of(data, *spans[-1]) if spans else 0
        checked += lead > 0
        assert led_spans(data, lead) == spans
        assert led_spans(data, 0) == spans
    assert checked > 1000  # the lead is most often kept


def test_the_tables_leads_read_an_mpeg_ts_recording_as_a_whole_look_reads_it(
    footage: dict[str, list[Any]],
) -> None:
    """x264 with B-frames and x265 in MPEG-TS: every video sample's bytes, read with the
    leads its table keeps, are those read looking through each access unit whole."""
    for style in ("ts", "hevc"):
        path = footage[style][0].path
        fd = os.open(path, os.O_RDONLY)
        try:
            recording = read_recording(fd, os.fstat(fd).st_size)
            video = recording.video
            assert all(lead > 0 for lead in video.sub)
            assert len(video.sub) == len(video)
            led = ts_ranges(fd, recording, [(video, 0, len(video))])
            video.sub = array("I", bytes(4 * len(video)))  # 0: each looked through whole
            whole = ts_ranges(fd, recording, [(video, 0, len(video))])
        finally:
            os.close(fd)
        assert led == whole
        assert len(led[0]) == sum(video.sizes)


def test_a_recording_opened_again_is_the_same_file_or_refused(tmp_path: Path) -> None:
    """A clip checks a recording's path once (no symlink on the way); later opens of it
    go by that path, and a directory on it swapped for a symlink to a copy is refused by
    what is opened (another file), not read through."""
    root = tmp_path / "recordings"
    (root / "cam").mkdir(parents=True)
    recording = root / "cam" / "a.ts"
    recording.write_bytes(b"G" * 188 * 4)
    info = recording.stat()
    clip = Clip(b"", 0, '"x"', {"cam/a.ts": stamp_of(info)})
    checked: list[str] = []

    def path_of(source: str) -> Path:
        checked.append(source)
        return recording_path(root, source)

    os.close(_open_checked(clip, "cam/a.ts", path_of))
    os.close(_open_checked(clip, "cam/a.ts", path_of))
    assert checked == ["cam/a.ts"]  # the path checked once
    shutil.copytree(root / "cam", tmp_path / "copy", copy_function=shutil.copy2)
    (root / "cam").rename(tmp_path / "moved")
    (root / "cam").symlink_to(tmp_path / "copy", target_is_directory=True)
    with pytest.raises(ClipBroken):
        _open_checked(clip, "cam/a.ts", path_of)


@pytest.mark.parametrize("seed", range(30))
def test_audio_of_several_pieces_and_rates_is_placed_as_one_by_one(seed: int) -> None:
    """Pieces one after another, each its own recording (a rate of its own, sometimes
    not the track's), jitter, gaps and overlaps at the joins: the same decode times as
    the rule one at a time, on the first piece's clock."""
    rng = random.Random(1000 + seed)
    track = _Track()
    pieces: list[tuple[list[int], int]] = []
    start = rng.randrange(1 << 30)
    for piece in range(rng.randrange(2, 5)):
        rate = rng.choice([16000, 44100, 48000]) if seed % 3 == 0 else 48000
        ticks, t = [], rng.randrange(1 << 20)
        for _ in range(rng.randrange(1, 400)):
            ticks.append(t)
            t += 1024 + (rng.randrange(-600, 600) if rng.random() < 0.05 else 0)
        table = _audio_table(rate, ticks)
        raw = [(v * CLOCK + rate // 2) // rate for v in ticks]
        item = MediaItem(
            source=f"{piece}.ts", kind=RECORDED, duration=0.0, pdt_us=0, discontinuity=False,
            size=0, shift=(start - raw[0]) % PTS_WRAP,  # its first sample at `start`
        )  # fmt: skip
        recording = Recording("mpegts", 0, Table(b"vide", "h264", CLOCK, b""), table)
        _audio_samples(track, _Piece(item, start, start + 1), recording, table, None, None)
        pieces.append(([value - raw[0] + start for value in raw], rate))
        # The next piece starts about where this one ends, give or take a frame or two.
        start = raw[-1] - raw[0] + start + rng.randrange(-2, 4) * _AAC_FRAME * CLOCK // rate
    assert list(track.dts) == _placed_one_by_one(pieces)
