"""Fragmented MP4 read box by box and served on a session's timeline: fragments found
where ffprobe finds the keyframes, decode times moved exactly, any byte range alike."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

from agent import mp4
from agent.demo import Rendered
from agent.probe import fmp4_cut, probe

from .hls import video_facts, video_keyframes


def test_fragments_are_found_box_by_box(footage: dict[str, list[Rendered]]) -> None:
    """Each fragment's offset is a moof's, its time its earliest frame's; those that
    start with a keyframe are the file's keyframes, as ffprobe sees them."""
    for item in footage["fmp4"]:
        facts = probe(item.path)
        data = item.path.read_bytes()
        # The fragments end where ffmpeg's trailer (mfra, its own index) begins.
        assert data[facts.media_end + 4 : facts.media_end + 8] == b"mfra"
        assert data[facts.media_start + 4 : facts.media_start + 8] == b"moof"
        for offset, _, _ in facts.fragments:
            assert data[offset + 4 : offset + 8] == b"moof"
        starts = [Fraction(pts, facts.timescale) for _, pts, sync in facts.fragments if sync]
        assert starts == video_keyframes(item.path)
        assert not facts.problem


def test_cuts_are_the_fragments_at_and_after_a_time(footage: dict[str, list[Rendered]]) -> None:
    path = footage["fmp4"][1].path
    facts = probe(path)
    (first, _, _), (second, pts, _) = facts.fragments[:2]
    end = facts.media_end
    # At or before: the first fragment is no cut (the recording is served whole).
    assert fmp4_cut(path, first, end, first, pts - 1, after=False) is None
    cut = fmp4_cut(path, first, end, first, pts + 1, after=False)
    assert cut is not None
    assert (cut.offset, cut.pts) == (second, pts)
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
