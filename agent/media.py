"""Media segments: where each one is served from.

A segment served as recorded comes straight from the recordings (a path the agent took
from its own index, never from the URL), its timestamps moved onto the session's
timeline in flight. A segment of a re-boxed session (reboxed.py) is made when it is
asked for, from its recording's sample tables, in memory: no ffmpeg, nothing written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from stat import S_ISREG
from typing import Any

from . import reboxed
from .config import Config
from .containers import mp4
from .containers.errors import CORRUPT
from .containers.files import open_regular, opened
from .containers.mpegts import PACKET, rewrite
from .errors import NotFound, ProbeError
from .export import ClipBroken, Exporter
from .playlists import CUT, FRAGMENTS, REMUX, MediaItem, Plan
from .samplestore import stamp_of
from .served import MP4_TYPE, SEGMENT_TYPE, TS_TYPE, Served
from .sessions import SessionStore
from .stored import MEDIA_ROW, Session

log = logging.getLogger(__name__)
_SAID_KEPT = 10_000  # recordings refused, said once each

# The in-flight rewrite's own version, in the ETag of everything it sends: a change to
# what it sends for the same plan and recording (an upgrade) must change the ETag, or an
# If-Range resume across it would splice old and new bytes.
REWRITE_FORMAT = 1


def recording_path(root: Path, source: str, resolved: dict[str, str] | None = None) -> Path:
    """The recording at `source` (relative to `root`), if it is still a regular file
    inside the root, reached through no symlink at any level below the root (blocking).

    `resolved`, if given, keeps the directories resolved on the way for the next calls
    (a clip's recordings lie in a few directories: each is then resolved once, not once
    a recording)."""
    cache = {} if resolved is None else resolved
    real_root = _resolved(cache, str(root))
    path = Path(real_root, source)
    try:
        info = os.lstat(path)  # the file itself: a regular file, not a symlink
        parent = _resolved(cache, os.path.dirname(path))
    except OSError:
        info = None
    if info is None or not S_ISREG(info.st_mode):
        raise NotFound("the recording for this segment is no longer on disk")
    if parent != os.path.dirname(path):
        log.warning("media: refusing %s: a directory on its way is a symlink", source)
        raise NotFound("the recording for this segment is no longer on disk")
    return path


def _resolved(cache: dict[str, str], directory: str) -> str:
    found = cache.get(directory)
    if found is None:
        found = cache[directory] = os.path.realpath(directory)
    return found


class MediaService:
    def __init__(self, config: Config, store: SessionStore, exporter: Exporter) -> None:
        self.config = config
        self.store = store
        self.exporter = exporter  # recordings' sample tables, shared with the export
        self._changed: set[tuple[Path, int]] = set()  # recordings grown since planned, said once
        self._said: set[tuple[str, str]] = set()  # recordings refused (Changed), said once

    def recording(self, source: str) -> Path:
        """`recording_path` under the configured root (blocking)."""
        return recording_path(self.config.recordings.root, source)

    async def file_for(
        self, session: Session, plan: Plan, number: int, item: MediaItem, init: bool = False
    ) -> Served:
        """What to serve for `item` (or, `init`, its recording's init section).

        A recording served as recorded gets the session's timeline in flight: its PTS,
        DTS and PCR moved by the plan's shift, its continuity counters carried on from
        the segment before, so that players see one stream, as from a single muxer.
        """
        if item.kind == FRAGMENTS:
            served = await self._read(item, "segment", self._fragments, item, init)
        elif item.mp4_tag:
            served = await self._read(item, "segment", self._reboxed, plan, number, item, init)
        elif item.kind == REMUX:
            served = await self._read(item, "segment", self._remuxed, session, item)
        else:
            served = await self._read(item, "segment", self._as_recorded, item)
        if served.rewrite is not None or served.patch is not None:
            served = replace(served, version=_version(item, init, served))
        return served

    async def keyframe_for(self, item: MediaItem, moof_at: int, sample: int) -> Served:
        """A keyframe of a fragmented MP4 item that lies inside its fragment, after other
        pictures, made a fragment of its own on the session's timeline (its audio of that
        frame's time with it): what the I-frame playlist lists for it (iframes.py)."""
        return await self._read(item, "keyframe", self._keyframe, item, moof_at, sample)

    async def _read(
        self, item: MediaItem, what: str, read: Callable[..., Served], *args: Any
    ) -> Served:
        """`read(*args)` on a worker thread; a recording changed or gone since the session
        was planned is a NotFound with a sentence (said once, or logged), never a 500."""
        try:
            return await asyncio.to_thread(read, *args)
        except Changed as error:
            self._say_once(item.source, str(error))
            raise NotFound(
                f"the recording for this {what} was {error} since the session was made;"
                " create the session again"
            ) from None
        except (ProbeError, ClipBroken, OSError, *CORRUPT) as error:  # changed, or gone
            log.warning("media: %s cannot be served: %s", item.source, error)
            raise NotFound(f"the recording for this {what} is no longer whole") from None

    def _keyframe(self, item: MediaItem, moof_at: int, sample: int) -> Served:
        path = self.recording(item.source)
        fd, info = open_regular(path, follow=False)
        try:
            check_unchanged(item, info)
            end = item.stop_at or item.size
            inside = item.cut_at <= moof_at < end or (
                moof_at == item.stop_at and sample < item.stop_sample
            )
            # The cut part's first keyframe is listed as a byte range, not by this name.
            first = moof_at == item.cut_at and sample <= item.cut_sample
            timeline = mp4.retimed(fd, item.init_size, (item.cut_at,), item.shift)
            video = timeline.tracks[0]
            if not inside or first or not mp4.keyframe_at(fd, item.cut_at, moof_at, video, sample):
                raise NotFound("this session has no such keyframe")
            data, _ = timeline.cut(fd, moof_at, sample, sample + 1)
        finally:
            os.close(fd)
        key = repr(("keyframe", REWRITE_FORMAT, MEDIA_ROW(item), item.name, moof_at, sample))
        version = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        # The file's own bytes are none of it (start = stop = its end): all is made.
        return Served(path=path, content_type=SEGMENT_TYPE, prefix=data, start=info.st_size,
                      stop=info.st_size, version=version, inode=info.st_ino)  # fmt: skip

    def _say_once(self, source: str, what: str) -> None:
        if (source, what) not in self._said and len(self._said) < _SAID_KEPT:
            self._said.add((source, what))
            log.warning("media: %s was %s since a session was planned: not served", source, what)

    def _reboxed(self, plan: Plan, number: int, item: MediaItem, init: bool) -> Served:
        """A re-boxed session's init section or media segment, made from the recording's
        sample tables (reboxed.py; blocking)."""
        path = self.recording(item.source)
        fd, info = open_regular(path, follow=False)
        try:
            check_unchanged(item, info)
            recording = self.exporter.recording(item.source, stamp_of(info))
            if init:
                data, kind, where = reboxed.init_section(recording), MP4_TYPE, None
            else:
                where = reboxed.window(plan.items, plan.starts, number)
                data = reboxed.segment(fd, recording, item, where, number + 1)
                kind = SEGMENT_TYPE
        finally:
            os.close(fd)
        # The file's own bytes are none of it (start = stop = its end): all is made.
        return Served(path=path, content_type=kind, prefix=data, start=info.st_size,
                      stop=info.st_size, version=reboxed.version(item, init, where))  # fmt: skip

    def _remuxed(self, session: Session, item: MediaItem) -> Served:
        """A segment a session planned by an earlier version has ffmpeg make (an MP4
        recording as MPEG-TS): served if it was made then; no ffmpeg makes it now."""
        path = self.store.path(session.id) / item.name
        if not path.is_file():
            raise NotFound(
                "this segment was to be made by ffmpeg for a session of an earlier version"
                " of the agent; create the session again"
            )
        return Served(path=path, content_type=TS_TYPE)

    def _as_recorded(self, item: MediaItem) -> Served:
        path = self.recording(item.source)
        info = os.stat(path, follow_symlinks=False)
        check_unchanged(item, info)
        size = info.st_size
        if size != item.size and (path, size) not in self._changed:
            # Grown since (a recorder still writing it when it was indexed): served as it
            # is now, on the plan's timeline, whole packets rewritten. Said once per file
            # and size.
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
            inode=info.st_ino,
        )

    def _fragments(self, item: MediaItem, init: bool) -> Served:
        """Bytes of a fragmented MP4 recording on the session's timeline: `item`'s
        fragments, decode times moved in flight, or its recording's init section, an HEVC
        sample entry named for Safari (mp4.Retimed)."""
        path = self.recording(item.source)
        fd, info = open_regular(path, follow=False)
        try:
            check_unchanged(item, info)
            timeline = mp4.retimed(fd, item.init_size, (item.cut_at,), item.shift)
            if init:
                return Served(path=path, content_type=MP4_TYPE, stop=item.init_size,
                              patch=timeline.apply, inode=info.st_ino)  # fmt: skip
            # A keyframe inside a fragment: the fragment's part from it, or up to it, is
            # made a fragment of its own (a few hundred kilobytes, read at each request).
            prefix, start, stop, suffix = timeline.served(
                fd, item.cut_at, item.stop_at, item.cut_sample, item.stop_sample
            )
            timeline = replace(timeline, starts=(start,))
        except (ProbeError, StopIteration, IndexError, ValueError) as error:
            # Cut short or changed since it was planned.
            log.warning("media: %s cannot be served: %s", item.source, error)
            raise NotFound("the recording for this segment is no longer whole") from None
        finally:
            os.close(fd)
        return Served(path=path, content_type=SEGMENT_TYPE, start=start, stop=stop,
                      prefix=prefix, suffix=suffix, patch=timeline.apply,
                      inode=info.st_ino)  # fmt: skip


class Changed(Exception):
    """A recording is not the file a session was planned from (its words: how)."""


def check_unchanged(item: MediaItem, info: os.stat_result) -> None:
    """Changed if the recording `info` describes is not the file `item` was planned from
    (MediaItem.changed)."""
    how = item.changed(*stamp_of(info))
    if how:
        raise Changed(how)


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
