"""HTTP routes: a table, thin handlers, and the middleware that renders every error."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from . import __version__, timeline
from .errors import AgentError, BadRequest, NotFound, Unauthorized
from .keys import CONFIG, INDEX, INDEXER, LIMITER, MEDIA, OPENAPI, SESSIONS, STARTED
from .media import Served
from .sessions import PLAYLIST, Session, SessionStore, open_session
from .times import format_us, parse_rfc3339

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_CAMERA_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# -- middleware ---------------------------------------------------------------------------

_HTTP_SENTENCES = {
    404: "no such resource",
    405: "method not allowed on this resource",
    413: f"request body is larger than {MAX_BODY // 1024} KiB",
    416: "requested range is not satisfiable",
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as {"error": ...}; an unexpected one is logged, never shown."""
    try:
        return await handler(request)
    except AgentError as error:
        headers = {}
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if error.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return _error(error.status, error.message, headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        sentence = _HTTP_SENTENCES.get(error.status, error.reason.lower())
        kept = ("allow", "retry-after", "content-range")
        keep = {k: v for k, v in error.headers.items() if k.lower() in kept}
        return _error(error.status, sentence, keep)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, "internal error; the agent logged the details")


def auth_middleware(token: str) -> Middleware:
    """Require `Authorization: Bearer <token>` on /api/* (but the OpenAPI description)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path.startswith("/api/") and request.path != "/api/openapi.json":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise Unauthorized("missing or wrong bearer token")
        return await handler(request)

    return check


# -- helpers ------------------------------------------------------------------------------


def _query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in allowed:
            raise BadRequest(
                f"unknown query parameter `{key}`; expected {', '.join(sorted(allowed))}"
            )
        if key in params:
            raise BadRequest(f"query parameter `{key}` is given twice")
        params[key] = value
    return params


def _camera_id(request: web.Request) -> str:
    camera = request.match_info["camera_id"]
    if not _CAMERA_ID.fullmatch(camera):
        raise BadRequest("camera id must be 1 to 128 letters, digits, '-', '_' or '.'")
    return camera


# -- handlers -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    status = app[INDEXER].status
    segments, cameras = await app[INDEX].counts()
    problems = []
    if not config.recordings.root.is_dir():
        problems.append("the recordings root does not exist")
    elif not status.watching:
        problems.append("the recordings root is not being watched")
    if status.last_error:
        problems.append(status.last_error)
    ffmpeg_found = shutil.which(config.ffmpeg.ffmpeg) is not None
    if not ffmpeg_found:
        problems.append("ffmpeg is not installed")
    body: dict[str, Any] = {
        "status": "degraded" if problems else "ok",
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[STARTED], 1),
        "problems": problems,
        "index": {
            "scan": status.scan,
            "first_scan_seconds": status.scan_seconds,
            "watching": status.watching,
            "segments": segments,
            "cameras": cameras,
            "pending_files": status.pending,
            "unreadable_files": status.unreadable,
        },
        "ffmpeg": ffmpeg_found,
        "sessions": len(app[SESSIONS].sessions),
        "admission": app[LIMITER].state(),
    }
    return web.json_response(body)


async def cameras(request: web.Request) -> web.Response:
    _query(request, set())
    found = await request.app[INDEX].cameras()
    return web.json_response(
        {
            "cameras": [
                {
                    "id": camera.id,
                    "segment_count": camera.segment_count,
                    "first_start": format_us(camera.first_start_us),
                    "last_end": format_us(camera.last_end_us),
                    "segment_seconds": round(camera.mean_segment_us / 1e6, 3),
                }
                for camera in found
            ]
        }
    )


async def recordings(request: web.Request) -> web.Response:
    camera = _camera_id(request)
    params = _query(request, {"from", "to"})
    from_us = parse_rfc3339(params["from"], "from") if "from" in params else None
    to_us = parse_rfc3339(params["to"], "to") if "to" in params else None
    if from_us is not None and to_us is not None and to_us <= from_us:
        raise BadRequest("`to` must be after `from`")
    index = request.app[INDEX]
    if not await index.has_camera(camera):
        raise NotFound(f"camera {camera} has no recordings")
    low = from_us if from_us is not None else -(1 << 62)
    high = to_us if to_us is not None else 1 << 62
    found = await index.segments(camera, low, high)
    resolution = request.app[CONFIG].layout.name_resolution_us
    spans = timeline.clip(timeline.spans(found, resolution), low, high)
    return web.json_response(
        {
            "camera_id": camera,
            "spans": [
                {
                    "from": format_us(span.start_us),
                    "to": format_us(span.end_us),
                    "segment_count": span.segment_count,
                }
                for span in spans
            ],
        }
    )


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # over MAX_BODY: aiohttp raises 413
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


async def create_playback(request: web.Request) -> web.Response:
    body = await _json_object(request)
    expected = {"camera_id", "from", "to"}
    missing = sorted(expected - set(body))
    if missing:
        raise BadRequest(f"missing field `{missing[0]}`; expected camera_id, from and to")
    extra = sorted(set(body) - expected)
    if extra:
        raise BadRequest(f"unknown field `{extra[0]}`; expected camera_id, from and to")
    camera = body["camera_id"]
    if not isinstance(camera, str) or not _CAMERA_ID.fullmatch(camera):
        raise BadRequest("`camera_id` must be 1 to 128 letters, digits, '-', '_' or '.'")
    from_us = parse_rfc3339(body["from"], "from")
    to_us = parse_rfc3339(body["to"], "to")
    app = request.app
    config = app[CONFIG]
    session = await open_session(
        app[SESSIONS],
        app[LIMITER],
        config.recordings.root,
        config.layout.name_resolution_us,
        config.playback.max_seconds,
        camera,
        from_us,
        to_us,
    )
    return web.json_response(
        session.public(), status=201, headers={"Location": f"/api/playback/{session.id}"}
    )


async def get_playback(request: web.Request) -> web.Response:
    session = request.app[SESSIONS].get(request.match_info["session_id"])
    return web.json_response(session.public())


async def delete_playback(request: web.Request) -> web.Response:
    await request.app[SESSIONS].delete(request.match_info["session_id"])
    return web.Response(status=204)


_MEDIA_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t"}


async def media(request: web.Request) -> web.StreamResponse:
    """The playlist or a media segment of a session: only names the session lists."""
    app = request.app
    store = app[SESSIONS]
    session = store.get(request.match_info["session_id"])
    name = request.match_info["name"]
    if name == PLAYLIST:
        store.touch(session)
        # FileResponse sends index.m3u8.gz when the client accepts gzip.
        return web.FileResponse(
            store.path(session.id) / PLAYLIST, headers=_media_headers(session, store, ".m3u8")
        )
    found = session.item(name)
    if found is None:
        raise NotFound(f"this session has no media named {name}")
    served = await app[MEDIA].file_for(session, *found)
    store.touch(session)
    return await _send(request, served, _media_headers(session, store, ".ts"))


def _media_headers(session: Session, store: SessionStore, suffix: str) -> dict[str, str]:
    seconds = max(0, (session.expires_us - store.now_us()) // 1_000_000)
    return {"Content-Type": _MEDIA_TYPES[suffix], "Cache-Control": f"private, max-age={seconds}"}


_CHUNK = 256 * 1024


async def _send(
    request: web.Request, served: Served, headers: dict[str, str]
) -> web.StreamResponse:
    """A media segment (file + suffix), whole or one byte range, never compressed."""
    fd = await asyncio.to_thread(os.open, served.path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = await asyncio.to_thread(os.fstat, fd)
        size = info.st_size
        total = size + len(served.suffix)
        headers = {**headers, "Accept-Ranges": "bytes",
                   "ETag": f'"{info.st_mtime_ns:x}-{total:x}"'}  # fmt: skip
        try:
            wanted = request.http_range
        except ValueError:
            wanted = slice(total, None)
        start, stop = wanted.start, wanted.stop
        ranged = start is not None or stop is not None
        if start is None:
            start = 0
        elif start < 0:  # bytes=-N: the last N bytes
            start, stop = max(0, total + start), None
        stop = total if stop is None else min(stop, total)
        if ranged and start >= min(stop, total):
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{total}"})
        if ranged:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
        headers["Content-Length"] = str(stop - start)
        response = web.StreamResponse(status=206 if ranged else 200, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        position = start
        try:
            while position < min(stop, size):
                length = min(_CHUNK, stop - position)
                chunk = await asyncio.to_thread(os.pread, fd, length, position)
                if not chunk:
                    break  # the file shrank: the client sees a short body
                await response.write(chunk)
                position += len(chunk)
            if stop > size:
                await response.write(served.suffix[max(0, start - size) : stop - size])
            await response.write_eof()
        except ConnectionResetError:
            pass  # the player went away (a seek, a closed tab): nothing to report
        return response
    finally:
        await asyncio.to_thread(os.close, fd)


async def media_preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": "Range",
            "Access-Control-Max-Age": "86400",
        },
    )


async def add_cors(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Let web pages on other LAN origins play /media with hls.js."""
    if request.path.startswith("/media/"):
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = (
            "Content-Length, Content-Range, Accept-Ranges, Content-Type"
        )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/healthz", healthz)
    router.add_get("/api/openapi.json", openapi)
    router.add_get("/api/cameras", cameras)
    router.add_get("/api/cameras/{camera_id}/recordings", recordings)
    router.add_post("/api/playback", create_playback)
    router.add_get("/api/playback/{session_id}", get_playback)
    router.add_delete("/api/playback/{session_id}", delete_playback)
    router.add_get("/media/playback/{session_id}/{name}", media)
    router.add_route("OPTIONS", "/media/playback/{session_id}/{name}", media_preflight)
    app.on_response_prepare.append(add_cors)
