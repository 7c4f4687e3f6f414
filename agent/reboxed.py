"""Media segments re-boxed from the recordings' sample tables: a session that is neither
all H.264 MPEG-TS (served as recorded) nor all fragmented MP4 (served as recorded) is
served as fragmented MP4, each segment a moof and mdat made when it is asked for from
its recording's samples, on the session's timeline, and each recording's init section
made from its sample entries (hvc1 for HEVC, as Safari needs). No ffmpeg, nothing
written to disk.

A segment holds its recording's video samples in decode order from the keyframe its
item starts at to the keyframe the next item of the same recording starts at (a
recording's first segment: from its first sample; its last: to its last), and the audio
presented from its start to where the next one starts, as one fragment a keyframe (so
that the session's I-frame playlist reaches each keyframe alone: iframes.py). Times are
the session's, as the export places them (sessiontime.py).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from .containers import progressive
from .containers.mpegts import CLOCK
from .containers.nal import config_parameter_sets
from .containers.progressive import OTHER_FLAGS, SYNC_FLAGS, Run, TrackOut
from .containers.samples import Recording, Table, sample_bytes
from .playlists import MediaItem
from .sessiontime import session_times, video_times

# The re-boxing's own version, in the ETag of what it sends.
REBOX_FORMAT = 2
_AAC_FRAME = 1024
_FOREVER = 1 << 62


def init_section(recording: Recording) -> bytes:
    """The init section of a recording's segments: its video track (90 kHz, the session's
    clock) and its audio track (its sample rate), with their sample entries."""
    video = recording.video
    tracks = [TrackOut(1, b"vide", CLOCK, [video.entry], width=video.width, height=video.height)]
    if recording.audio is not None:
        tracks.append(TrackOut(2, b"soun", recording.audio.timescale, [recording.audio.entry]))
    return progressive.init_section(tracks)


@dataclass(frozen=True)
class Window:
    """Where an item lies on the session's timeline (90 kHz) and how it borders its
    neighbours."""

    start: int
    end: int
    first: bool  # the session's first item
    after_same: bool  # the item before it is of the same recording
    before_same: bool  # the item after it is of the same recording
    last: bool  # the session's last item


def window(items: Sequence[MediaItem], starts: Sequence[int], n: int) -> Window:
    """Item `n`'s window (pure); `starts` as export.item_starts gives them."""
    source = items[n].source
    return Window(
        starts[n],
        starts[n + 1],
        n == 0,
        n > 0 and items[n - 1].source == source,
        n + 1 < len(items) and items[n + 1].source == source,
        n + 1 == len(items),
    )


def video_range(table: Table, pts: array[int], where: Window, lo: int = 0) -> range:
    """The decode-order samples of the item (pure); `pts` are the presentation times of
    samples `lo` on."""
    end = lo + len(pts)

    def keyframe(at_or_after: int, low: int) -> int:
        for n in range(max(low, lo), end):
            if table.sync[n] and pts[n - lo] >= at_or_after:
                return n
        return end

    tolerance = table.last_duration * CLOCK // max(table.timescale, 1) // 2
    low = keyframe(where.start - tolerance, lo) if where.after_same or where.first else lo
    bounded = where.before_same or where.last  # ends at the next part's keyframe
    return range(low, keyframe(where.end - tolerance, low + 1) if bounded else end)


# Decode time around an item that its samples are looked for in (B-frames' reordering, a
# muxer's audio lead): the times of the rest of a long recording are not worked out.
_MARGIN = 2 * CLOCK


def _first_at(item: MediaItem, start: int, table: Table, time: int) -> int:
    """The first sample of `table` whose decode time on the session's timeline is at or
    after `time` (a binary search: times grow with decode order)."""

    def at(n: int) -> int:
        return session_times(item, start, table, array("q", (table.dts[n],)))[0]

    return bisect.bisect_left(range(len(table)), time, key=at)


@dataclass(frozen=True, slots=True)
class Fragment:
    """One moof and mdat of a re-boxed segment: its tracks' runs (the video's first, the
    parameter sets it opens with counted in its first sample's size) and where their
    samples' bytes come from."""

    sequence: int
    runs: tuple[Run, ...]
    in_band: bytes  # bytes before the first video sample's own (its parameter sets)
    pieces: tuple[tuple[Table, int, int], ...]  # (table, first, stop) in mdat order

    @property
    def size(self) -> int:
        return progressive.header_size(self.runs) + sum(sum(run.sizes) for run in self.runs)

    @property
    def keyframe(self) -> tuple[int, int] | None:
        """(bytes from the fragment's start to the end of its first video sample, that
        sample's presentation time), if the fragment starts with a keyframe."""
        video = self.runs[0]
        if video.track_id != 1 or video.flags[0] != SYNC_FLAGS:
            return None
        return progressive.header_size(self.runs) + video.sizes[0], (
            video.decode_time + video.offsets[0]
        )


# A segment's fragments are numbered from its number times this: mfhd sequence numbers
# (ISO/IEC 14496-12 8.8.5) grow through the session.
_FRAGMENTS_EACH = 1024


def segment(fd: int, recording: Recording, item: MediaItem, where: Window, sequence: int) -> bytes:
    """The item's media segment (blocking: reads the samples): `fragments`' boxes and
    bytes."""
    data: list[bytes | memoryview] = []
    for fragment in fragments(recording, item, where, sequence):
        data.extend(
            (progressive.fragment_header(fragment.sequence, fragment.runs), fragment.in_band)
        )
        for table, a, b in fragment.pieces:
            data.extend(sample_bytes(fd, recording, table, a, b))
    return b"".join(data)


