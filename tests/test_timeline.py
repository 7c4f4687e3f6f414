"""Spans and gaps, on plain data."""

from __future__ import annotations

from agent.index import Segment
from agent.timeline import Span, clip, drifted, is_gap, spans

S = 1_000_000
FRAME = 3600  # 40 ms at 90 kHz


def seg(
    start_s: float,
    dur_s: float = 10,
    pts: int | None = None,
    container: str = "mpegts",
    timescale: int = 90000,
) -> Segment:
    first = pts if pts is not None else 126000
    return Segment(
        path=f"c/{start_s}",
        camera="c",
        start_us=int(start_s * S),
        end_us=int(start_s * S + dur_s * S),
        size=1,
        mtime_ns=1,
        inode=1,
        container=container,
        video_codec="h264",
        has_audio=False,
        timescale=timescale,
        first_pts=first,
        duration=int(dur_s * timescale),
        frame_ticks=FRAME * timescale // 90000,
    )


def test_back_to_back_segments_are_one_span() -> None:
    run = [seg(0), seg(10), seg(20)]
    assert spans(run, S) == [Span(0, 30 * S, 3)]


def test_whole_second_names_tolerate_a_second() -> None:
    # Names floor to the second: the next segment may seem to start up to a second late.
    assert not is_gap(seg(0, 10.04, pts=0), seg(10.9, 10, pts=0), S)
    assert not is_gap(seg(0, 10.04, container="mp4"), seg(11, 10, container="mp4"), S)
    assert is_gap(seg(0, 10, container="mp4"), seg(11.2, 10, container="mp4"), S)


def test_continuous_timestamps_decide_when_names_are_coarse() -> None:
    a = seg(0, 10, pts=0)
    b = seg(10, 10, pts=10 * 90000)  # timestamps continue: no footage is missing
    assert not is_gap(a, b, S)
    jumped = seg(10, 10, pts=10 * 90000 + 45000)  # half a second of frames is missing
    assert is_gap(a, jumped, S)


def test_timestamps_that_disagree_with_names_are_ignored() -> None:
    a = seg(0, 10, pts=0)
    restarted = seg(300, 10, pts=0)  # a recorder restart resets the clock; names show the gap
    assert is_gap(a, restarted, S)
    reset_no_gap = seg(10, 10, pts=126000)
    assert not is_gap(a, reset_no_gap, S)


def test_timestamps_wrap_at_33_bits() -> None:
    a = seg(0, 10, pts=(1 << 33) - 450000)
    b = seg(10, 10, pts=(1 << 33) - 450000 + 900000 - (1 << 33))
    assert not is_gap(a, b, S)


def test_exact_names_allow_one_frame() -> None:
    a = seg(0, 10, container="mp4")
    assert not is_gap(a, seg(10.04, container="mp4"), 1)
    assert is_gap(a, seg(10.1, container="mp4"), 1)


def test_gap_splits_spans_and_overlaps_merge() -> None:
    run = [seg(0), seg(9.5), seg(19.5), seg(60), seg(70)]
    assert spans(run, S) == [Span(0, 29_500_000, 3), Span(60 * S, 80 * S, 2)]


def test_clip_keeps_counts() -> None:
    found = [Span(0, 30 * S, 3), Span(60 * S, 80 * S, 2)]
    assert clip(found, 5 * S, 65 * S) == [Span(5 * S, 30 * S, 3), Span(60 * S, 65 * S, 2)]
    assert clip(found, 30 * S, 60 * S) == []
    assert spans([], S) == []


def test_a_chained_wall_clock_may_drift_as_far_as_names_can_say() -> None:
    # Whole-second names: a chained time up to a second (and a frame) off still holds.
    assert not drifted(11 * S, seg(10), S)
    assert not drifted(9 * S - 50_000, seg(10), S)
    assert drifted(11 * S + 70_000, seg(10), S)
    # Exact names: a frame and 20 ms.
    assert not drifted(10 * S + 55_000, seg(10), 1)
    assert drifted(10 * S - 65_000, seg(10), 1)
