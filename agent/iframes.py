"""A session's I-frame playlist and multivariant playlist (RFC 8216 4.3.3.6, 4.3.4.2,
4.3.4.3), made from its plan and its recordings' sample tables, with no copy of any
media: each keyframe is a byte range of the session's own media URL.

An entry's range runs from the keyframe's first packet to the first packet of the next
video frame (the audio packets muxed between come with it), in the bytes the media URL
serves (after a cut item's PAT and PMT, before any audio sent after it). Each item's
PAT and PMT are its EXT-X-MAP (a byte range at the start of the same URL), so that any
keyframe decodes alone. An entry lasts until the next keyframe (the last, until the
session's end) and carries its wall-clock time.

Made for sessions served as MPEG-TS (H.264 recordings served as recorded). Sessions
served as fragmented MP4 have no I-frame playlist yet: their multivariant playlist
lists the media playlist alone.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .containers import mpegts
from .containers.mpegts import CLOCK, PACKET, PTS_WRAP, pts_delta
from .containers.samples import Recording, Table
from .errors import ProbeError
from .playlists import CUT, RECORDED, MediaItem, Plan, media_name, pdt_text

IFRAMES = "iframes.m3u8"
MULTIVARIANT = "multivariant.m3u8"
_HEAD_PACKETS = 16  # an item's PAT and PMT must be within its first packets


@dataclass(frozen=True, slots=True)
class IFrame:
    """One keyframe of a session: its item, its bytes in what the item's URL serves, and
    its presentation time on the session's timeline (90 kHz, OUT_START at the start)."""

    item: int
    offset: int
    length: int
    tick: int


def served_as_ts(plan: Plan) -> bool:
    """Whether the session's media are MPEG-TS served as recorded (then it has I-frames)."""
    return all(item.kind in (RECORDED, CUT) and not item.mp4_tag for item in plan.items)


def item_iframes(number: int, item: MediaItem, table: Table, head: int, start: int) -> list[IFrame]:
    """The keyframes of item `number` (as its session serves it: `Plan.at`), from its
    recording's video table (pure). `head`: the bytes the item's URL serves before the
    recording's own (a cut item's PAT and PMT); `start`: where the item starts on the
    session's timeline."""
    end = item.stop_at or item.size
    first = bisect.bisect_left(table.at, item.cut_at)
    found = []
    for k in range(first, len(table)):
        at = table.at[k]
        if at >= end:
            break
        if not table.sync[k]:
            continue
        following = table.at[k + 1] if k + 1 < len(table) else table.end
        stop = min(following, end)
        if stop <= at:
            continue
        served = (table.dts[k] + table.cto[k] + item.shift) % PTS_WRAP
        tick = start + pts_delta(served, start % PTS_WRAP)
        found.append(IFrame(number, head + at - item.cut_at, stop - at, tick))
    return found


def render(plan: Plan, frames: Sequence[IFrame], maps: Sequence[int]) -> str:
    """The I-frame playlist (pure): `frames` in session order, `maps[n]` the bytes of item
    n's PAT and PMT at the start of its URL."""
    end = plan.starts[-1]
    durations = [
        max(0, (frames[k + 1].tick if k + 1 < len(frames) else end) - frame.tick) / CLOCK
        for k, frame in enumerate(frames)
    ]
    target = max(1, math.ceil(max(durations, default=1) - 0.0005))
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:5",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-I-FRAMES-ONLY",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    last_item = -1
    for frame, duration in zip(frames, durations, strict=True):
        item = plan.items[frame.item]
        name = media_name(frame.item, False)
        if frame.item != last_item:
            if item.discontinuity and last_item >= 0:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f'#EXT-X-MAP:URI="{name}",BYTERANGE="{maps[frame.item]}@0"')
            last_item = frame.item
        wall = item.pdt_us + (frame.tick - plan.starts[frame.item]) * 1_000_000 // CLOCK
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{pdt_text(wall)}")
        lines.append(f"#EXTINF:{duration:.6f},")
        lines.append(f"#EXT-X-BYTERANGE:{frame.length}@{frame.offset}")
        lines.append(name)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def multivariant(plan: Plan, width: int, height: int, with_iframes: bool) -> str:
    """The multivariant playlist (pure, from the plan alone: instant, whatever the
    recordings): the media playlist with its peak and average bit rates (bits a second,
    from each item's bytes and duration), and, for a session served as MPEG-TS, its
    I-frame playlist, whose BANDWIDTH is bounded by the same peak (it is not made until
    asked for); the picture's size when known."""
    peak = average = 0
    total = sum(item.duration for item in plan.items)
    sizes = [max(0, (item.stop_at or item.size) - item.cut_at) for item in plan.items]
    for item, size in zip(plan.items, sizes, strict=True):
        if item.duration > 0:
            peak = max(peak, math.ceil(size * 8 / item.duration))
    if total > 0:
        average = math.ceil(sum(sizes) * 8 / total)
    resolution = f",RESOLUTION={width}x{height}" if width and height else ""
    lines = ["#EXTM3U", "#EXT-X-VERSION:5", "#EXT-X-INDEPENDENT-SEGMENTS"]
    lines.append(
        f"#EXT-X-STREAM-INF:BANDWIDTH={max(1, peak)},AVERAGE-BANDWIDTH={max(1, average)}"
        f"{resolution}"
    )
    lines.append("index.m3u8")
    if with_iframes:
        lines.append(
            f'#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={max(1, peak)}{resolution},URI="{IFRAMES}"'
        )
    return "\n".join(lines) + "\n"


def psi_head(fd: int) -> int:
    """The bytes at the start of an MPEG-TS recording up to and including its first PMT
    packet (its PAT before it), if that is within its first packets; else 0."""
    head = os.pread(fd, PACKET * _HEAD_PACKETS, 0)
    head = head[: len(head) - len(head) % PACKET]
    program = mpegts.program(head)
    seen_pat = False
    for position in range(0, len(head), PACKET):
        if head[position] != 0x47:
            return 0
        pid = (head[position + 1] & 0x1F) << 8 | head[position + 2]
        seen_pat = seen_pat or pid == 0
        if pid == program.pmt_pid and seen_pat:
            return position + PACKET
    return 0


def build(
    plan: Plan,
    recordings: Callable[[str], Recording],
    open_recording: Callable[[str], int],
) -> str | None:
    """The session's I-frame playlist (None when it is not served as MPEG-TS, or has no
    keyframe) (blocking: reads the recordings' tables, and each recording's first
    packets). ProbeError or OSError if a recording cannot be read."""
    if not served_as_ts(plan):
        return None
    frames: list[IFrame] = []
    maps: list[int] = []
    heads: dict[str, int] = {}
    for n in range(len(plan.items)):
        item = plan.at(n)
        recording = recordings(item.source)
        if item.kind == CUT:
            maps.append(len(item.prefix) * PACKET)
        else:
            if item.source not in heads:
                fd = open_recording(item.source)
                try:
                    heads[item.source] = psi_head(fd)
                finally:
                    os.close(fd)
            maps.append(heads[item.source])
        if not maps[-1]:
            raise ProbeError("a recording has no PAT and PMT in its first packets")
        head = len(item.prefix) * PACKET if item.kind == CUT else 0
        frames.extend(item_iframes(n, item, recording.video, head, plan.starts[n]))
    return render(plan, frames, maps) if frames else None
