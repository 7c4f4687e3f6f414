"""The application factory: it only wires configuration, resources, tasks and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from . import routes
from .config import Config
from .index import Index
from .indexer import Indexer
from .keys import CONFIG, INDEX, INDEXER, STARTED

log = logging.getLogger(__name__)

_TASK_STOP_SECONDS = 5.0


def create_app(config: Config) -> web.Application:
    app = web.Application(
        client_max_size=routes.MAX_BODY,
        middlewares=[routes.error_middleware, routes.auth_middleware(config.server.api_token)],
    )
    app[CONFIG] = config
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_index)
    app.cleanup_ctx.append(_indexer)
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
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), _TASK_STOP_SECONDS)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception:
        log.exception("indexer failed")
