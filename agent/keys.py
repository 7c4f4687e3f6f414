"""Typed application state: every key the app stores, in one place."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .admission import Limiter
from .config import Config
from .index import Index
from .indexer import Indexer
from .metrics import Metrics
from .page import Asset
from .playback import Playback
from .server import ConnectionGuard
from .sessions import SessionStore
from .tasks import Supervisor
from .vitals import Vitals

CONFIG = web.AppKey("config", Config)
INDEX = web.AppKey("index", Index)
INDEXER = web.AppKey("indexer", Indexer)
STARTED = web.AppKey("started", float)
LIMITER = web.AppKey("limiter", Limiter)
SESSIONS = web.AppKey("sessions", SessionStore)
PLAYBACK = web.AppKey("playback", Playback)
TASKS = web.AppKey("tasks", Supervisor)
GUARD = web.AppKey("guard", ConnectionGuard)
METRICS = web.AppKey("metrics", Metrics)
OPENAPI = web.AppKey("openapi", dict[str, Any])
PAGE = web.AppKey("page", dict[str, Asset])
VITALS = web.AppKey("vitals", Vitals)
