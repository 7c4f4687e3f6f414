"""The OpenAPI 3.1 description of the HTTP API, served at /api/openapi.json.

A test checks it against the registered routes and every status the tests see.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .ids import CAMERA_ID_PATTERN, SESSION_ID_PATTERN

_TIME = {"type": "string", "format": "date-time", "examples": ["2026-11-20T08:00:00Z"]}
_SESSION_ID = {"type": "string", "pattern": f"^{SESSION_ID_PATTERN}$"}
_CAMERA_ID = {"type": "string", "pattern": f"^{CAMERA_ID_PATTERN}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": "Bad input: malformed JSON, a missing or extra field, a time without an offset,"
    " `to` not after `from`, a range over `playback.max_seconds`, a malformed id; on any"
    " route, a request that is not valid HTTP (a control character in a header, say)",
    "401": "`server.api_token` is set and the bearer token is missing or wrong",
    "404": "Unknown camera, unknown or expired session, no footage in the range, or a"
    " recording replaced or cut short since the session was made",
    "408": "The request body did not arrive within 10 s",
    "413": "Request body over 64 KiB",
    "500": "Unexpected failure (logged by the agent)",
    "503": "No build slot within `admission.queue_timeout_seconds`, `playback.max_sessions`"
    " live sessions, the first scan still running, or (on any route) every file descriptor"
    " in use for a moment; see Retry-After",
    "507": "The build would leave less than `admission.min_free_disk_mb` free, or a disk"
    " the agent writes to (playback or index) is full; nothing was changed",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _json(_ref("Error"), _ERRORS[code]) for code in codes}


def _op(summary: str, ok: dict[str, Any], errors: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    # Any request may be malformed HTTP, or come when every descriptor is in use.
    codes = sorted({*errors, "400", "500", "503"})
    return {"summary": summary, "responses": {**ok, **_errors(*codes)}, **extra}


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def document() -> dict[str, Any]:
    session = _json(_ref("Session"), "The playback session")
    media_path = [
        _path_param("session_id", _SESSION_ID),
        _path_param(
            "name", {"type": "string", "examples": ["index.m3u8", "s000000.ts", "s000000.m4s"]}
        ),
    ]
    media_ok = {
        "200": {
            "description": "The HLS playlist (application/vnd.apple.mpegurl, gzip when"
            " accepted) or a media segment (video/mp2t; fragmented MP4: video/mp4 for an init"
            " section, video/iso.segment for media)",
            "content": {
                "application/vnd.apple.mpegurl": {},
                "video/mp2t": {},
                "video/mp4": {},
                "video/iso.segment": {},
            },
        },
        "206": {"description": "Part of a media segment (Range request)"},
        "304": {"description": "Not modified"},
        "416": {"description": "Range not satisfiable"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nvr-playback-agent",
            "version": __version__,
            "description": "Recorded NVR footage as HLS playback sessions. Times are RFC 3339"
            " with an offset; answers are in UTC. /media URLs are capability URLs: they need"
            " no token.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                    "additionalProperties": False,
                },
                "Camera": {
                    "type": "object",
                    "required": [
                        "id",
                        "segment_count",
                        "first_start",
                        "last_end",
                        "segment_seconds",
                    ],
                    "properties": {
                        "id": _CAMERA_ID,
                        "segment_count": {"type": "integer"},
                        "first_start": _TIME,
                        "last_end": _TIME,
                        "segment_seconds": {"type": "number"},
                    },
                },
                "Span": {
                    "type": "object",
                    "required": ["from", "to", "segment_count"],
                    "properties": {
                        "from": _TIME,
                        "to": _TIME,
                        "segment_count": {"type": "integer"},
                    },
                },
                "PlaybackRequest": {
                    "type": "object",
                    "required": ["camera_id", "from", "to"],
                    "properties": {"camera_id": _CAMERA_ID, "from": _TIME, "to": _TIME},
                    "additionalProperties": False,
                },
                "Session": {
                    "type": "object",
                    "required": [
                        "id",
                        "camera_id",
                        "playlist_url",
                        "multivariant_url",
                        "from",
                        "to",
                        "duration_s",
                        "segment_count",
                        "expires_at",
                    ],
                    "properties": {
                        "id": _SESSION_ID,
                        "camera_id": _CAMERA_ID,
                        "playlist_url": {
                            "type": "string",
                            "examples": ["/media/playback/pbs_0123/index.m3u8"],
                        },
                        "multivariant_url": {
                            "type": "string",
                            "description": "The media playlist and its I-frame playlist,"
                            " iframes.m3u8, for fast scrubbing (RFC 8216 4.3.4.3)",
                            "examples": ["/media/playback/pbs_0123/multivariant.m3u8"],
                        },
                        "from": _TIME,
                        "to": _TIME,
                        "duration_s": {"type": "number"},
                        "segment_count": {"type": "integer"},
                        "expires_at": _TIME,
                    },
                },
            },
        },
        "paths": {
            "/": {
                "get": _op(
                    "The operator's page: cameras, a day's timeline, the player with its wall"
                    " clock, export; deep link /#camera=<id>&t=<RFC 3339>",
                    {
                        "200": {"description": "The page", "content": {"text/html": {}}},
                        "304": {"description": "Not modified"},
                    },
                    (),
                )
            },
            "/page/{name}": {
                "parameters": [
                    _path_param("name", {"type": "string", "examples": ["page.js", "page.css"]})
                ],
                "get": _op(
                    "The page's script and style",
                    {
                        "200": {
                            "description": "The file",
                            "content": {"text/javascript": {}, "text/css": {}},
                        },
                        "304": {"description": "Not modified"},
                    },
                    ("404",),
                ),
            },
            "/healthz": {
                "get": _op(
                    "Health, version, index and admission state",
                    {"200": _json({"type": "object"}, "Health")},
                    (),
                )
            },
            "/api/openapi.json": {
                "get": _op("This description", {"200": _json({"type": "object"}, "OpenAPI")}, ())
            },
            "/metrics": {
                "get": _op(
                    "Prometheus metrics (text format): sessions, ffmpeg runs by kind,"
                    " media served, requests by route and status, request latency, index",
                    {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                    ("401",),
                    security=[{"bearer": []}, {}],
                )
            },
            "/api/cameras": {
                "get": _op(
                    "Cameras with recordings",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["cameras"],
                                "properties": {
                                    "cameras": {"type": "array", "items": _ref("Camera")}
                                },
                            },
                            "Cameras",
                        )
                    },
                    ("400", "401"),
                    security=[{"bearer": []}, {}],
                )
            },
            "/api/cameras/{camera_id}/playlist.m3u8": {
                "get": _op(
                    "Create a playback session and go to its playlist: a URL that VLC,"
                    " players and scripts open directly",
                    {
                        "303": {
                            "description": "The session was created; Location is its playlist",
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        }
                    },
                    ("400", "401", "404", "408", "503", "507"),
                    parameters=[
                        _path_param("camera_id", _CAMERA_ID),
                        {"name": "from", "in": "query", "required": True, "schema": _TIME},
                        {"name": "to", "in": "query", "required": True, "schema": _TIME},
                    ],
                    security=[{"bearer": []}, {}],
                )
            },
            "/api/cameras/{camera_id}/recordings": {
                "get": _op(
                    "Contiguous recorded spans of a camera, cut to [from, to]: at most 31"
                    " days and two hours, any calendar month (400 beyond); from `from` on, or"
                    " up to `to`, 31 days if only one is given; without either, the 31 days"
                    " up to the end of the camera's latest recording",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["camera_id", "spans"],
                                "properties": {
                                    "camera_id": _CAMERA_ID,
                                    "spans": {"type": "array", "items": _ref("Span")},
                                },
                            },
                            "Spans",
                        )
                    },
                    ("400", "401", "404"),
                    parameters=[
                        _path_param("camera_id", _CAMERA_ID),
                        {"name": "from", "in": "query", "schema": _TIME},
                        {"name": "to", "in": "query", "schema": _TIME},
                    ],
                    security=[{"bearer": []}, {}],
                )
            },
            "/api/cameras/{camera_id}/keyframe": {
                "get": _op(
                    "The keyframe of the camera's recording at `t` shown at or before it, for a"
                    " scrub preview: an MP4 sample (H.264 or H.265) and its decoder"
                    " configuration, base64, as a browser's VideoDecoder (WebCodecs) takes them",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": [
                                    "camera_id",
                                    "time",
                                    "codec",
                                    "width",
                                    "height",
                                    "description",
                                    "data",
                                ],  # fmt: skip
                                "properties": {
                                    "camera_id": _CAMERA_ID,
                                    "time": _TIME,
                                    "codec": {"type": "string", "examples": ["avc1.64001f"]},
                                    "width": {"type": "integer"},
                                    "height": {"type": "integer"},
                                    "description": {
                                        "type": "string",
                                        "description": "avcC or hvcC record, base64",
                                    },
                                    "data": {
                                        "type": "string",
                                        "description": "the sample: NAL units after 4-byte"
                                        " lengths, base64",
                                    },
                                },
                            },
                            "Keyframe",
                        )
                    },
                    ("400", "401", "404"),
                    parameters=[
                        _path_param("camera_id", _CAMERA_ID),
                        {"name": "t", "in": "query", "required": True, "schema": _TIME},
                    ],
                    security=[{"bearer": []}, {}],
                )
            },
            "/api/playback": {
                "post": _op(
                    "Create a playback session; its playlist plays as soon as this answers",
                    {"201": session},
                    ("400", "401", "404", "408", "413", "503", "507"),
                    requestBody={
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PlaybackRequest")}},
                    },
                    security=[{"bearer": []}, {}],
                )
            },
            "/api/playback/{session_id}": {
                "parameters": [_path_param("session_id", _SESSION_ID)],
                "get": _op(
                    "A session",
                    {"200": session},
                    ("400", "401", "404"),
                    security=[{"bearer": []}, {}],
                ),
                "delete": _op(
                    "End a session and release its footage",
                    {"204": {"description": "Deleted"}},
                    ("400", "401", "404", "507"),
                    security=[{"bearer": []}, {}],
                ),
            },
            "/media/playback/{session_id}/clip.mp4": {
                "parameters": [_path_param("session_id", _SESSION_ID)],
                "get": _op(
                    "The session's range as one progressive MP4 download (moov first,"
                    " made from the recordings' own samples with no ffmpeg; Content-Length,"
                    " a strong ETag, Range and If-Range; Content-Disposition: attachment)."
                    " A recording that changes or goes while it is read cuts the download.",
                    {
                        "200": {"description": "The clip", "content": {"video/mp4": {}}},
                        "206": {"description": "Part of the clip (Range request)"},
                        "304": {"description": "Not modified (If-None-Match)"},
                        "416": {"description": "The range starts past the clip's end"},
                    },
                    ("400", "404", "503"),
                ),
            },
            "/media/playback/{session_id}/{name}": {
                "parameters": media_path,
                "get": _op(
                    "The session's playlist (index.m3u8), its multivariant playlist"
                    " (multivariant.m3u8), its I-frame playlist (iframes.m3u8), or one of its"
                    " media segments or keyframes; HEAD and Range are supported",
                    media_ok,
                    ("400", "404", "503", "507"),
                ),
                "options": _op(
                    "CORS preflight",
                    {"204": {"description": "Allowed: GET, HEAD, OPTIONS with Range"}},
                    ("400",),
                ),
            },
        },
    }
