"""A session's I-frame playlist and multivariant playlist (RFC 8216 4.3.3.6, 4.3.4.2,
4.3.4.3), made from its plan and its recordings' sample tables, with no copy of any
media: each keyframe is a byte range of the session's own media URL.

An entry's range runs from the keyframe's first packet to the first packet of the next
video frame (the audio packets muxed between come with it), in the bytes the media URL
serves (after a cut item's PAT and PMT, before any audio sent after it). Each item's
PAT and PMT are its EXT-X-MAP (a byte range at the start of the same URL), so that any
keyframe decodes alone. An entry lasts until the next keyframe (the last, until the
session's end) and carries its wall-clock time.

A session served as fragmented MP4 lists each keyframe that starts its fragment as a
range from the fragment's moof to the end of the keyframe's sample (the samples the mdat
holds before it, audio, come with it), the recording's init section the EXT-X-MAP, as in
the media playlist. Re-boxed segments are made a fragment a keyframe (reboxed.py). A
recording's own fragments are served as recorded: a keyframe inside a fragment, after
other pictures (a recorder that cuts fragments by time, as MediaMTX does), cannot be
reached alone in them, so it is listed as a URL of its own (playlists.keyframe_name),
made a fragment alone when asked for (media.py). Sessions of an earlier version's
remuxed segments have none.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import reboxed
from .containers import mp4, mpegts
from .containers.mpegts import CLOCK, PACKET, PTS_WRAP, pts_delta
from .containers.samples import Recording, Table
from .errors import ProbeError
from .playlists import (
    CUT,
    RECORDED,
    REMUX,
    MediaItem,
    Plan,
    init_uris,
    keyframe_name,
    media_name,
    pdt_text,
)

IFRAMES = "iframes.m3u8"
MULTIVARIANT = "multivariant.m3u8"
_HEAD_PACKETS = 16  # an item's PAT and PMT must be within its first packets


@dataclass(frozen=True, slots=True)
class IFrame:
    """One keyframe of a session: its item, its bytes in what the item's URL serves, and
    its presentation time on the session's timeline (90 kHz, OUT_START at the start)."""

    item: int
    offset: int  # -1: the whole of `uri`
    length: int
    tick: int
    uri: str = ""  # its own URL (a keyframe inside its fragment); "": the item's


def has_iframes(plan: Plan) -> bool:
    """Whether the session can have an I-frame playlist: its media are served from its
    recordings (MPEG-TS as recorded, fragmented MP4, or re-boxed), not segments an
    earlier version had ffmpeg make."""
    return all(item.kind != REMUX or item.mp4_tag for item in plan.items)


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


def reboxed_iframes(
    number: int, item: MediaItem, recording: Recording, where: reboxed.Window
) -> list[IFrame]:
    """The keyframes of a re-boxed item (pure: from its recording's sample tables), each
    its fragment's moof and first sample (reboxed.fragments)."""
    found = []
    offset = 0
    for fragment in reboxed.fragments(recording, item, where, number + 1):
        keyframe = fragment.keyframe
        if keyframe is not None:
            found.append(IFrame(number, offset, keyframe[0], keyframe[1]))
        offset += fragment.size
    return found


