"""The operator's page: static files shipped in the package (HTML, CSS, plain JavaScript),
read once at start, with the box's settings written into the HTML."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .config import Config

WEB = Path(__file__).with_name("web")
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
# The page runs nothing but its own script and plays nothing but the agent's own media.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URLs carry session capabilities
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def settings(config: Config) -> dict[str, object]:
    """What the page needs to know of the box's configuration (pure)."""
    return {
        "timezone": config.recordings.timezone,
        "window_seconds": min(config.playback.window_seconds, config.playback.max_seconds),
        "token_required": bool(config.server.api_token),
    }


def _asset(body: bytes, suffix: str) -> Asset:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, _TYPES[suffix], etag)


def load(config: Config) -> dict[str, Asset]:
    """The page's files by URL path: "/" and "/page/<name>" (blocking: run in a thread)."""
    # JSON inside <script>: "<" escaped so that no value can close the element.
    data = json.dumps(settings(config)).replace("<", "\\u003c")
    html = (WEB / "index.html").read_text(encoding="utf-8").replace("{{settings}}", data)
    assets = {"/": _asset(html.encode(), ".html")}
    for path in sorted(WEB.iterdir()):
        if path.suffix in (".css", ".js"):
            assets[f"/page/{path.name}"] = _asset(path.read_bytes(), path.suffix)
    return assets
