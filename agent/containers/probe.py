"""Media facts of a recorded segment, read from its container headers in pure Python.

Running ffprobe costs tens of milliseconds a file (about 63 ms on the development
machine, more on a Pi: hours for a large archive). The facts the index needs are in a
few container structures: for MPEG-TS, the PAT/PMT and the PES
timestamps at the head and tail of the file; for MP4, the `moov` box and, when
fragmented, each `moof`. Reading those takes well under a millisecond a file, and the
duration is exact to the tick (the tests compare it with ffprobe's packet timestamps).

The duration is the video's: from the first frame's presentation time to the end of the
last frame, which is what a playlist's EXTINF must state.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import mpegts
from .errors import ProbeError, total
from .files import opened
from .mp4 import (
    MAX_TRACK_SAMPLES,
    Track,
    init_tracks,
    read_box,
    read_tracks,
    top_level,
    traf_samples,
)
from .mpegts import PACKET, PTS_WRAP, pes_times, pts_delta

__all__ = [
    "Cut",
    "MediaFacts",
    "ProbeError",
    "cut_point",
    "fmp4_cut",
    "fmp4_splits",
    "keyframes",
    "probe",
    "ts_cut_after",
    "ts_cut_before",
    "ts_splits",
]


@dataclass(frozen=True)
class Cut:
    """Where the first recording of a session is cut: a keyframe's time (its own ticks)
    and, for MPEG-TS, its first packet's offset and the PAT and PMT packets to send in
    front of it."""

    pts: int
    offset: int = -1
    prefix: tuple[int, ...] = ()
    # MPEG-TS: the audio packets after `offset` presented before `pts` (muxed late): they
    # belong with the segment that ends here, not with the one that starts here.
    early: tuple[int, ...] = ()
    # Fragmented MP4 (`offset` a moof's): the keyframe's index among the fragment's video
    # samples, 0 when it starts the fragment.
    sample: int = 0


@dataclass(frozen=True)
class MediaFacts:
    container: str  # "mpegts", "mp4" or "fmp4"
    video_codec: str  # "h264", "hevc" or the codec's own tag
    has_audio: bool
    timescale: int  # ticks per second of the three tick counts below
    first_pts: int  # presentation time of the first video frame, in ticks
    duration: int  # first frame's start to last frame's end, in ticks
    frame_ticks: int  # the usual interval between frames, in ticks
    # Audio, in the same ticks relative to first_pts: where it starts and ends (or None).
    audio_start: int | None = None
    audio_end: int | None = None
    streams: str = ""  # what the streams are (PIDs and types): a change needs new decoders
    counters: str = ""  # MPEG-TS: each PID's first and last continuity counter
    # Fragmented MP4: where its first fragment starts (before it, the init section) and
    # where its last whole one ends; why reading stopped short of the file's end, if it did.
    media_start: int = 0
    media_end: int = 0
    problem: str = ""
    # Fragmented MP4: each video keyframe (its fragment's moof offset, its index among the
    # fragment's video samples, the earliest presentation time from it), for the indexer
    # to split a long recording by (not kept in the index).
    keyframes: tuple[tuple[int, int, int], ...] = field(default=(), repr=False)

    @property
    def duration_us(self) -> int:
        return self.duration * 1_000_000 // self.timescale


@total
def probe(path: Path | str) -> MediaFacts:
    """Read the facts of the segment at `path`; raises ProbeError or OSError."""
    with opened(path) as (fd, size):
        head = os.pread(fd, 65536, 0)
        if (
            len(head) >= PACKET
            and head[0] == 0x47
            and (len(head) < 2 * PACKET or head[PACKET] == 0x47)
        ):
            return _probe_ts(fd, size, head)
        if len(head) >= 8 and head[4:8] in (b"ftyp", b"styp", b"moov", b"free", b"wide"):
            return _probe_mp4(fd, size)
        raise ProbeError("neither MPEG-TS nor MP4")


@total
def keyframes(path: Path | str) -> list[tuple[int, int]]:
    """(presentation time, byte offset) of each video keyframe, in the ticks and origin of
    `probe`'s facts, by time; the offset is that of its first TS packet (-1 for MP4).

    Reads MPEG-TS in bounded chunks (an hour-long recording never sits in memory whole);
    only the sample tables for MP4.
    """
    with opened(path) as (fd, size):
        head = os.pread(fd, 65536, 0)
        if len(head) >= PACKET and head[0] == 0x47:
            video_pid = mpegts.program(head).video_pid
            return sorted(mpegts.file_keyframes(fd, size, video_pid))
        return [(pts, -1) for pts, _, sync in _mp4_samples(fd, size).samples if sync]


@total
def cut_point(path: Path | str, first_pts: int, wanted: int) -> Cut | None:
    """Where to start serving a recording so that `wanted` (a time in its ticks) plays:
    the last keyframe at or before it, or None if that is the recording's first keyframe
    (serve it whole). The cut's time is the earliest presentation time from there (an
    open GOP's leading pictures come before its keyframe); for MPEG-TS it also names the
    PAT and PMT to send in front."""
    with opened(path) as (fd, size):
        head = os.pread(fd, 65536, 0)
        if len(head) >= PACKET and head[0] == 0x47:
            program = mpegts.program(head)
            keys = sorted(mpegts.file_keyframes(fd, size, program.video_pid))
            at = _last_at_or_before([pts for pts, _ in keys], first_pts, wanted)
            return None if at is None else _cut(fd, program, *keys[at])
        samples = _mp4_samples(fd, size).samples  # in decode order
        syncs = [n for n, (_, _, sync) in enumerate(samples) if sync]
        at = _last_at_or_before([samples[n][0] for n in syncs], first_pts, wanted)
        if at is None:
            return None
        return Cut(min(pts for pts, _, _ in samples[syncs[at] : syncs[at] + _MIN_FRAMES]))


def _last_at_or_before(times: list[int], first_pts: int, wanted: int) -> int | None:
    """The index of the latest of `times` (keyframes) at or before `wanted`, or None if
    that is the earliest of them (or there is none)."""
    before = [
        n
        for n, pts in enumerate(times)
        if 0 <= pts_delta(pts, first_pts) <= pts_delta(wanted, first_pts)
    ]
    if not before:
        return None
    at = max(before, key=lambda n: pts_delta(times[n], first_pts))
    first = min(range(len(times)), key=lambda n: pts_delta(times[n], first_pts))
    return None if at == first else at


# --- long MPEG-TS recordings: keyframes found near where their time should lie -----------

_SCAN_LIMIT = 16 << 20  # no keyframe within this many bytes: the search gives up


def _tables(fd: int, program: mpegts.Program, offset: int) -> tuple[int, ...] | None:
    """Offsets of the last PAT and PMT before `offset`, to send in front of a cut there."""
    prefix = [mpegts.last_pusi_before(fd, offset, pid) for pid in (0, program.pmt_pid)]
    return None if None in prefix else tuple(at for at in prefix if at is not None)


def _cut(fd: int, program: mpegts.Program, keyframe: int, offset: int) -> Cut | None:
    """A cut at the keyframe at `offset`: its time is the earliest presentation time of
    the frames from there (an open GOP's leading pictures come before its keyframe)."""
    tables = _tables(fd, program, offset)
    if tables is None:
        return None
    times: list[tuple[int, int]] = []
    position = offset
    while len(times) < _MIN_FRAMES and position - offset < 1 << 19:
        chunk = os.pread(fd, 1 << 16, position)
        chunk = chunk[: len(chunk) - len(chunk) % PACKET]
        if not chunk:
            break
        times += pes_times(chunk, 0, program.video_pid)
        position += len(chunk)
    earliest = _earliest(times[:_MIN_FRAMES]) if times else keyframe
    return Cut(earliest, offset, tables, _early(fd, program, offset, earliest))


def _early(fd: int, program: mpegts.Program, offset: int, pts: int) -> tuple[int, ...]:
    if program.audio_pid is None:
        return ()
    return mpegts.early_audio(fd, os.fstat(fd).st_size, program.audio_pid, offset, pts)


def _scan(fd: int, size: int, program: mpegts.Program, offset: int) -> Iterator[tuple[int, int]]:
    for pts, at in mpegts.keyframes_from(fd, size, program.video_pid, offset):
        if at - offset > _SCAN_LIMIT:
            return
        yield pts, at


def _near(size: int, duration: int, at: int) -> int:
    """The byte where `at` ticks into a recording of `duration` should lie (whole packets)."""
    estimate = size * min(max(at, 0), duration) // max(duration, 1)
    return estimate - estimate % PACKET


@total
def ts_splits(
    path: Path | str, first_pts: int, duration: int, step: int, low: int = 0, high: int = -1
) -> list[Cut]:
    """Cuts about every `step` ticks through an MPEG-TS recording, between `low` and `high`
    ticks after its first frame (none within half a step of either, nor of the end): each
    at the first keyframe at or after the byte where its time should lie, a camera's
    bitrate being steady enough, with the PAT and PMT to send in front. Reads about half
    a GOP for each, never the whole file."""
    high = duration if high < 0 else min(high, duration)
    with opened(path) as (fd, size):
        program = mpegts.program(os.pread(fd, 65536, 0))
        cuts: list[Cut] = []
        last = low  # ticks after first_pts of the last cut
        for k in range(low // step + 1, high // step + 1):
            estimate = _near(size, duration, k * step)
            if cuts and estimate <= cuts[-1].offset:
                continue
            hit = next(_scan(fd, size, program, estimate), None)
            if hit is None:
                break
            pts, offset = hit
            at = pts_delta(pts, first_pts)
            if at - last < step // 2 or min(high, duration) - at < step // 2:
                continue
            found_cut = _cut(fd, program, pts, offset)
            if found_cut is not None:
                cuts.append(found_cut)
                last = at
        return cuts


def is_long(container: str, duration: int, timescale: int, seconds: int) -> bool:
    """Whether a recording is served in parts of about `seconds`: an MPEG-TS or fragmented
    MP4 recording longer than twice that. Up to twice, a recording is one segment: a 10 s
    recording is read at POST time not at all, and plays as well as two parts."""
    return container in ("mpegts", "fmp4") and duration > timescale * seconds * 2


def _scan_from_before(
    fd: int, size: int, program: mpegts.Program, first_pts: int, duration: int, at: int, step: int
) -> int:
    """A keyframe's offset at or before `at` ticks (0 if none is found near it): looked
    for a step back from where `at` should lie, then further back."""
    back = step
    while at - back > 0:
        estimate = _near(size, duration, at - back)
        hit = next(_scan(fd, size, program, estimate), None)
        if hit is not None and pts_delta(hit[0], first_pts) <= at:
            return hit[1]
        back *= 4
    return 0


@total
def _keyframe_near(
    path: Path | str, first_pts: int, duration: int, wanted: int, step: int, after: bool
) -> Cut | None:
    at = pts_delta(wanted, first_pts)
    with opened(path) as (fd, size):
        program = mpegts.program(os.pread(fd, 65536, 0))
        offset = _scan_from_before(fd, size, program, first_pts, duration, at, step)
        before: tuple[int, int] | None = None
        first = True  # whether `before` is the recording's first keyframe
        for pts, where in _scan(fd, size, program, offset):
            if pts_delta(pts, first_pts) > at:
                if after:
                    return _cut(fd, program, pts, where)
                break
            first, before = before is None and offset == 0, (pts, where)
        if after or before is None or first:
            return None
        return _cut(fd, program, *before)


def ts_cut_before(
    path: Path | str, first_pts: int, duration: int, wanted: int, step: int
) -> Cut | None:
    """The last keyframe at or before `wanted` (its ticks) in a long MPEG-TS recording,
    found near where it should lie; None if that is the recording's first keyframe (serve
    it from its start)."""
    return _keyframe_near(path, first_pts, duration, wanted, step, after=False)


def ts_cut_after(
    path: Path | str, first_pts: int, duration: int, wanted: int, step: int
) -> Cut | None:
    """The first keyframe after `wanted` (its ticks) in a long MPEG-TS recording, found
    near where it should lie: where a session that ends at `wanted` can stop; None if
    there is none."""
    return _keyframe_near(path, first_pts, duration, wanted, step, after=True)


# --- fragmented MP4: split between fragments that start with a keyframe ----------------


def fmp4_splits(
    keyframes: Iterable[tuple[int, int, int]], first_pts: int, duration: int, step: int
) -> list[Cut]:
    """Cuts about every `step` ticks through a fragmented MP4 recording, at its keyframes
    (`MediaFacts.keyframes`), wherever in their fragments they are; none within half a
    step of the recording's end (pure)."""
    cuts: list[Cut] = []
    last = 0  # ticks after first_pts of the last cut
    for offset, sample, pts in keyframes:
        at = pts - first_pts
        if at - last >= step * 7 // 8 and duration - at >= step // 2:
            cuts.append(Cut(pts, offset, sample=sample))
            last = at
    return cuts


@total
def fmp4_cut(
    path: Path | str, media_start: int, media_end: int, start: int, wanted: int, after: bool
) -> Cut | None:
    """A keyframe of a fragmented MP4 recording, looked for from the fragment at byte
    `start` on: the last whose earliest time is at or before `wanted` (None if that is
    the recording's first frame: serve it whole) or, `after`, the first after `wanted`
    (None if there is none: serve to the end). Reads the init section and the moof boxes
    on the way, never the media."""
    with opened(path) as (fd, _):
        _, _, video = init_tracks(fd, media_start)
        before: Cut | None = None
        for kind, offset, body, end in top_level(fd, media_end, start):
            if kind != b"moof":
                continue
            for sample, pts in _keyframes(traf_samples(read_box(fd, body, end), video)):
                if pts > wanted:
                    return (
                        Cut(pts, offset, sample=sample)
                        if after
                        else _unless_first(before, media_start)
                    )
                before = Cut(pts, offset, sample=sample)
        return None if after else _unless_first(before, media_start)


def _keyframes(samples: list[tuple[int, int, bool]]) -> Iterator[tuple[int, int]]:
    """(index, earliest presentation time from it) of each keyframe among a fragment's
    video samples (in decode order)."""
    for n, (_, _, sync) in enumerate(samples):
        if sync:
            yield n, min(pts for pts, _, _ in samples[n : n + _MIN_FRAMES])


def _unless_first(cut: Cut | None, media_start: int) -> Cut | None:
    return None if cut is None or (cut.offset, cut.sample) == (media_start, 0) else cut


# --- MPEG-TS --------------------------------------------------------------------------

_MIN_FRAMES = 8  # beyond any B-frame reorder depth or open-GOP lead a camera uses
_MAX_READ = 16 << 20  # the most of an MPEG-TS file's head or tail read to find frames
# A read malloc serves from its arenas: glibc maps a block over its mmap threshold (128 KiB,
# as the agent keeps it) afresh, faults its pages in and unmaps it when freed: with reads of
# 128 KiB the index's first scan took 0.65 ms a file, with these 0.37 ms.
_SMALL_READ = 120 << 10
# A video frame every 10 s at the least (a time-lapse), and a frame takes at least one
# MPEG-TS packet or one MP4 sample: a recording whose timestamps span more than that is
# corrupt (random timestamps), not days of footage hiding the recordings after it.
_MAX_SECONDS_A_FRAME = 10


def _plausible(duration: int, timescale: int, frames: int, what: str) -> None:
    """ProbeError if `duration` ticks are not positive, or more than `frames` (packets or
    samples) can span."""
    if duration <= 0:
        raise ProbeError("its timestamps do not advance")
    if duration > frames * _MAX_SECONDS_A_FRAME * timescale:
        raise ProbeError(
            f"its timestamps span {duration / timescale:.0f} s, more than its {frames} {what}"
            " can hold"
        )


def _earliest(times: list[tuple[int, int]]) -> int:
    """The earliest PTS among `times` (a reordered or open GOP starts before its first)."""
    return min((pts for pts, _ in times), key=lambda pts: pts_delta(pts, times[0][0]))


def _step(times: list[tuple[int, int]]) -> int:
    """The usual interval between consecutive PES of one stream, by DTS."""
    steps = [(b - a) % PTS_WRAP for (_, a), (_, b) in itertools.pairwise(times)]
    return int(statistics.median_low([s for s in steps if s > 0] or [0]))


_SETS_WITHIN = 16384  # bytes of a video PES looked in first for its parameter sets


def _probe_ts(fd: int, size: int, head: bytes) -> MediaFacts:
    program = mpegts.program(head)
    video_pid, audio_pid = program.video_pid, program.audio_pid
    first = pes_times(head, 0, video_pid)
    while len(first) < _MIN_FRAMES and len(head) < min(size, _MAX_READ):
        # Doubled, the new bytes alone read: what follows scans the head, so no more of it
        # than the frames need (a 720p keyframe and seven more: half a megabyte).
        grown = _SMALL_READ if len(head) < _SMALL_READ else len(head) * 2
        more = os.pread(fd, min(size, grown, _MAX_READ) - len(head), len(head))
        if not more:
            break  # cut short since its size was read (a recorder reusing the name)
        head += more
        first = pes_times(head, 0, video_pid)
    if not first:
        raise ProbeError("MPEG-TS without a timestamped video frame at its head")
    first_pts = _earliest(first[:_MIN_FRAMES])

    tail_size = _SMALL_READ
    while True:
        start = max(0, size - tail_size)
        tail = os.pread(fd, size - start, start)
        tail_offset = -start % PACKET
        last = pes_times(tail, tail_offset, video_pid)
        if len(last) >= _MIN_FRAMES or start == 0 or tail_size >= _MAX_READ:
            break
        tail_size = min(tail_size * 4, _MAX_READ)
    if len(last) < 2:
        raise ProbeError("MPEG-TS with fewer than two video frames")
    frame_ticks = _step(last)
    end = max(pts_delta(pts, first_pts) for pts, _ in last) + frame_ticks
    _plausible(end, mpegts.CLOCK, size // PACKET, "packets")

    audio_start = audio_end = None
    if audio_pid is not None:
        head_audio = pes_times(head, 0, audio_pid)
        tail_audio = pes_times(tail, tail_offset, audio_pid)
        if head_audio and tail_audio:
            # The last PES's own length: its ADTS frames, else the usual PES interval.
            positions = list(mpegts.pusi_packets(tail, tail_offset, audio_pid))
            payload = mpegts.pes_payload(tail, positions[-1], audio_pid)
            step = mpegts.adts_ticks(payload) or _step(tail_audio) or _step(head_audio)
            audio_start = pts_delta(head_audio[0][0], first_pts)
            audio_end = pts_delta(tail_audio[-1][0], first_pts) + step
    first_counters = mpegts.counters(head)
    last_counters = mpegts.end_counters(fd, size, set(first_counters), (tail, start))
    parameter_sets = b""
    for position in itertools.islice(mpegts.pusi_packets(head, 0, video_pid), _MIN_FRAMES):
        # An access unit's parameter sets come first: its head is read alone, unless
        # that cannot tell (a keyframe's whole PES is hundreds of packets).
        head_of = mpegts.pes_payload(head, position, video_pid, _SETS_WITHIN)
        found = mpegts.parameter_sets(head_of, program.video_codec, cut=True)
        if found is None:
            payload = mpegts.pes_payload(head, position, video_pid)
            found = mpegts.parameter_sets(payload, program.video_codec) or b""
        parameter_sets = found
        if parameter_sets:
            break
    return MediaFacts(
        container="mpegts",
        video_codec=program.video_codec,
        has_audio=audio_pid is not None,
        timescale=mpegts.CLOCK,
        first_pts=first_pts,
        duration=end,
        frame_ticks=frame_ticks,
        audio_start=audio_start,
        audio_end=audio_end,
        streams=program.signature + _configured(parameter_sets),
        counters=mpegts.encode_counters(first_counters, last_counters),
    )


def _configured(config: bytes) -> str:
    """What `streams` says of a video decoder's configuration (parameter sets or sample
    description): a short digest, "" when none was found."""
    return f";config:{hashlib.blake2s(config, digest_size=4).hexdigest()}" if config else ""


@functools.lru_cache(maxsize=1024)  # a day's plan asks 17,280 times of a few pairs
def same_streams(a: str, b: str) -> bool:
    """Whether two recordings' `streams` need no new decoders between them: the same
    streams, and the same decoder configuration unless one of them has none found."""
    kinds_a, _, config_a = a.partition(";config:")
    kinds_b, _, config_b = b.partition(";config:")
    return kinds_a == kinds_b and (config_a == config_b or not config_a or not config_b)


# --- MP4 and fragmented MP4 --------------------------------------------------------------


@dataclass
class _Mp4:
    video: Track
    fragmented: bool
    audio_track: Track | None
    samples: list[tuple[int, int, bool]] = field(default_factory=list)  # video's
    audio: list[tuple[int, int, bool]] = field(default_factory=list)
    # Fragmented: each video keyframe of its whole fragments (as MediaFacts.keyframes),
    # where the first fragment starts and the last ends, and why reading stopped before
    # the file's end (a fragment cut short or corrupt).
    keyframes: list[tuple[int, int, int]] = field(default_factory=list)
    media_start: int = 0
    media_end: int = 0
    problem: str = ""


def _mp4_samples(fd: int, size: int) -> _Mp4:
    """The video and audio samples (pts, duration, sync) of an MP4 file, by track. A
    fragmented file is read up to its last whole fragment (moof and its mdat)."""
    mp4: _Mp4 | None = None
    moof: tuple[int, list[tuple[int, int, bool]], list[tuple[int, int, bool]]] | None = None
    try:
        for kind, start, body, end in top_level(fd, size):
            if kind == b"moov":
                tracks, fragmented = read_tracks(read_box(fd, body, end), size)
                video = next((t for t in tracks if t.handler == b"vide"), None)
                if video is None or not video.timescale:
                    raise ProbeError("MP4 without a video track")
                audio = next((t for t in tracks if t.handler == b"soun" and t.timescale), None)
                mp4 = _Mp4(video, fragmented, audio)
                if not fragmented:
                    mp4.samples = list(video.samples or [])
                    mp4.audio = list(audio.samples or []) if audio else []
            elif kind == b"moof" and mp4 is not None:
                data = read_box(fd, body, end)
                audio_track = mp4.audio_track
                # Every sample takes at least a byte of the file: no more than that many,
                # and no more than a track may have.
                room = size - len(mp4.samples) - len(mp4.audio)
                video_room = min(room, MAX_TRACK_SAMPLES - len(mp4.samples))
                video_samples = traf_samples(data, mp4.video, video_room)
                audio_room = min(room - len(video_samples), MAX_TRACK_SAMPLES - len(mp4.audio))
                moof = (
                    start,
                    video_samples,
                    [] if audio_track is None else traf_samples(data, audio_track, audio_room),
                )
            elif kind == b"mdat" and mp4 is not None and moof is not None:
                offset, video_samples, audio_samples = moof  # whole: its samples count
                moof = None
                for sample, earliest in _keyframes(video_samples):
                    mp4.keyframes.append((offset, sample, earliest))
                mp4.samples += video_samples
                mp4.audio += audio_samples
                mp4.media_start = mp4.media_start or offset
                mp4.media_end = end
    except ProbeError as error:
        if mp4 is None or not mp4.fragmented or not mp4.samples:
            raise
        mp4.problem = str(error)  # served up to the last whole fragment
    if mp4 is None:
        raise ProbeError("MP4 without a moov box (still being written?)")
    if not mp4.samples:
        raise ProbeError("MP4 without video samples")
    return mp4


def _probe_mp4(fd: int, size: int) -> MediaFacts:
    mp4 = _mp4_samples(fd, size)
    video, samples = mp4.video, mp4.samples
    first = min(pts for pts, _, _ in samples[:16])
    end = max(pts + d for pts, d, _ in samples[-16:])
    _plausible(end - first, video.timescale or 1, len(samples), "video samples")
    audio_start = audio_end = None
    audio_codec = ""
    if mp4.audio_track is not None and mp4.audio:
        scale = video.timescale / mp4.audio_track.timescale
        audio_start = round(min(pts for pts, _, _ in mp4.audio[:4]) * scale) - first
        audio_end = round(max(pts + d for pts, d, _ in mp4.audio[-4:]) * scale) - first
        audio_codec = mp4.audio_track.codec
    return MediaFacts(
        container="fmp4" if mp4.fragmented else "mp4",
        video_codec=video.codec,
        has_audio=mp4.audio_track is not None,
        timescale=video.timescale,
        first_pts=first,
        duration=end - first,
        frame_ticks=samples[0][1],
        audio_start=audio_start,
        audio_end=audio_end,
        streams=f"mp4:{video.codec}:{audio_codec}" + _configured(video.entry),
        media_start=mp4.media_start,
        media_end=mp4.media_end,
        problem=mp4.problem,
        keyframes=tuple(mp4.keyframes),
    )