def fragment_iframes(number: int, item: MediaItem, fd: int) -> list[IFrame]:
    """Every keyframe of an item of a fragmented MP4 recording (blocking: reads its
    moofs). One that starts its fragment (or its part the item serves made a fragment:
    mp4.Retimed.served) is a byte range of the item's URL, from the moof to the end of the
    keyframe's sample; one inside its fragment, after other pictures, is its own URL
    (playlists.keyframe_name), made a fragment alone when asked for."""
    timeline = mp4.retimed(fd, item.init_size, (item.cut_at,), item.shift)
    prefix, start, stop, suffix = timeline.served(
        fd, item.cut_at, item.stop_at, item.cut_sample, item.stop_sample
    )
    size = os.fstat(fd).st_size
    end = item.stop_at or min(item.size, size)  # what was planned of a file grown since
    video = timeline.tracks[0]
    tail = bool(item.stop_at and item.stop_sample)  # the fragment at stop_at is partly its
    found: list[IFrame] = []
    try:
        for kind, at, body, box_end in mp4.top_level(fd, size, item.cut_at):
            if at > end or (at == end and not tail):
                break
            if kind != b"moof":
                continue
            decode_time, samples = mp4.traf_entries(mp4.read_box(fd, body, box_end), at, video)
            low = item.cut_sample if at == item.cut_at else 0
            high = item.stop_sample if tail and at == item.stop_at else len(samples)
            dts = decode_time + item.shift + video.shift
            for n, (duration, length, flags, composition, data) in enumerate(samples):
                if low <= n < high and not flags & mp4.NOT_SYNC:
                    shown = dts + composition
                    tick = (shown * CLOCK + video.timescale // 2) // video.timescale
                    if n > low:  # after other pictures of its fragment
                        if box_end <= data and data + length <= size:  # in its mdat
                            name = keyframe_name(number, at, n)
                            found.append(IFrame(number, -1, -1, tick, name))
                    elif at == item.cut_at and item.cut_sample:  # the part made first
                        made = _made_length(prefix, video)
                        if made:
                            found.append(IFrame(number, 0, made, tick))
                    elif tail and at == item.stop_at:  # the part made last
                        served_at = len(prefix) + max(0, stop - start)
                        made = _made_length(suffix, video)
                        if made:
                            found.append(IFrame(number, served_at, made, tick))
                    elif data >= at and data + length <= end:
                        served_at = len(prefix) + at - start
                        found.append(IFrame(number, served_at, data + length - at, tick))
                dts += duration
    except ProbeError:
        pass  # a box cut short past the last whole fragment: served as it is, unlisted
    return found


def _made_length(part: bytes, video: mp4.Track) -> int:
    """The bytes of a made fragment up to the end of its first video sample (its video's
    data comes first: mp4._fragment); 0 if it has none."""
    if len(part) < 8 or part[4:8] != b"moof":
        return 0
    try:
        _, samples = mp4.traf_entries(part[8 : mp4.u32(part, 0)], 0, video)
    except ProbeError:
        return 0
    return samples[0][4] + samples[0][1] if samples else 0


def render(plan: Plan, frames: Sequence[IFrame], maps: Sequence[str]) -> str:
    """The I-frame playlist (pure): `frames` in session order, `maps[n]` the attributes of
    item n's EXT-X-MAP (its PAT and PMT at the start of its URL, or its init section)."""
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
    last_map = ""
    for frame, duration in zip(frames, durations, strict=True):
        item = plan.items[frame.item]
        name = media_name(frame.item, item.is_mp4)
        if frame.item != last_item:
            if item.discontinuity and last_item >= 0:
                lines.append("#EXT-X-DISCONTINUITY")
            if maps[frame.item] != last_map:
                last_map = maps[frame.item]
                lines.append(f"#EXT-X-MAP:{last_map}")
            last_item = frame.item
        wall = item.pdt_us + (frame.tick - plan.starts[frame.item]) * 1_000_000 // CLOCK
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{pdt_text(wall)}")
        lines.append(f"#EXTINF:{duration:.6f},")
        if frame.uri:
            lines.append(frame.uri)
            continue
        lines.append(f"#EXT-X-BYTERANGE:{frame.length}@{frame.offset}")
        lines.append(name)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def multivariant(plan: Plan, width: int, height: int, codecs: str, with_iframes: bool) -> str:
    """The multivariant playlist (pure, from the plan alone: instant, whatever the
    recordings): the media playlist with its peak and average bit rates (bits a second,
    from each item's bytes and duration), and, `with_iframes`, its I-frame playlist,
    whose BANDWIDTH is bounded by the same peak (it is not made until asked for); the
    picture's size and the codecs (of the first recording) when known."""
    peak = average = 0
    total = sum(item.duration for item in plan.items)
    sizes = [max(0, (item.stop_at or item.size) - item.cut_at) for item in plan.items]
    for item, size in zip(plan.items, sizes, strict=True):
        if item.duration > 0:
            peak = max(peak, math.ceil(size * 8 / item.duration))
    if total > 0:
        average = math.ceil(sum(sizes) * 8 / total)
    resolution = f",RESOLUTION={width}x{height}" if width and height else ""
    named = f',CODECS="{codecs}"' if codecs else ""
    video = codecs.split(",")[0]
    named_video = f',CODECS="{video}"' if video else ""
    lines = ["#EXTM3U", "#EXT-X-VERSION:5", "#EXT-X-INDEPENDENT-SEGMENTS"]
    lines.append(
        f"#EXT-X-STREAM-INF:BANDWIDTH={max(1, peak)},AVERAGE-BANDWIDTH={max(1, average)}"
        f"{resolution}{named}"
    )
    lines.append("index.m3u8")
    if with_iframes:
        lines.append(
            f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={max(1, peak)}{resolution}{named_video}"
            f',URI="{IFRAMES}"'
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
    """The session's I-frame playlist (None when it has no keyframe to list, or is made
    of an earlier version's remuxed segments) (blocking: reads the recordings' tables,
    and each MPEG-TS recording's first packets or each fragmented one's moofs).
    ProbeError or OSError if a recording cannot be read."""
    frames: list[IFrame] = []
    maps: list[str] = []
    heads: dict[str, int] = {}
    inits = init_uris(plan.items) if plan.items[0].is_mp4 else []
    for n in range(len(plan.items)):
        item = plan.at(n)
        if item.is_mp4:  # the init section the media playlist gives
            maps.append(f'URI="{inits[n]}"')
            if item.mp4_tag:
                where = reboxed.window(plan.items, plan.starts, n)
                frames.extend(reboxed_iframes(n, item, recordings(item.source), where))
            else:
                fd = open_recording(item.source)
                try:
                    frames.extend(fragment_iframes(n, item, fd))
                finally:
                    os.close(fd)
            continue
        if item.kind not in (RECORDED, CUT):
            return None
        recording = recordings(item.source)
        if item.kind == CUT:
            head = len(item.prefix) * PACKET
        else:
            if item.source not in heads:
                fd = open_recording(item.source)
                try:
                    heads[item.source] = psi_head(fd)
                finally:
                    os.close(fd)
            head = heads[item.source]
        if not head:
            raise ProbeError("a recording has no PAT and PMT in its first packets")
        maps.append(f'URI="{item.name}",BYTERANGE="{head}@0"')
        cut = len(item.prefix) * PACKET if item.kind == CUT else 0
        frames.extend(item_iframes(n, item, recording.video, cut, plan.starts[n]))
    return render(plan, frames, maps) if frames else None
