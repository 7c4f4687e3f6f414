"""What is sent for a session's URL, and its bytes: a file of the agent's choosing (a
recording, or a segment made for the session), a part of it, with bytes sent before and
after it and its timestamps rewritten in flight (no HTTP here: `serve` sends it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .containers.mpegts import NULL_PACKET, PACKET

_CHUNK = PACKET * 1394  # about 256 KiB of whole MPEG-TS packets

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
TS_TYPE = "video/mp2t"
MP4_TYPE = "video/mp4"
SEGMENT_TYPE = "video/iso.segment"  # a fragmented MP4 media segment (RFC 8216 3.3)


Rewrite = Callable[[bytearray], None]
Patch = Callable[[int, int, bytearray], None]  # (fd, file offset, bytes from there)


@dataclass(frozen=True, kw_only=True)
class Served:
    """What to send for a session's URL: `prefix`, then bytes `start` to `stop` (0: the
    end) of a file of the agent's choosing with the packets at `nulls` (file offsets) sent
    as null packets, then `suffix`; with `rewrite` applied to whole packets of that
    stream in flight; or `patch` applied to any of the file's bytes (at their offsets in
    it). `gzip_path`, where set, is the same content compressed."""

    path: Path
    content_type: str
    start: int = 0
    stop: int = 0
    prefix: bytes = b""
    suffix: bytes = b""
    nulls: tuple[int, ...] = ()
    rewrite: Rewrite | None = None
    patch: Patch | None = None
    gzip_path: Path | None = None
    max_age: int = 0
    # What the bytes sent depend on besides the file's own (its mtime and length), for
    # the ETag: the rewrite's format and parameters. "" for a file sent as it is.
    version: str = ""
    # The inode the file had when it was checked (0: not checked): another one opened
    # then (the file replaced in between) is refused rather than sent.
    inode: int = 0

    def length(self, size: int) -> int:
        """The bytes sent for a file of `size` bytes."""
        end = min(size, self.stop) if self.stop else size
        return len(self.prefix) + max(0, end - self.start) + len(self.suffix)


def served_bytes(fd: int, served: Served, position: int, stop: int, total: int) -> memoryview:
    """The served stream's bytes from `position` (up to a chunk, before `stop`; the stream
    is `total` bytes). A stream that is rewritten is read as whole packets from packet
    boundaries, so that any byte range of it is the same bytes."""
    aligned, limit = position, stop
    if served.rewrite is not None:
        aligned, limit = position - position % PACKET, min(stop + -stop % PACKET, total)
    end = min(aligned + _CHUNK, limit)
    prefix = served.prefix
    body_end = total - len(served.suffix)  # where the file's bytes end in the stream
    data = bytearray(prefix[aligned:end])
    if end > len(prefix) and aligned < body_end:
        start = max(aligned, len(prefix))
        read = os.pread(fd, min(end, body_end) - start, start - len(prefix) + served.start)
        if served.nulls:
            read = bytearray(read)
            for offset in served.nulls:  # whole packets: their stream offsets are aligned
                at = offset - served.start + len(prefix) - start
                if at >= 0 and at + PACKET <= len(read):
                    read[at : at + PACKET] = NULL_PACKET
        if served.patch is not None:  # the file's bytes, at their offsets in it
            read = bytearray(read)
            served.patch(fd, start - len(prefix) + served.start, read)
        data += read
    if end > body_end:
        data += served.suffix[max(aligned, body_end) - body_end : end - body_end]
    if served.rewrite is not None:
        served.rewrite(data)  # whole packets only; a truncated last one goes as it is
    return memoryview(data)[position - aligned : stop - aligned]
