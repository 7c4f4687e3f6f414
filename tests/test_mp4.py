"""Fragmented MP4 read box by box and served on a session's timeline: fragments found
where ffprobe finds the keyframes, decode times moved exactly, any byte range alike."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

from agent.containers import mp4
from agent.containers.probe import fmp4_cut, probe
from agent.demo import Rendered

from .hls import video_facts, video_keyframes


def test_keyframes_are_found_box_by_box(footage: dict[str, list[Rendered]]) -> None:
    """Each keyframe is found in its fragment (a moof's offset, its index among the
    fragment's video samples), at its time, as ffprobe sees it."""
    for item in footage["fmp4"]:
        facts = probe(item.path)
        data = item.path.read_bytes()
        # The fragments end where ffmpeg's trailer (mfra, its own index) begins.
        assert data[facts.media_end + 4 : facts.media_end + 8] == b"mfra"
        assert data[facts.media_start + 4 : facts.media_start + 8] == b"moof"
        for offset, _, _ in facts.keyframes:
            assert data[offset + 4 : offset + 8] == b"moof"
        found = [Fraction(pts, facts.timescale) for _, _, pts in facts.keyframes]
        assert found == video_keyframes(item.path)
        assert not facts.problem


def test_cuts_are_the_fragments_at_and_after_a_time(footage: dict[str, list[Rendered]]) -> None:
    path = footage["fmp4"][1].path
    facts = probe(path)
    (first, _, _), (second, sample, pts) = facts.keyframes[:2]
    end = facts.media_end
    # At or before: the first fragment is no cut (the recording is served whole).
    assert fmp4_cut(path, first, end, first, pts - 1, after=False) is None
    cut = fmp4_cut(path, first, end, first, pts + 1, after=False)
    assert cut is not None
    assert (cut.offset, cut.sample, cut.pts) == (second, sample, pts)
    after = fmp4_cut(path, first, end, first, pts - 1, after=True)
    assert after == cut
    assert fmp4_cut(path, first, end, first, facts.first_pts + facts.duration, after=True) is None


def _retimed_bytes(path: Path, shift: int, chunk: int) -> bytes:
    """The whole file as served with its decode times moved by `shift` video ticks, read
    `chunk` bytes at a time."""
    facts = probe(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        timeline = mp4.retimed(fd, facts.media_start, [facts.media_start], shift)
        out = bytearray()
        size = os.fstat(fd).st_size
        for position in range(0, size, chunk):
            data = bytearray(os.pread(fd, chunk, position))
            timeline.apply(fd, position, data)
            out += data
        return bytes(out)
    finally:
        os.close(fd)


def test_decode_times_move_exactly_and_alike_in_any_byte_range(
    footage: dict[str, list[Rendered]], tmp_path: Path
) -> None:
    source = footage["fmp4"][1].path
    facts = probe(source)
    shift = 5 * facts.timescale  # five seconds later
    whole = _retimed_bytes(source, shift, 1 << 30)
    assert _retimed_bytes(source, shift, 7) == whole  # boxes split across reads
    assert _retimed_bytes(source, shift, 4096) == whole
    moved = tmp_path / "moved.mp4"
    moved.write_bytes(whole)
    for stream in ("v", "a"):
        before, after = video_facts(source, stream), video_facts(moved, stream)
        assert after.start - before.start == 5
        assert after.end - before.end == 5
    assert len(whole) == source.stat().st_size


def _packets(path: Path) -> list[tuple[str, ...]]:
    """Every packet's stream, times, size, flags and data digest, by ffprobe (not its
    duration: ffprobe gives none for some last packets of a fragment)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "packet=stream_index,pts,dts,size,flags", "-show_data_hash", "MD5",
         "-of", "csv", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return sorted(tuple(line.split(",")) for line in out.splitlines())


def test_a_fragment_cut_in_two_holds_the_same_packets(
    footage: dict[str, list[Rendered]], tmp_path: Path
) -> None:
    """A fragment cut at a video sample inside it (a keyframe of a MediaMTX part) becomes
    two fragments of their own: together, every packet of the original, at its time,
    with its data; the sound split between them by time."""
    source = footage["fmp4"][1].path
    facts = probe(source)
    (moof_at, _, _), (following, _, _) = facts.keyframes[:2]
    data = source.read_bytes()
    fd = os.open(source, os.O_RDONLY)
    try:
        timeline = mp4.retimed(fd, facts.media_start, [facts.media_start], 0)
        head, after = timeline.cut(fd, moof_at, 0, 12)
        tail, after_tail = timeline.cut(fd, moof_at, 12, None)
    finally:
        os.close(fd)
    assert after == after_tail == following
    rebuilt = tmp_path / "rebuilt.mp4"
    rebuilt.write_bytes(data[: facts.media_start] + head + tail + data[following : facts.media_end])
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(data[: facts.media_end])
    assert _packets(rebuilt) == _packets(whole)
    assert head[4:8] == tail[4:8] == b"moof"


def test_a_track_run_that_claims_more_samples_than_it_holds_ends_the_recording(
    footage: dict[str, list[Rendered]], tmp_path: Path
) -> None:
    """A corrupt sample count (four billion) is read as the end of the whole fragments,
    at once, not as four billion samples to walk."""
    source = footage["fmp4"][1].path
    facts = probe(source)
    broken_at = facts.keyframes[1][0]
    data = bytearray(source.read_bytes())
    at = data.index(b"trun", broken_at) + 4 + 4  # past the box type, version and flags
    data[at : at + 4] = (0xFFFFFFF0).to_bytes(4, "big")
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data)
    found = probe(damaged)
    assert "corrupt" in found.problem
    assert found.media_end == broken_at
    assert [offset for offset, _, _ in found.keyframes] == [facts.keyframes[0][0]]
