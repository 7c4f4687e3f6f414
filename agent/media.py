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
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from . import ffmpeg
from .admission import Limiter
from .config import Config
from .errors import AgentError, NotFound
from .playlists import MediaItem
from .probe import cc_suffix, ts_end_counters
from .sessions import Session, SessionStore

log = logging.getLogger(__name__)

READ_AHEAD = 2
_SEEK_NUDGE = 0.0005  # seek just past the keyframe: ffmpeg starts at the keyframe before


class MediaFailed(AgentError):
    status = 500


@dataclass(frozen=True)
class Served:
    """A media segment's bytes: a file, then `suffix` (continuity-counter stuffing)."""

    path: Path
    suffix: bytes


def _append_suffix(path: Path) -> None:
    suffix = cc_suffix(ts_end_counters(path))
    with open(path, "ab") as handle:
        handle.write(suffix)
        handle.flush()
        os.fsync(handle.fileno())


def remux_argv(ffmpeg_bin: str, source: Path, item: MediaItem, output: Path) -> list[str]:
    """ffmpeg's arguments to make `item` from its recording: stream copy, never a transcode."""
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if item.seek is not None:
        argv += ["-seek_timestamp", "1", "-ss", f"{item.seek + _SEEK_NUDGE:.6f}"]
    argv += ["-copyts", "-i", str(source), "-map", "0:v:0", "-map", "0:a?", "-c", "copy"]
    if item.offset is not None:
        argv += ["-output_ts_offset", f"{item.offset:.6f}"]
    argv += ["-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", str(output)]
    return argv


class MediaService:
    def __init__(self, config: Config, store: SessionStore, limiter: Limiter) -> None:
        self.config = config
        self.store = store
        self.limiter = limiter
        self._builds: dict[tuple[str, str], asyncio.Task[Path]] = {}

    def recording(self, item: MediaItem) -> Path:
        """The recording behind `item`, if it is still a regular file inside the root."""
        path = self.config.recordings.root / item.source
        try:
            info = os.lstat(path)
        except OSError:
            info = None
        if info is None or not S_ISREG(info.st_mode):
            raise NotFound("the recording for this segment is no longer on disk")
        return path

    async def file_for(self, session: Session, number: int, item: MediaItem) -> Served:
        """What to serve for `item`, made first if it must be.

        Every file a recorder or ffmpeg writes starts its continuity counters at 0, so
        each served segment ends with them brought to 15: players then see one unbroken
        stream across segments, as from a single muxer.
        """
        if not item.remux:
            served = await asyncio.to_thread(self._as_recorded, item)
        else:
            path = self.store.path(session.id) / item.name
            if not await asyncio.to_thread(path.is_file):
                path = await asyncio.shield(self._build_task(session, item, wait=True))
            served = Served(path, b"")  # its suffix was written when it was made
        self._read_ahead(session, number)
        return served

    def _as_recorded(self, item: MediaItem) -> Served:
        path = self.recording(item)
        return Served(path, _suffix_for(path))

    def _build_task(self, session: Session, item: MediaItem, wait: bool) -> asyncio.Task[Path]:
        key = (session.id, item.name)
        task = self._builds.get(key)
        if task is None:
            task = asyncio.create_task(self._build(session, item, wait), name=f"build {key}")
            self._builds[key] = task
            self.store.busy[session.id] = self.store.busy.get(session.id, 0) + 1
            task.add_done_callback(lambda _: self._done(key))
        return task

    def _done(self, key: tuple[str, str]) -> None:
        self._builds.pop(key, None)
        left = self.store.busy.get(key[0], 1) - 1
        if left:
            self.store.busy[key[0]] = left
        else:
            self.store.busy.pop(key[0], None)

    def _read_ahead(self, session: Session, number: int) -> None:
        for item in session.plan.items[number + 1 : number + 1 + READ_AHEAD]:
            key = (session.id, item.name)
            if (
                not item.remux
                or key in self._builds
                or self.limiter.running >= self.limiter.max_builds
            ):
                continue
            if (self.store.path(session.id) / item.name).exists():
                continue
            task = self._build_task(session, item, wait=False)
            task.add_done_callback(_read_ahead_done)

    async def _build(self, session: Session, item: MediaItem, wait: bool) -> Path:
        directory = self.store.path(session.id)
        target = directory / item.name
        source = await asyncio.to_thread(self.recording, item)
        async with self.limiter.slot(item.size, wait=wait):
            if await asyncio.to_thread(target.is_file):
                return target  # made meanwhile
            temporary = directory / f".{item.name}.{secrets.token_hex(4)}.tmp"
            argv = remux_argv(self.config.ffmpeg.ffmpeg, source, item, temporary)
            try:
                await ffmpeg.run(argv, self.config.playback.build_timeout_seconds)
                await asyncio.to_thread(_append_suffix, temporary)
                await asyncio.to_thread(os.replace, temporary, target)
            except ffmpeg.FfmpegError as error:
                log.error("media: session %s segment %s from %s failed: %s %s", session.id,
                          item.name, item.source, error, error.detail)  # fmt: skip
                raise MediaFailed(
                    f"could not prepare {item.name} of this session; the agent logged why"
                ) from None
            except FileNotFoundError:
                raise NotFound(f"playback session {session.id} was deleted") from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(temporary.unlink)
        log.info("media: session %s made %s", session.id, item.name)
        return target

    async def close(self) -> None:
        """Stop every build (their ffmpeg processes are terminated and reaped)."""
        tasks = list(self._builds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _suffix_for(path: Path) -> bytes:
    try:
        return cc_suffix(ts_end_counters(path))
    except OSError:
        return b""  # served as it is; the read that follows reports the problem


def _read_ahead_done(task: asyncio.Task[Path]) -> None:
    """A read-ahead's known failures matter only to a viewer who asks for that segment
    later, and reach them then; anything else is logged here, not lost."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, AgentError):
        log.error("media: read-ahead failed", exc_info=error)
