"""Segment facts from container headers, checked against ffprobe's packet timestamps."""

from __future__ import annotations

import itertools
import subprocess
import tracemalloc
from fractions import Fraction
from pathlib import Path

import pytest

from agent.containers.probe import ProbeError, keyframes, probe, same_streams
from agent.demo import Rendered, render_run

from .conftest import run_in_thread
from .hls import video_facts, video_keyframes


@pytest.mark.parametrize("kind", ["ts", "ts_reset", "hevc", "mp4", "fmp4"])
def test_duration_is_exact_to_the_tick(footage: dict[str, list[Rendered]], kind: str) -> None:
    """From the earliest presentation time to the last frame's end, for every GOP
    structure (x264 B-frames, x265 open GOPs whose leading pictures come before the
    keyframe), and the audio's start and end, against ffprobe's packets."""
    for item in footage[kind]:
        facts = probe(item.path)
        video = video_facts(item.path)
        first, duration = video.start, video.duration
        assert Fraction(facts.duration, facts.timescale) == duration
        assert facts.video_codec == ("hevc" if kind == "hevc" else "h264")
        assert facts.has_audio
        assert Fraction(facts.frame_ticks, facts.timescale) == Fraction(1, 25)
        assert Fraction(facts.first_pts, facts.timescale) == first
        audio = video_facts(item.path, stream="a")
        assert facts.audio_start is not None
        assert facts.audio_end is not None
        tick = Fraction(1, facts.timescale)
        assert (
            abs(Fraction(facts.first_pts + facts.audio_start, facts.timescale) - audio.start)
            <= tick
        )
        # MP4 may trim the last AAC frame by an edit list: within one frame there.
        frame = tick if kind not in ("mp4", "fmp4") else Fraction(1024, 48000)
        assert (
            abs(Fraction(facts.first_pts + facts.audio_end, facts.timescale) - audio.end) <= frame
        )
    assert {probe(i.path).container for i in footage[kind]} == {
        {"mp4": "mp4", "fmp4": "fmp4"}.get(kind, "mpegts")
    }


def test_open_gop_segments_start_before_their_keyframe(
    footage: dict[str, list[Rendered]],
) -> None:
    later = footage["hevc"][1].path  # the first segment of a run has no leading pictures
    facts = probe(later)
    assert facts.first_pts < keyframes(later)[0][0]


@pytest.mark.parametrize("kind", ["ts", "hevc", "mp4", "fmp4"])
def test_keyframes_match_ffprobe(footage: dict[str, list[Rendered]], kind: str) -> None:
    for item in footage[kind]:
        facts = probe(item.path)
        found = [Fraction(k, facts.timescale) for k, _ in keyframes(item.path)]
        assert found == video_keyframes(item.path)
        assert len(found) == 2  # a keyframe each second in 2 s segments


def test_ts_timestamps_continue_across_segments(footage: dict[str, list[Rendered]]) -> None:
    facts = [probe(item.path) for item in footage["ts"]]
    for before, after in itertools.pairwise(facts):
        assert after.first_pts == before.first_pts + before.duration


@pytest.mark.parametrize("kind", ["mp4", "fmp4"])
def test_truncated_mp4_is_not_read(
    footage: dict[str, list[Rendered]], tmp_path: Path, kind: str
) -> None:
    data = footage[kind][0].path.read_bytes()
    partial = tmp_path / "partial.mp4"
    partial.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProbeError):
        probe(partial)


@pytest.mark.parametrize(
    "content", [b"", b"hello world" * 100, b"\x47" + b"\x00" * 400, b"\x00\x00\x00\x08ftyp"]
)
def test_not_media(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.ts"
    path.write_bytes(content)
    with pytest.raises(ProbeError):
        probe(path)


def test_big_frames_grow_the_tail_read(tmp_path: Path) -> None:
    """Frames far larger than the first tail read still give an exact duration."""
    # 1080p at 5 fps: ~45 KiB a frame, so the first 128 KiB tail holds too few frames.
    run = run_in_thread(render_run(tmp_path, 2, 2, size="1920x1080", rate=5))
    assert run[0].path.stat().st_size > 3 * 131072
    facts = probe(run[0].path)
    assert Fraction(facts.duration, facts.timescale) == video_facts(run[0].path).duration


def test_keyframes_of_a_long_recording_are_read_in_bounded_memory(
    tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    """An hour-long TS recording must not sit in memory whole to find its keyframes."""
    one = footage["ts"][0].path.read_bytes()
    long = tmp_path / "long.ts"
    copies = 1 + (12 << 20) // len(one)
    long.write_bytes(one * copies)
    tracemalloc.start()
    try:
        found = keyframes(long)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(found) == copies * len(keyframes(footage["ts"][0].path))
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB for a {long.stat().st_size >> 20} MiB file"


def test_an_empty_edit_delays_the_video(tmp_path: Path) -> None:
    """A Frigate recording whose audio starts before its video: the video track begins
    with an empty edit, so it is presented later than its samples say."""

    def ffmpeg(*argv: str) -> None:
        subprocess.run(["ffmpeg", "-v", "error", "-y", *argv], check=True, timeout=60)

    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-bf",
        "2",
        "-force_key_frames",
        "expr:gte(t,n_forced*1)",
        str(tmp_path / "v.mp4"),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
        "-t",
        "4",
        "-c:a",
        "aac",
        str(tmp_path / "a.m4a"),
    )
    recording = tmp_path / "frigate.mp4"
    ffmpeg(
        "-i",
        str(tmp_path / "a.m4a"),
        "-itsoffset",
        "0.127",
        "-i",
        str(tmp_path / "v.mp4"),
        "-map",
        "1:v",
        "-map",
        "0:a",
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        str(recording),
    )
    facts = probe(recording)
    video = video_facts(recording)
    assert video.start > Fraction(1, 10)  # ffprobe sees the delay too
    assert Fraction(facts.first_pts, facts.timescale) == video.start
    assert Fraction(facts.duration, facts.timescale) == video.duration
    found = [Fraction(pts, facts.timescale) for pts, _ in keyframes(recording)]
    assert found == video_keyframes(recording)


def test_same_streams_compares_decoder_configuration_when_both_have_one() -> None:
    assert same_streams("256:1b,257:0f;config:aa", "256:1b,257:0f;config:aa")
    assert not same_streams("256:1b,257:0f;config:aa", "256:1b,257:0f;config:bb")
    assert same_streams("256:1b,257:0f", "256:1b,257:0f;config:bb")  # none found in one
    assert not same_streams("256:1b,257:0f;config:aa", "256:24,257:0f;config:aa")
