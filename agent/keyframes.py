"""The picture at a moment, for the page's scrub previews: the keyframe of a camera's
recording at or before a wall-clock time, as the bytes a browser's video decoder takes
(WebCodecs: an MP4 sample and its decoder configuration), read from the recording's
sample tables. The box decodes nothing: a preview costs it an index query and one
frame's read.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from .containers.samples import Table
from .times import format_us

_REORDERED = 64  # pictures a decoder may hold back (H.264 and H.265 allow 16)


@dataclass(frozen=True)
class Keyframe:
    """A keyframe of a recording: its sample number and its wall-clock time."""

    sample: int
    time_us: int


def keyframe_at(table: Table, start_us: int, t_us: int) -> Keyframe | None:
    """The last keyframe of a recording's video shown at or before `t_us` (the first, if
    `t_us` is before it), its times placed from `start_us`, the wall-clock time of its
    first frame (pure). None if it has no keyframe."""
    count = len(table)
    if not count:
        return None
    # Its first frame is the earliest shown of its first pictures (B-frames reorder a few).
    first = min(table.dts[k] + table.cto[k] for k in range(min(count, _REORDERED)))
    scale = table.timescale
    best: Keyframe | None = None
    for k in range(count):
        if not table.sync[k]:
            continue
        when = start_us + (table.dts[k] + table.cto[k] - first) * 1_000_000 // scale
        if best is None or when <= t_us:
            best = Keyframe(k, when)
        if when > t_us:
            break
    return best


def answer(
    camera_id: str, keyframe: Keyframe, table: Table, config: tuple[str, bytes], data: bytes
) -> dict[str, object]:
    """The API's view of a keyframe (pure)."""
    codec, description = config
    return {
        "camera_id": camera_id,
        "time": format_us(keyframe.time_us),
        "codec": codec,
        "width": table.width,
        "height": table.height,
        "description": base64.b64encode(description).decode(),
        "data": base64.b64encode(data).decode(),
    }
