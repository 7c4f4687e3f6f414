"""The application factory: it only wires configuration, resources, tasks and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from . import routes
from .admission import Limiter
from .config import Config
from .index import Index
from .indexer import Indexer
from .keys import CONFIG, INDEX, INDEXER, LIMITER, MEDIA, OPENAPI, SESSIONS, STARTED
from .media import MediaService
from .openapi import document
from .sessions import SessionStore
from .sweep import sweep_forever

log = logging.getLogger(__name__)

_TASK_STOP_SECONDS = 5.0


def create_app(config: Config) -> web.Application:
    app = web.Application(
        client_max_size=routes.MAX_BODY,
        middlewares=[routes.error_middleware, routes.auth_middleware(config.server.api_token)],
    )
    app[CONFIG] = config
    app[STARTED] = time.monotonic()
    app[OPENAPI] = document()
    app.cleanup_ctx.append(_index)
    app.cleanup_ctx.append(_indexer)
    app.cleanup_ctx.append(_admission)
    app.cleanup_ctx.append(_sessions)
    routes.setup(app)
    return app


async def _index(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    fingerprint = {
        "root": str(config.recordings.root),
        "layout": config.layout.template,
        "timezone": config.recordings.timezone,
    }
    index = Index(config.index.database, fingerprint)
    await index.open()
    app[INDEX] = index
    yield
    await index.close()


async def _indexer(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    indexer = Indexer(config.recordings.root, config.layout, app[INDEX])
    app[INDEXER] = indexer
    stop = asyncio.Event()
    task = asyncio.create_task(indexer.run(stop), name="indexer")
    yield
    await _stop(task, stop)


async def _admission(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    limiter = Limiter(config.admission, config.playback.dir)
    app[LIMITER] = limiter
    config.playback.dir.mkdir(parents=True, exist_ok=True)
    await limiter.sample()
    stop = asyncio.Event()
    task = asyncio.create_task(limiter.sample_forever(stop), name="admission-sampler")
    yield
    await _stop(task, stop)


async def _sessions(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = SessionStore(config.playback.dir, config.playback.session_ttl_seconds, app[INDEX])
    await store.load()
    app[SESSIONS] = store
    media = MediaService(config, store, app[LIMITER])
    app[MEDIA] = media
    stop = asyncio.Event()
    interval = config.playback.sweep_interval_seconds
    task = asyncio.create_task(sweep_forever(store, interval, stop), name="sweep")
    yield
    await _stop(task, stop)
    await media.close()


async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Ask a background task to stop; cancel it if it does not within a few seconds."""
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), _TASK_STOP_SECONDS)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception:
        log.exception("background task %s failed", task.get_name())
