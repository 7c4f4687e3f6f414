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
_CHILDREN = 8 + 78  # a visual sample entry's box header and fields, then its child boxes


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


def decoder_config(entry: bytes) -> tuple[str, bytes] | None:
    """A video sample entry's codec string (RFC 6381; ISO/IEC 14496-15 Annex E) and its
    decoder configuration record (avcC, hvcC), or None for another codec (pure). The
    entry's child boxes follow its 78 bytes of VisualSampleEntry fields (ISO/IEC
    14496-12 12.1.3)."""
    makers = {b"avcC": (_avc_codec, 4), b"hvcC": (_hevc_codec, 13)}
    at = _CHILDREN
    while at + 8 <= len(entry):
        size = int.from_bytes(entry[at : at + 4], "big")
        if size < 8 or at + size > len(entry):
            return None
        kind = entry[at + 4 : at + 8]
        if kind in makers:
            make, least = makers[kind]
            record = entry[at + 8 : at + size]
            if len(record) < least:
                return None
            return make(record, entry[4:8].decode("latin-1")), record
        at += size
    return None


def _avc_codec(record: bytes, tag: str) -> str:
    """avc1.PPCCLL: AVCProfileIndication, profile_compatibility, AVCLevelIndication."""
    return f"{tag}.{record[1]:02x}{record[2]:02x}{record[3]:02x}"


def _hevc_codec(record: bytes, tag: str) -> str:
    """hvc1.[A-C]P.C.TL.CC...: profile space and profile, the compatibility flags in
    reverse bit order, tier and level, the constraint bytes but trailing zeros."""
    space = "" if not record[1] >> 6 else "ABC"[(record[1] >> 6) - 1]
    profile = record[1] & 0x1F
    tier = "H" if record[1] & 0x20 else "L"
    flags = int.from_bytes(record[2:6], "big")
    reversed_flags = int(f"{flags:032b}"[::-1], 2)
    constraints = list(record[6:12])
    while constraints and not constraints[-1]:
        constraints.pop()
    parts = [f"{tag}", f"{space}{profile}", f"{reversed_flags:x}", f"{tier}{record[12]}"]
    parts += [f"{byte:02x}" for byte in constraints]
    return ".".join(parts)


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
