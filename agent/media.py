"""Media segments: where each one is served from, and making those that need ffmpeg.

A segment served as recorded comes straight from the recordings (a path the agent took
from its own index, never from the URL). A remuxed one is made by `ffmpeg -c copy` the
first time anyone asks for it, under a build slot, into a temporary name that is renamed
into place, and kept in the session's directory for the session's life. Concurrent
requests for one segment share one build; a read-ahead starts the next segments' builds
when a slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
from dataclasses import replace
from pathlib import Path
from stat import S_ISREG

from . import ffmpeg
from .admission import Kind, Limiter
from .config import Config
from .containers import mp4, mpegts
from .containers.files import open_regular, opened
from .containers.mpegts import (
    CLOCK,
    PACKET,
    pes_times,
    renumber,
    rewrite,
)
from .containers.probe import probe
from .errors import AgentError, Busy, InsufficientStorage, NotFound, ProbeError
from .files import write_file
from .playlists import CUT, FRAGMENTS, MediaItem, Plan
from .served import MP4_TYPE, SEGMENT_TYPE, TS_TYPE, Served, served_bytes
from .sessions import SessionStore
from .stored import MEDIA_ROW, Session

log = logging.getLogger(__name__)

READ_AHEAD = 2
_READ_AHEAD = "read-ahead"  # the name of a read-ahead build's task
_SEEK_NUDGE = 0.0005  # seek just past the keyframe: ffmpeg starts at the keyframe before
# The in-flight rewrite's own version, in the ETag of everything it sends: a change to
# what it sends for the same plan and recording (an upgrade) must change the ETag, or an
# If-Range resume across it would splice old and new bytes.
REWRITE_FORMAT = 1


class MediaFailed(AgentError):
    status = 500


def _renumber(path: Path) -> None:
    """Give a remuxed file counters that run 0..15 on every PID (see mpegts.renumber)."""
    data = path.read_bytes()
    write_file(path, renumber(data))


def remux_argv(ffmpeg_bin: str, source: Path, item: MediaItem, output: Path) -> list[str]:
    """ffmpeg's arguments to make `item` from its recording as MPEG-TS on the session's
    timeline: stream copy, never a transcode."""
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if item.seek is not None:
        argv += ["-seek_timestamp", "1", "-ss", f"{item.seek + _SEEK_NUDGE:.6f}"]
    argv += ["-copyts", "-i", str(source), "-map", "0:v:0", "-map", "0:a?", "-c", "copy"]
    if item.offset is not None:
        argv += ["-output_ts_offset", f"{item.offset:.6f}"]
    argv += ["-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", str(output)]
    return argv


def mp4_argv(ffmpeg_bin: str, source: Path, tag: str, output: Path) -> list[str]:
    """ffmpeg's arguments to make MPEG-TS (a segment as served) fragmented MP4, its video
    sample entry tagged `tag` (hvc1, as Safari needs HEVC): stream copy. ffmpeg starts
    each track at zero; they are moved back onto the timeline in flight (mp4.placed)."""
    return [
        ffmpeg_bin, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", str(source), "-map", "0:v:0", "-map", "0:a?", "-c", "copy",
        "-tag:v", tag, "-bsf:a", "aac_adtstoasc",
        "-movflags", "frag_keyframe+empty_moov+default_base_moof+skip_trailer",
        "-f", "mp4", str(output),
    ]  # fmt: skip


def first_time(path: Path) -> int:
    """Where an MPEG-TS file's first stream begins: its video's first decode time or its
    audio's first, the earlier (90 kHz ticks, as in the file). ffmpeg starts the MP4 it
    makes of it there, at zero (blocking)."""
    with opened(path, follow=False) as (fd, _):
        head = os.pread(fd, 1 << 20, 0)
    program = mpegts.program(head)
    starts = [dts for _, dts in pes_times(head, 0, program.video_pid)[:1]]
    if program.audio_pid is not None:
        starts += [pts for pts, _ in pes_times(head, 0, program.audio_pid)[:1]]
    if not starts:
        raise ProbeError("a made segment's MPEG-TS has no timestamp at its head")
    return min(starts)


class MediaService:
    def __init__(self, config: Config, store: SessionStore, limiter: Limiter) -> None:
        self.config = config
        self.store = store
        self.limiter = limiter
        self._builds: dict[tuple[str, str], asyncio.Task[Path]] = {}
        self._changed: set[tuple[Path, int]] = set()  # recordings that changed, said once
        self.failed = 0  # ffmpeg runs that failed, since start

    def recording(self, source: str) -> Path:
        """The recording at `source` (relative to the root), if it is still a regular
        file inside the root, reached through no symlink at any level below the root
        (blocking)."""
        root = os.path.realpath(self.config.recordings.root)
        path = Path(root, source)
        try:
            info = os.lstat(path)
            resolved = os.path.realpath(path)
        except OSError:
            info = None
        if info is None or not S_ISREG(info.st_mode):
            raise NotFound("the recording for this segment is no longer on disk")
        if resolved != str(path):
            log.warning("media: refusing %s: a directory on its way is a symlink", source)
            raise NotFound("the recording for this segment is no longer on disk")
        return path

    async def file_for(
        self, session: Session, plan: Plan, number: int, item: MediaItem, init: bool = False
    ) -> Served:
        """What to serve for `item` (or, `init`, its recording's init section), made first
        if it must be.

        A recording served as recorded gets the session's timeline in flight: its PTS,
        DTS and PCR moved by the plan's shift, its continuity counters carried on from
        the segment before, so that players see one stream, as from a single muxer.
        """
        try:
            if item.kind == FRAGMENTS:
                served = await asyncio.to_thread(self._fragments, item, init)
            elif not item.made:
                served = await asyncio.to_thread(self._as_recorded, item)
            else:
                path = self.store.path(session.id) / item.name
                if not await asyncio.to_thread(path.is_file):
                    path = await self._made_for_viewer(session, item)
                if item.mp4_tag:
                    served = await asyncio.to_thread(self._made_mp4, path, init)
                else:
                    served = Served(path=path, content_type=TS_TYPE)  # made on the timeline
        except ProbeError as error:  # replaced by something that is not a recording
            log.warning("media: %s cannot be served: %s", item.source, error)
            raise NotFound("the recording for this segment is no longer whole") from None
        await self._read_ahead(session, plan, number)
        if served.rewrite is not None or served.patch is not None:
            served = replace(served, version=_version(item, init, served))
        return served

    async def _made_for_viewer(self, session: Session, item: MediaItem) -> Path:
        """The remuxed segment a player is waiting for. A read-ahead of it may be under
        way already and shared; if that one was refused (read-ahead yields when the box is
        busy), the viewer's own build follows, with a viewer's priority."""
        task = self._build_task(session, item, wait=True)
        try:
            return await asyncio.shield(task)
        except Busy:
            if not task.get_name().startswith(_READ_AHEAD):
                raise
        return await asyncio.shield(self._build_task(session, item, wait=True))

    def _write_as_recorded(self, item: MediaItem, target: Path) -> None:
        """Write the MPEG-TS a recorded item is served as (blocking)."""
        served = self._as_recorded(item)
        fd, _ = open_regular(served.path, follow=False)
        try:
            total = served.length(os.fstat(fd).st_size)
            with open(target, "wb") as out:
                position = 0
                while position < total:
                    chunk = served_bytes(fd, served, position, total, total)
                    if not chunk:
                        break
                    out.write(chunk)
                    position += len(chunk)
        finally:
            os.close(fd)

    def _as_recorded(self, item: MediaItem) -> Served:
        path = self.recording(item.source)
        size = os.stat(path).st_size
        if size != item.size and (path, size) not in self._changed:
            # Served as it is now, on the plan's timeline: whole packets rewritten, a
            # truncated last one sent as it is. Said once per file and size.
            self._changed.add((path, size))
            log.warning(
                "media: %s is %d bytes, %d when its session was planned; serving it as it is",
                item.source, size, item.size,
            )  # fmt: skip
        prefix = _packets(path, item.prefix) if item.kind == CUT else b""
        cc_shift = item.counter_shifts()
        return Served(
            path=path,
            content_type=TS_TYPE,
            start=item.cut_at,
            stop=item.stop_at,
            prefix=prefix,
            suffix=_packets(path, item.suffix),
            nulls=item.nulls,
            rewrite=lambda buf: rewrite(buf, item.shift, cc_shift),
        )

    def _fragments(self, item: MediaItem, init: bool) -> Served:
        """Bytes of a fragmented MP4 recording on the session's timeline: `item`'s
        fragments, decode times moved in flight, or its recording's init section, an HEVC
        sample entry named for Safari (mp4.Retimed)."""
        path = self.recording(item.source)
        fd, _ = open_regular(path, follow=False)
        prefix = suffix = b""
        start, stop = item.cut_at, item.stop_at
        try:
            timeline = mp4.retimed(fd, item.init_size, (item.cut_at,), item.shift)
            if init:
                return Served(path=path, content_type=MP4_TYPE, stop=item.init_size,
                              patch=timeline.apply)  # fmt: skip
            # A keyframe inside a fragment: the fragment's part from it, or up to it, is
            # made a fragment of its own (a few hundred kilobytes, read at each request).
            same = item.stop_at == item.cut_at
            if item.cut_sample:
                high = item.stop_sample if same else None
                prefix, start = timeline.cut(fd, item.cut_at, item.cut_sample, high)
                stop = start if same else stop
            if item.stop_sample and not (same and item.cut_sample):
                suffix, _ = timeline.cut(fd, item.stop_at, 0, item.stop_sample)
            timeline = replace(timeline, starts=(start,))
        except (ProbeError, StopIteration, IndexError, ValueError) as error:
            # Cut short or changed since it was planned.
            log.warning("media: %s cannot be served: %s", item.source, error)
            raise NotFound("the recording for this segment is no longer whole") from None
        finally:
            os.close(fd)
        return Served(path=path, content_type=SEGMENT_TYPE, start=start, stop=stop,
                      prefix=prefix, suffix=suffix, patch=timeline.apply)  # fmt: skip

    def _made_mp4(self, path: Path, init: bool) -> Served:
        """A segment made as fragmented MP4 (its init section, or its media), moved in
        flight to where the MPEG-TS it was made of began on the session's timeline (kept
        beside it): ffmpeg wrote it from zero."""
        facts = probe(path)
        zero = int(json.loads(_times_path(path).read_text())["zero"])
        fd, _ = open_regular(path, follow=False)
        try:
            timeline = mp4.placed(fd, facts.media_start, zero, CLOCK)
        finally:
            os.close(fd)
        if init:
            return Served(path=path, content_type=MP4_TYPE, stop=facts.media_start,
                          patch=timeline.apply)  # fmt: skip
        return Served(path=path, content_type=SEGMENT_TYPE, start=facts.media_start,
                      stop=facts.media_end, patch=timeline.apply)  # fmt: skip

    def _build_task(self, session: Session, item: MediaItem, wait: bool) -> asyncio.Task[Path]:
        key = (session.id, item.name)
        task = self._builds.get(key)
        if task is None:
            name = f"{'build' if wait else _READ_AHEAD} {key}"
            task = asyncio.create_task(self._build(session, item, wait), name=name)
            self._builds[key] = task
            task.add_done_callback(lambda _: self._builds.pop(key, None))
        return task

    async def _read_ahead(self, session: Session, plan: Plan, number: int) -> None:
        if self.limiter.running >= self.limiter.max_builds:
            return
        directory = self.store.path(session.id)
        after = range(number + 1, min(len(plan.items), number + 1 + READ_AHEAD))
        made_items = (plan.at(n) for n in after if plan.items[n].made)
        upcoming = [item for item in made_items if (session.id, item.name) not in self._builds]
        if not upcoming:
            return  # served as recorded, or being made already
        made = await asyncio.to_thread(
            lambda: {item.name for item in upcoming if (directory / item.name).exists()}
        )
        for item in upcoming:
            if item.name not in made and (session.id, item.name) not in self._builds:
                task = self._build_task(session, item, wait=False)
                task.add_done_callback(_read_ahead_done)

    def _gone(self, session: Session) -> NotFound:
        log.info("media: session %s was deleted while a segment was being made", session.id)
        return NotFound(f"playback session {session.id} was deleted")

    async def _build(self, session: Session, item: MediaItem, wait: bool) -> Path:
        with self.store.hold(session.id):
            directory = self.store.path(session.id)
            target = directory / item.name
            source = await asyncio.to_thread(self.recording, item.source)
            kind = Kind.VIEWER if wait else Kind.READ_AHEAD
            async with self.limiter.slot(item.made_size, kind, wait=wait):
                if not self.store.live(session.id):
                    raise self._gone(session)
                if await asyncio.to_thread(target.is_file):
                    return target  # made meanwhile
                temporary = directory / f".{item.name}.{secrets.token_hex(4)}.tmp"
                given = directory / f".{item.name}.{secrets.token_hex(4)}.ts.tmp"
                limit = self.config.playback.build_timeout_seconds
                try:
                    if not item.mp4_tag:
                        argv = remux_argv(self.config.ffmpeg.ffmpeg, source, item, temporary)
                        await ffmpeg.run(argv, limit)
                        await asyncio.to_thread(_renumber, temporary)
                    else:  # its MPEG-TS on the timeline (as served, or remuxed), then MP4
                        if item.remux:
                            argv = remux_argv(self.config.ffmpeg.ffmpeg, source, item, given)
                            await ffmpeg.run(argv, limit)
                        else:
                            await asyncio.to_thread(self._write_as_recorded, item, given)
                        zero = await asyncio.to_thread(first_time, given)
                        argv = mp4_argv(self.config.ffmpeg.ffmpeg, given, item.mp4_tag, temporary)
                        await ffmpeg.run(argv, limit)
                        await asyncio.to_thread(
                            write_file, _times_path(target), json.dumps({"zero": zero}).encode()
                        )
                    await asyncio.to_thread(os.replace, temporary, target)
                except ffmpeg.FfmpegError as error:
                    if not self.store.live(session.id):
                        raise self._gone(session) from None
                    if "No space left on device" in error.detail:
                        raise InsufficientStorage(
                            "the playback disk is full; this segment could not be made"
                        ) from None
                    self.failed += 1
                    log.error(
                        "media: session %s segment %s from %s failed: %s %s",
                        session.id,
                        item.name,
                        item.source,
                        error,
                        error.detail,
                    )
                    raise MediaFailed(
                        f"could not prepare {item.name} of this session; the agent logged why"
                    ) from None
                except FileNotFoundError:
                    raise self._gone(session) from None
                finally:
                    for made in (temporary, given):
                        with contextlib.suppress(FileNotFoundError):
                            await asyncio.to_thread(made.unlink)
            log.info("media: session %s made %s", session.id, item.name)
            return target

    async def close(self) -> None:
        """Stop every build (their ffmpeg processes are terminated and reaped)."""
        tasks = list(self._builds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _packets(path: Path, offsets: tuple[int, ...]) -> bytes:
    """The whole packets of `path` at `offsets` (a cut segment's PAT and PMT, the audio
    sent after a part of a long recording)."""
    with opened(path, follow=False) as (fd, _):
        return b"".join(os.pread(fd, PACKET, offset) for offset in offsets)


def _version(item: MediaItem, init: bool, served: Served) -> str:
    """A digest of what a rewritten file's bytes depend on besides the file: the
    rewrite's format, the item as served (its shifts, cuts and counters), which part of
    it, and the byte range taken (pure)."""
    key = repr((REWRITE_FORMAT, MEDIA_ROW(item), item.name, init, served.start, served.stop))
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _times_path(made: Path) -> Path:
    """Where a segment made as MP4 keeps where it begins on the timeline."""
    return made.with_name(f"{made.name}.json")


def _read_ahead_done(task: asyncio.Task[Path]) -> None:
    """A read-ahead's known failures matter only to a viewer who asks for that segment
    later, and reach them then; anything else is logged here, not lost."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, AgentError):
        log.error("media: read-ahead failed", exc_info=error)
