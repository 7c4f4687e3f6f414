"""HTTP routes: a table, thin handlers, and the middleware that renders every error."""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from . import __version__, memory, serve
from .errors import AgentError, BadRequest, RequestTimeout, Unauthorized
from .export import ClipBroken
from .ids import check_camera_id, check_session_id
from .keys import (
    CONFIG,
    GUARD,
    INDEX,
    INDEXER,
    LIMITER,
    METRICS,
    OPENAPI,
    PAGE,
    PLAYBACK,
    SESSIONS,
    STARTED,
    TASKS,
    VITALS,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Snapshot
from .page import SECURITY_HEADERS
from .served import MP4_TYPE, PLAYLIST_TYPE
from .times import format_us, parse_rfc3339

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
BODY_SECONDS = 10  # a request body must arrive within this
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
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection guard that this connection's request headers are complete;
    count the request and its time by route and status."""
    guard = request.app[GUARD]
    guard.request_started(request.protocol)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        guard.request_finished(request.protocol)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)


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
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            log.warning("%s %s: the index's disk is full", request.method, request.path)
            return _error(507, "the agent's index disk is full; nothing was changed")
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, "internal error; the agent logged the details")
    except ConnectionError:
        # The client closed or reset its connection while its request was read: no one
        # is left to answer, and nothing went wrong here.
        log.info("%s %s: the client went away", request.method, request.path)
        return _error(400, "the client went away")
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            log.warning("%s %s: %s", request.method, request.path, error.strerror)
            return _error(507, "the agent's disk is full; nothing was changed")
        if error.errno == errno.EROFS:
            log.warning("%s %s: %s", request.method, request.path, error.strerror)
            return _error(507, "the agent's disk is read-only; nothing was changed")
        if error.errno in (errno.EMFILE, errno.ENFILE):
            # Every descriptor is in use (connections at the cap, each reading a file):
            # a moment's shortage, said once in a while, not a defect with a traceback.
            _busy_log.warning("%s %s: %s", request.method, request.path, error.strerror)
            return _error(503, "the agent is busy; try again shortly", {"Retry-After": "1"})
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, "internal error; the agent logged the details")
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, "internal error; the agent logged the details")


def auth_middleware(token: str) -> Middleware:
    """Require `Authorization: Bearer <token>` on /api/* (but the OpenAPI description)
    and /metrics."""
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        protected = request.path.startswith("/api/") or request.path == "/metrics"
        if token and protected and request.path != "/api/openapi.json":
            # aiohttp hands over undecodable header bytes as surrogates: keep them as bytes.
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            scheme, _, credentials = given.strip().partition(b" ")
            # The scheme is case-insensitive (RFC 9110 11.1), the token itself is not.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                credentials.strip(), expected
            ):
                raise Unauthorized("missing or wrong bearer token")
        return await handler(request)

    return check


# -- logging of what aiohttp and asyncio see below the handlers -------------------------


MALFORMED_LINES = 10
MALFORMED_SECONDS = 10.0


class _MalformedRequests(logging.Filter):
    """A request aiohttp cannot parse is the client's mistake: one warning line, no
    traceback (aiohttp logs each at ERROR with one), and at most MALFORMED_LINES of them
    every MALFORMED_SECONDS; the next line says how many were left unsaid (a flood of
    garbage must not fill the journal: 45,000 lines in 10 s before)."""

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        """A new window, nothing left unsaid (an agent starting afresh)."""
        self._window = -MALFORMED_SECONDS
        self._said = 0
        self._unsaid = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        now = time.monotonic()
        if now - self._window >= MALFORMED_SECONDS:
            self._window, self._said = now, 0
        if self._said >= MALFORMED_LINES:
            self._unsaid += 1
            return False
        self._said += 1
        first = str(error.message).strip().splitlines()[0] if error.message else ""
        said = record.getMessage()
        record.msg, record.args = "%s: %s %s", (said, error.code, first)
        if self._unsaid:
            record.msg += " (and %d more malformed requests not logged)"
            record.args = (*record.args, self._unsaid)
            self._unsaid = 0
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


class _RateLimited(logging.Filter):
    """At most one record of the same message per `seconds` (asyncio can log thousands a
    second when the process runs out of file descriptors)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            record.msg, record.args = "%s: %s", (record.getMessage(), error.strerror)
            record.exc_info = record.exc_text = None  # the cause is known; no traceback
        now = time.monotonic()
        key = str(record.msg)
        if now - self._last.get(key, -self.seconds) < self.seconds:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


# Said at most once every 10 s (quiet_logs rate-limits it), whatever the flood.
_busy_log = logging.getLogger(f"{__name__}.busy")


def quiet_logs() -> None:
    """Install the filters above once per process (an app made anew starts their count
    afresh)."""
    server = logging.getLogger("aiohttp.server")
    malformed = [f for f in server.filters if isinstance(f, _MalformedRequests)]
    for found in malformed:
        found.reset()
    if not malformed:
        server.addFilter(_MalformedRequests())
    for name in ("asyncio", _busy_log.name):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimited) for f in logger.filters):
            logger.addFilter(_RateLimited(10.0))


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


def _optional_time(params: dict[str, str], key: str) -> int | None:
    return parse_rfc3339(params[key], key) if key in params else None


# -- handlers -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    status = app[INDEXER].status
    segments, cameras = app[INDEX].counts()
    root = config.recordings.root
    # Nothing here waits for a disk or a thread: the root and ffmpeg as last looked at.
    vitals = app[VITALS]
    problems = []
    stalled = vitals.stalled()
    if stalled:
        problems.append(stalled)
    elif vitals.root_found is False:
        problems.append(f"the recordings root {root} (recordings.root) does not exist")
    elif not status.watching:
        problems.append(f"the recordings root {root} is not being watched")
    if status.last_error:
        problems.append(status.last_error)
    if status.index_full:
        problems.append("the index's disk is full: new recordings wait to be indexed")
    problems.extend(status.undecided.values())
    problems.extend(app[TASKS].down.values())
    # ffmpeg is not needed to index, watch or export (the demo renders its footage with it):
    # "ffmpeg" says whether it is there, and its absence is no problem.
    problems.extend(app[LIMITER].problems())
    if app[SESSIONS].unwritable:
        problems.append(
            f"playback.dir {config.playback.dir} cannot be written to"
            f" ({app[SESSIONS].unwritable}): new sessions get 507"
        )
    body: dict[str, Any] = {
        "status": "degraded" if problems else "ok",
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[STARTED], 1),
        "problems": problems,
        "index": {
            "scan": status.scan,
            "first_scan_seconds": status.scan_seconds,
            # The index was complete when the agent stopped: sessions are served meanwhile.
            "resumed": status.resumed,
            "watching": status.watching,
            "segments": segments,
            "cameras": cameras,
            "pending_files": status.pending,
            "unreadable_files": status.unreadable,
            # How far the reconcile under way (the first scan, at start) is, and the
            # last one's cost: directories left alone have not changed in a day.
            "reconcile": {
                "directories": status.dirs,
                "done": status.dirs_done,
                "left_alone": status.quiet_dirs,
                "last_seconds": status.reconcile_seconds,
            },
        },
        "ffmpeg": vitals.ffmpeg_found,
        "sessions": {
            "live": len(app[SESSIONS].sessions),
            "max": config.playback.max_sessions,
            "loading": not app[SESSIONS].loaded.is_set(),
            "plans": app[PLAYBACK].plans_state(),
        },
        "admission": app[LIMITER].state(),
        "connections": app[GUARD].state(),
    }
    return web.json_response(body)


async def cameras(request: web.Request) -> web.Response:
    _query(request, set())
    known = await request.app[INDEX].cameras()
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
                for camera in known
            ]
        }
    )


async def recordings(request: web.Request) -> web.Response:
    camera = check_camera_id(request.match_info["camera_id"])
    params = _query(request, {"from", "to"})
    spans = await request.app[PLAYBACK].spans(
        camera, _optional_time(params, "from"), _optional_time(params, "to")
    )
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


async def keyframe(request: web.Request) -> web.Response:
    """The keyframe shown at `t`, for the page's scrub preview (keyframes.py)."""
    camera = check_camera_id(request.match_info["camera_id"])
    params = _query(request, {"t"})
    if "t" not in params:
        raise BadRequest("missing query parameter `t`")
    found = await request.app[PLAYBACK].keyframe(camera, parse_rfc3339(params["t"], "t"))
    # The same time shows the same picture while the recording stands: a short cache.
    return web.json_response(found, headers={"Cache-Control": "private, max-age=60"})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        async with asyncio.timeout(BODY_SECONDS):
            raw = await request.read()  # over MAX_BODY: aiohttp raises 413
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {BODY_SECONDS} s") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply to be a playback request") from None
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
    session = await request.app[PLAYBACK].open(
        check_camera_id(body["camera_id"], "`camera_id`"),
        parse_rfc3339(body["from"], "from"),
        parse_rfc3339(body["to"], "to"),
    )
    return web.json_response(
        session.public(), status=201, headers={"Location": f"/api/playback/{session.id}"}
    )


async def playlist_redirect(request: web.Request) -> web.Response:
    """A session from a URL alone: 303 See Other to its playlist."""
    camera = check_camera_id(request.match_info["camera_id"])
    params = _query(request, {"from", "to"})
    missing = sorted({"from", "to"} - set(params))
    if missing:
        raise BadRequest(f"missing query parameter `{missing[0]}`; expected from and to")
    session = await request.app[PLAYBACK].open(
        camera, parse_rfc3339(params["from"], "from"), parse_rfc3339(params["to"], "to")
    )
    raise web.HTTPSeeOther(session.playlist_url)


async def get_playback(request: web.Request) -> web.Response:
    session = await request.app[PLAYBACK].get(request.match_info["session_id"])
    return web.json_response(session.public())


async def delete_playback(request: web.Request) -> web.Response:
    await request.app[PLAYBACK].delete(request.match_info["session_id"])
    return web.Response(status=204)


async def media(request: web.Request) -> web.StreamResponse:
    """The playlist or a media segment of a session: only names the session lists."""
    served = await request.app[PLAYBACK].media_for(
        request.match_info["session_id"], request.match_info["name"]
    )
    response = await serve.send(request, served)
    if served.content_type != PLAYLIST_TYPE and request.method == "GET":  # a media segment
        metrics = request.app[METRICS]
        metrics.segments_served.inc()
        metrics.bytes_served.inc(int(response.headers.get("Content-Length", 0)))
    return response


async def clip(request: web.Request) -> web.StreamResponse:
    """The session's range as one progressive MP4 download, made from the recordings'
    own samples as it is read (export.py): Content-Length, byte ranges, a strong ETag."""
    playback = request.app[PLAYBACK]
    export = await playback.export(request.match_info["session_id"])
    headers = {
        "Content-Type": MP4_TYPE,
        "Content-Disposition": f'attachment; filename="{export.filename}"',
        "Cache-Control": "private, no-cache",
    }

    async def read(position: int, stop: int) -> list[bytes]:
        return await export.read(playback.exporter, position, stop)

    def broken(error: Exception) -> None:
        playback.exporter.forget(export.session.id)
        if isinstance(error, ClipBroken):
            log.warning("export of %s ended early: %s", export.session.id, error)
        else:
            log.error("export of %s failed", export.session.id, exc_info=error)

    clip = export.clip
    try:
        return await serve.send_made(request, headers, clip.etag, clip.total, read, broken)
    finally:
        await asyncio.to_thread(memory.give_back)  # what the reads kept for the next


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: the agent's counters and state."""
    app = request.app
    segments, cameras = app[INDEX].counts()
    store, limiter, indexing = app[SESSIONS], app[LIMITER], app[INDEXER].status
    snapshot = Snapshot(
        sessions_live=len(store.sessions),
        sessions_max=app[CONFIG].playback.max_sessions,
        sessions_created=store.counts["created"],
        sessions_expired=store.counts["expired"],
        sessions_deleted=store.counts["deleted"],
        ffmpeg_running=limiter.running,
        ffmpeg_by_kind={kind.value: asdict(c) for kind, c in limiter.by_kind.items()},
        index_segments=segments,
        index_cameras=cameras,
        index_pending=indexing.pending,
        last_scan_seconds=indexing.scan_seconds,
    )
    body = app[METRICS].render(snapshot)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def media_preflight(request: web.Request) -> web.Response:
    check_session_id(request.match_info["session_id"])
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


async def page(request: web.Request) -> web.Response:
    """The operator's page and its script and style, from the package."""
    asset = request.app[PAGE].get(request.path)
    if asset is None:
        raise web.HTTPNotFound()
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    if serve.none_match(request.headers.get("If-None-Match"), asset.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/", page)
    router.add_get("/page/{name}", page)
    router.add_get("/healthz", healthz)
    router.add_get("/api/openapi.json", openapi)
    router.add_get("/metrics", metrics)
    router.add_get("/api/cameras", cameras)
    router.add_get("/api/cameras/{camera_id}/recordings", recordings)
    router.add_get("/api/cameras/{camera_id}/playlist.m3u8", playlist_redirect)
    router.add_get("/api/cameras/{camera_id}/keyframe", keyframe)
    router.add_post("/api/playback", create_playback)
    router.add_get("/api/playback/{session_id}", get_playback)
    router.add_delete("/api/playback/{session_id}", delete_playback)
    router.add_get("/media/playback/{session_id}/clip.mp4", clip)
    router.add_get("/media/playback/{session_id}/{name}", media)
    router.add_route("OPTIONS", "/media/playback/{session_id}/{name}", media_preflight)
    app.on_response_prepare.append(add_cors)
