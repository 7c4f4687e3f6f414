"""Sending a session's files over HTTP: byte ranges, conditional requests, the playlist's
gzip twin, and media segments rewritten in flight onto the session's timeline.

The media service decides what to send (`served.Served`: paths the agent built, never
the raw URL) and how to rewrite it; this module sends it, as aiohttp's FileResponse
would, with the byte loop of `served` reading whole packets so that every byte range of
a rewritten segment is the same bytes.

Files sent as they are (the playlist and its gzip twin, segments ffmpeg made) go this
way too, not through FileResponse: aiohttp 3.11's FileResponse reads `If-Range` only as
a date, so a resume whose `If-Range` names a stale entity tag gets a 206 of the new
bytes, the very splice the ETag is there to prevent; it also opens through symlinks and
answers 416 to an invalid range-spec, which RFC 9110 14.1.1 says to ignore.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .containers.errors import ProbeError
from .containers.files import open_regular
from .errors import NotFound
from .served import Served, served_bytes

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# One entity tag of an If-None-Match list (RFC 9110 8.8.3): weak or strong, or "*".
_TAG = re.compile(r'\s*(\*|(?:W/)?"[^"]*")\s*(?:,|$)')


def _open(path: Path) -> tuple[int, os.stat_result]:
    """Open a regular file (never through a symlink, never blocking on a FIFO) and stat
    it, in one worker-thread hop."""
    return open_regular(path, follow=False)


def byte_range(header: str | None, total: int) -> tuple[int, int] | None:
    """[start, stop) of a single-range `Range` header against `total` bytes, or None for
    the whole file; raises ValueError if the range cannot be satisfied (pure)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # not a single byte range we serve: the whole file, as RFC 9110 allows
    first, last = match.groups()
    if first != "" and last != "" and int(last) < int(first):
        return None  # an invalid range-spec: the header is ignored (RFC 9110 14.1.1)
    if first == "":  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0 or total == 0:
            raise ValueError("empty suffix range")
        return max(0, total - suffix), total
    start = int(first)
    stop = total if last == "" else min(int(last) + 1, total)
    if start >= total or stop <= start:
        raise ValueError("range starts past the end")
    return start, stop


def none_match(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag`: any tag of its list, or "*", by the
    weak comparison RFC 9110 13.1.2 asks for (pure)."""
    if header is None:
        return False
    bare = etag.removeprefix("W/")
    position = 0
    while position < len(header):
        match = _TAG.match(header, position)
        if match is None:
            return False  # not a list of entity tags: no tag of ours
        tag = match.group(1)
        if tag == "*" or tag.removeprefix("W/") == bare:
            return True
        position = match.end()
    return False


def _accepts_gzip(request: web.BaseRequest) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


async def send(request: web.Request, served: Served) -> web.StreamResponse:
    """Send `served`: whole, one byte range, or 304; never compressed on the fly."""
    headers = {
        "Content-Type": served.content_type,
        "Cache-Control": f"private, max-age={served.max_age}",
        "Accept-Ranges": "bytes",
    }
    path = served.path
    if served.gzip_path is not None:
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request):
            path = served.gzip_path
            headers["Content-Encoding"] = "gzip"
    try:
        fd, info = await asyncio.to_thread(_open, path)
    except (FileNotFoundError, NotADirectoryError, ProbeError):
        raise NotFound("this session's file is gone; the session was deleted or expired") from None
    if served.inode and info.st_ino != served.inode:  # replaced since it was looked at
        await asyncio.to_thread(os.close, fd)
        raise NotFound("the recording for this segment was replaced while it was asked for")
    try:
        total = served.length(info.st_size)
        etag = f'"{served.version}{"-" if served.version else ""}{info.st_mtime_ns:x}-{total:x}"'
        answer = _answer(request, headers, etag, total)
        if isinstance(answer, web.Response):
            return answer
        response, start, stop = answer
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            position = start
            while position < stop:
                chunk = await asyncio.to_thread(served_bytes, fd, served, position, stop, total)
                if not chunk:
                    break  # the file shrank: the client sees a short body
                await response.write(chunk)
                position += len(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the player went away (a seek, a closed tab) or was cut: nothing to report
        return response
    finally:
        await asyncio.to_thread(os.close, fd)


async def send_made(
    request: web.Request,
    headers: dict[str, str],
    etag: str,
    total: int,
    read: Callable[[int, int], Awaitable[list[bytes]]],
    broken: Callable[[Exception], None],
) -> web.StreamResponse:
    """Send an entity the agent makes as it is read (an export): `total` bytes, `read`
    giving those from a position up to a stop, some at a time, in parts. Whole, one byte range, or
    304, as `send`. A read that fails before the answer begins is answered as an error;
    once it has begun, the connection is cut, so that the client sees a broken download,
    never a short file that looks whole, and `broken` is told why."""
    answer = _answer(request, {**headers, "Accept-Ranges": "bytes"}, etag, total)
    if isinstance(answer, web.Response):
        return answer
    response, start, stop = answer
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    parts = await read(start, stop) if start < stop else []
    await response.prepare(request)
    position = start + sum(map(len, parts))
    following: asyncio.Future[list[bytes]] | None = None
    try:
        while True:
            # The next bytes are made while these are sent.
            if position < stop:
                following = asyncio.ensure_future(read(position, stop))
            for part in parts:
                await response.write(part)
            if following is None:
                break
            parts = await following
            following = None
            position += sum(map(len, parts))
        await response.write_eof()
    except ConnectionError:
        pass  # the download was cancelled
    except Exception as error:
        if request.transport is not None:
            request.transport.abort()
        broken(error)
    finally:
        if following is not None:  # not waited for: its outcome is let go, never left unread
            following.add_done_callback(lambda done: done.cancelled() or done.exception())
            following.cancel()
    return response


def _answer(
    request: web.BaseRequest, headers: dict[str, str], etag: str, total: int
) -> web.Response | tuple[web.StreamResponse, int, int]:
    """304 if If-None-Match names `etag`; else the response to send (200 or 206, its
    headers set) and the bytes [start, stop) it sends of `total`."""
    headers = {**headers, "ETag": etag}
    if none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={"ETag": etag})
    start, stop, ranged = _wanted(request, etag, total)
    if ranged:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
    headers["Content-Length"] = str(stop - start)
    return web.StreamResponse(status=206 if ranged else 200, headers=headers), start, stop


def _wanted(request: web.BaseRequest, etag: str, total: int) -> tuple[int, int, bool]:
    """[start, stop) of `total` bytes to send, and whether it is a range (206): Range
    honoured unless If-Range names another version; 416 for a range past the end."""
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        wanted = None  # the client's copy is another version: send it all
    try:
        ranged = byte_range(wanted, total)
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable(
            headers={"Content-Range": f"bytes */{total}"}
        ) from None
    start, stop = ranged or (0, total)
    return start, stop, ranged is not None
