"""The application factory: it only wires configuration, resources, tasks and routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from . import routes
from .admission import Limiter
from .chains import ChainCache
from .config import Config
from .export import Exporter
from .index import Index
from .indexer import Indexer
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
from .media import MediaService, recording_path
from .metrics import Metrics
from .openapi import document
from .page import load as load_page
from .playback import Playback
from .samplestore import SampleStore
from .server import ConnectionGuard
from .sessions import SessionStore, StateLock
from .spanbook import SpanBook
from .stored import row_of
from .sweep import sweep_forever
from .tasks import Supervisor
from .vitals import STALL_SECONDS, Vitals


def create_app(
    config: Config,
    clock: Callable[[], float] = time.time,
    guard: ConnectionGuard | None = None,
) -> web.Application:
    """The agent's application; `clock` (wall-clock seconds) is the sessions' clock and
    `guard` watches the connections of the server that serves it (server.serve)."""
    app = web.Application(
        client_max_size=routes.MAX_BODY + 1,  # aiohttp refuses a body of this size or more
        middlewares=[
            routes.request_middleware,
            routes.error_middleware,
            routes.auth_middleware(config.server.api_token),
        ],
    )
    app[GUARD] = guard or ConnectionGuard()
    app[METRICS] = Metrics()
    routes.quiet_logs()
    app[CONFIG] = config
    app[STARTED] = time.monotonic()
    app[OPENAPI] = document()
    app.cleanup_ctx.append(_exclusive)
    app.cleanup_ctx.append(_page)
    app.cleanup_ctx.append(_tasks)
    app.cleanup_ctx.append(_index)
    app.cleanup_ctx.append(_indexer)
    app.cleanup_ctx.append(_vitals)
    app.cleanup_ctx.append(_admission)
    app.cleanup_ctx.append(_sessions(clock))
    routes.setup(app)
    return app


async def _exclusive(app: web.Application) -> AsyncIterator[None]:
    """One agent per state: a second one on the same playback.dir, or with its index in
    the same directory, stops before it touches anything (it would clean up the first
    one's work in progress, or drop its sessions' locks from the index)."""
    config = app[CONFIG]
    playback = await asyncio.to_thread(StateLock.take, config.playback.dir)
    index_dir = config.index.database.parent
    same = await asyncio.to_thread(
        lambda: os.path.realpath(index_dir) == os.path.realpath(config.playback.dir)
    )
    index = None
    try:
        if not same:
            index = await asyncio.to_thread(StateLock.take, index_dir, "index.database")
    except BaseException:
        await asyncio.to_thread(playback.release)
        raise
    yield
    for lock in (index, playback):
        if lock is not None:
            await asyncio.to_thread(lock.release)


async def _page(app: web.Application) -> AsyncIterator[None]:
    app[PAGE] = await asyncio.to_thread(load_page, app[CONFIG])
    yield


async def _tasks(app: web.Application) -> AsyncIterator[None]:
    supervisor = Supervisor()
    app[TASKS] = supervisor
    supervisor.start("connection-guard", app[GUARD].sweep_forever)
    yield
    await supervisor.stop()


async def _index(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    fingerprint = {
        "root": str(config.recordings.root),
        "layout": config.layout.template,
        "timezone": config.recordings.timezone,
        "segment_seconds": str(config.playback.segment_seconds),  # how long files are split
    }
    index = Index(config.index.database, fingerprint)
    await index.open()
    app[INDEX] = index
    yield
    await app[TASKS].stop()  # nothing may use the index once it is closed
    await index.close()


async def _indexer(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    indexer = Indexer(
        config.recordings.root, config.layout, app[INDEX], config.playback.segment_seconds
    )
    app[INDEXER] = indexer
    tasks = app[TASKS]
    tasks.start("index-scan", indexer.reconcile_forever)
    tasks.start("index-watch", indexer.watch)
    tasks.start("index-pending", indexer.settle_forever)
    tasks.start("index-poll", indexer.poll_forever)
    yield


async def _vitals(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    vitals = Vitals(config.recordings.root, config.ffmpeg.ffmpeg)
    app[VITALS] = vitals
    with contextlib.suppress(TimeoutError):  # a stalled disk does not hold up the start
        await asyncio.wait_for(vitals.look(), STALL_SECONDS)
    app[TASKS].start("vitals", vitals.look_forever)
    yield


async def _admission(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    limiter = Limiter(config.admission, config.playback.dir)
    app[LIMITER] = limiter
    config.playback.dir.mkdir(parents=True, exist_ok=True)
    await limiter.sample()
    app[TASKS].start("admission-sampler", limiter.sample_forever)
    yield


def _sessions(clock: Callable[[], float]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def sessions(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        store = SessionStore(
            config.playback.dir, config.playback.session_ttl_seconds, app[INDEX], clock
        )
        app[SESSIONS] = store
        # /healthz answers at once; requests that need a session wait for the loading.
        app[TASKS].start("sessions-load", lambda _: store.load())
        tables = SampleStore(config.index.database.parent / "samples.sqlite3")
        await asyncio.to_thread(tables.open)
        root = config.recordings.root
        exporter = Exporter(functools.partial(recording_path, root), tables, clock)
        app[INDEX].watch(exporter.told)
        app[TASKS].start("export-tables", lambda stop: exporter.prepare_forever(app[INDEX], stop))
        media = MediaService(config, store, exporter)
        chains = ChainCache(config, app[INDEX], prepare=row_of)
        app[TASKS].start("chains-warm", lambda _: chains.warm(app[INDEXER].scanned))
        book = SpanBook(app[INDEX], config.layout.name_resolution_us)
        app[TASKS].start("spans-warm", lambda _: book.warm(app[INDEXER].scanned))
        app[PLAYBACK] = Playback(
            config, app[INDEX], store, chains, media, app[LIMITER], app[INDEXER].status,
            exporter, book,
        )  # fmt: skip
        interval = config.playback.sweep_interval_seconds
        app[TASKS].start("sweep", lambda stop: sweep_forever(store, interval, stop))
        yield
        await app[TASKS].stop()
        await asyncio.to_thread(exporter.close)
        await asyncio.to_thread(tables.close)

    return sessions
