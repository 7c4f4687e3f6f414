"""HTTP routes: a table, thin handlers, and the middleware that renders every error."""

from __future__ import annotations

import hmac
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from . import __version__, timeline
from .errors import AgentError, BadRequest, NotFound, Unauthorized
from .keys import CONFIG, INDEX, INDEXER, STARTED
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
        keep = {k: v for k, v in error.headers.items() if k.lower() in ("allow", "retry-after")}
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


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/cameras", cameras)
    app.router.add_get("/api/cameras/{camera_id}/recordings", recordings)
