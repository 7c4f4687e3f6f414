"""Test helpers for HLS: parse a playlist, inspect media with ffprobe."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path


@dataclass
class Entry:
    uri: str
    duration: float
    pdt: str | None
    discontinuity: bool
    init: str | None = None  # EXT-X-MAP's URI


@dataclass
class Playlist:
    tags: dict[str, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    ended: bool = False


def parse(text: str) -> Playlist:
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    playlist = Playlist()
    duration: float | None = None
    pdt: str | None = None
    discontinuity = False
    init: str | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-MAP:"):
            match = re.fullmatch(r'#EXT-X-MAP:URI="([^"]+)"', line)
            assert match is not None, line
            init = match.group(1)
        elif line == "#EXT-X-ENDLIST":
            playlist.ended = True
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = line.split(":", 1)[1]
        elif line.startswith("#"):
            name, _, value = line[1:].partition(":")
            playlist.tags[name] = value
        elif line:
            assert duration is not None, f"{line} has no EXTINF"
            playlist.entries.append(Entry(line, duration, pdt, discontinuity, init))
            duration, pdt, discontinuity = None, None, False
    return playlist


@dataclass
class VideoFacts:
    first_is_keyframe: bool
    start: Fraction  # seconds
    end: Fraction  # last frame's pts + duration, seconds

    @property
    def duration(self) -> Fraction:
        return self.end - self.start


def _video_packets(path: Path, stream: str = "v") -> tuple[Fraction, list[dict[str, str]]]:
    """A stream's time base and packets (pts, duration, flags), from ffprobe; the first
    video stream unless `stream` is "a"."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            f"{stream}:0",
            "-show_entries",
            "packet=pts,duration,flags:stream=time_base",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    data = json.loads(out)
    return Fraction(data["streams"][0]["time_base"]), data["packets"]


def video_facts(path: Path, stream: str = "v") -> VideoFacts:
    """Where the video (or with `stream` "a", the audio) starts and ends, from ffprobe."""
    base, packets = _video_packets(path, stream)
    start = min(int(p["pts"]) for p in packets) * base
    # ffprobe gives no duration for the last audio packet of a fragment: the one before's.
    last = [int(p["duration"]) for p in packets if "duration" in p][-1]
    end = max(int(p["pts"]) + int(p.get("duration", last)) for p in packets) * base
    return VideoFacts(packets[0]["flags"].startswith("K"), start, end)


def video_keyframes(path: Path) -> list[Fraction]:
    """Presentation times of the video keyframes, in seconds, sorted."""
    base, packets = _video_packets(path)
    return sorted(int(p["pts"]) * base for p in packets if p["flags"].startswith("K"))
