"""Where each sample of a recording lies on a session's timeline (pure): the session's
media, its export and its I-frame playlist all place samples by these functions, so
that they show the very same frames at the very same times."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import repeat
from operator import add, floordiv, mul

from .containers.mpegts import CLOCK, PTS_WRAP, pts_delta
from .containers.samples import Table
from .playlists import FRAGMENTS, REMUX, MediaItem


def scaled(values: Sequence[int], multiply: int, plus: int, divide: int) -> array[int]:
    """(value * multiply + plus) // divide of each value, at C speed (pure)."""
    if multiply == divide:  # (v*d + k*d + r) // d with 0 <= r < d is v + k
        return array("q", map(add, values, repeat(plus // divide)))
    scaled = map(add, map(mul, values, repeat(multiply)), repeat(plus))
    return array("q", map(floordiv, scaled, repeat(divide)))


def timeline_of(item: MediaItem, start: int, table: Table) -> tuple[int, int, int]:
    """(multiply, plus, divide): a time v of `table`'s own clock (decode or presentation,
    without the table's shift) is (v * multiply + plus) // divide on the session's
    timeline (pure).

    MPEG-TS: the plan's shift is added modulo 2^33 and the result unwrapped near the
    item's start; fragmented MP4: the shift is in the video's timescale; plain MP4
    (remuxed for HLS): the plan gives an offset in seconds from the file's presentation
    times."""
    scale = table.timescale
    if item.kind == FRAGMENTS:
        shift = (item.shift * scale + item.timescale // 2) // max(item.timescale, 1)
        return CLOCK, (table.shift + shift) * CLOCK + scale // 2, scale
    if item.kind == REMUX:
        offset = round((item.offset or 0.0) * CLOCK)
        return CLOCK, table.shift * CLOCK + scale // 2 + offset * scale, scale
    base = (table.dts[0] * CLOCK + scale // 2) // scale if table.dts else 0
    first = start + pts_delta((base + item.shift) % PTS_WRAP, start % PTS_WRAP)
    return CLOCK, scale // 2 + (first - base) * scale, scale


def session_times(item: MediaItem, start: int, table: Table, values: array[int]) -> array[int]:
    """`values`, times of `table`'s samples in the recording's own clock, on the session's
    timeline (pure; `timeline_of`)."""
    return scaled(values, *timeline_of(item, start, table))


def video_times(item: MediaItem, start: int, table: Table) -> tuple[array[int], array[int]]:
    """The decode and presentation times of a video table's samples on the session's
    timeline (pure; `session_times`)."""
    shown = array("q", map(add, table.dts, table.cto))
    return session_times(item, start, table, table.dts), session_times(item, start, table, shown)