def fragments(
    recording: Recording, item: MediaItem, where: Window, sequence: int
) -> list[Fragment]:
    """The item's media segment as fragments, one a keyframe (pure: from the sample
    tables): each fragment starts with a keyframe, so that an I-frame playlist reaches
    each keyframe from its fragment's moof with no other picture's bytes; its audio is
    what is presented from that keyframe to the next."""
    video = recording.video
    whole = range(0, len(video))
    near = whole
    if where.after_same or where.before_same:  # a part of a long recording
        low = _first_at(item, where.start, video, where.start - _MARGIN) if where.after_same else 0
        high = (
            _first_at(item, where.start, video, where.end + _MARGIN)
            if where.before_same or where.last
            else len(video)
        )
        near = range(low, high)
    chosen, dts, pts = _video_of(video, item, where, near)
    if near != whole and (not chosen or chosen.stop == near.stop < len(video)):
        near = whole  # not found near: looked for in the whole recording
        chosen, dts, pts = _video_of(video, item, where, near)
    if not chosen:
        return []
    lo = near.start
    times = [dts[n - lo] for n in chosen]
    durations = [b - a for a, b in itertools.pairwise(times)]
    last = chosen[-1]
    following = (
        dts[last + 1 - lo]
        if last + 1 < near.stop
        else times[-1] + video.duration(last) * CLOCK // video.timescale
    )
    durations.append(max(1, following - times[-1]))
    sizes = [video.sizes[n] for n in chosen]
    # An MP4 recording's parameter sets are in its sample entry alone: they open the
    # segment in band too, so that a player that keeps the first init section it was
    # given (ffmpeg's HLS reader) decodes a new resolution all the same. MPEG-TS
    # access units carry theirs.
    in_band = b"" if recording.container == "mpegts" else config_parameter_sets(video.entry)
    sizes[0] += len(in_band)
    flags = [SYNC_FLAGS if video.sync[n] else OTHER_FLAGS for n in chosen]
    offsets = [pts[n - lo] - dts[n - lo] for n in chosen]
    # Where each fragment starts, in `chosen`'s indices: at each keyframe.
    starts = [0, *(k for k in range(1, len(chosen)) if video.sync[chosen.start + k])]
    bounds = [*starts, len(chosen)]
    audio_runs: list[tuple[int, list[int], range]] = []  # (first tick, durations, samples)
    audio = recording.audio
    if audio is not None:
        frame = _AAC_FRAME * CLOCK // audio.timescale
        # From the frame playing at the keyframe (the session's first), from the item's
        # start (the item before is of this recording), or all (its first item); to the
        # next item's start, or all (its last).
        if where.first:
            low = pts[chosen.start - lo] - frame + 1
        elif where.after_same:
            low = where.start
        else:
            low = -_FOREVER
        high = where.end if chosen.stop < len(video) else _FOREVER
        a0 = _first_at(item, where.start, audio, low - _MARGIN) if low > -_FOREVER else 0
        a1 = _first_at(item, where.start, audio, high + _MARGIN) if high < _FOREVER else len(audio)
        heard = session_times(item, where.start, audio, audio.dts[a0:a1])
        picked = [n for n in range(a0, a1) if low <= heard[n - a0] < high]
        if picked:
            a, b = picked[0], picked[-1] + 1
            ticks = [t * audio.timescale // CLOCK for t in heard[a - a0 : b - a0]]
            steps = [max(1, y - x) for x, y in itertools.pairwise(ticks)] + [_AAC_FRAME]
            # Each keyframe's fragment takes the audio heard from its presentation time
            # on (the first, all before).
            cuts = [
                bisect.bisect_left(heard, pts[chosen.start + k - lo], a - a0, b - a0) - (a - a0)
                for k in starts[1:]
            ]
            for x, y in itertools.pairwise([0, *cuts, b - a]):
                audio_runs.append(
                    (ticks[x] if x < len(ticks) else 0, steps[x:y], range(a + x, a + y))
                )
    result = []
    for g, (x, y) in enumerate(itertools.pairwise(bounds)):
        runs = [Run(1, times[x], [max(1, d) for d in durations[x:y]], sizes[x:y], flags[x:y],
                    offsets[x:y])]  # fmt: skip
        pieces = [(video, chosen.start + x, chosen.start + y)]
        if audio is not None and audio_runs and audio_runs[g][2]:
            first, steps_g, heard_n = audio_runs[g]
            count = len(heard_n)
            runs.append(Run(2, first, steps_g, audio.sizes[heard_n.start : heard_n.stop],
                            [SYNC_FLAGS] * count, [0] * count))  # fmt: skip
            pieces.append((audio, heard_n.start, heard_n.stop))
        number = sequence * _FRAGMENTS_EACH + min(g, _FRAGMENTS_EACH - 1)
        result.append(Fragment(number, tuple(runs), in_band if g == 0 else b"", tuple(pieces)))
    return result


def _video_of(
    video: Table, item: MediaItem, where: Window, near: range
) -> tuple[range, array[int], array[int]]:
    """The item's video samples among `near`, and the session's decode and presentation
    times of `near`'s samples."""
    part = Table(video.handler, video.codec, video.timescale, video.entry)
    part.dts, part.cto, part.shift = (
        video.dts[near.start : near.stop],
        video.cto[near.start : near.stop],
        video.shift,
    )
    dts, pts = video_times(item, where.start, part)
    return video_range(video, pts, where, near.start), dts, pts


def version(item: MediaItem, init: bool, where: Window | None) -> str:
    """A digest of what a re-boxed segment's bytes depend on besides its recording (pure)."""
    key = repr((REBOX_FORMAT, item.source, item.kind, item.shift, item.offset, init, where))
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
