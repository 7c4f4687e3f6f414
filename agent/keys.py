"""Typed application state: every key the app stores, in one place."""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .index import Index
from .indexer import Indexer

CONFIG = web.AppKey("config", Config)
INDEX = web.AppKey("index", Index)
INDEXER = web.AppKey("indexer", Indexer)
STARTED = web.AppKey("started", float)
