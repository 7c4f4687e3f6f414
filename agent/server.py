"""Serving the app on a socket, guarded against clients that hold connections open.

aiohttp times out neither request headers nor a connection that never completes one,
and 150 connections that each send half a request exhaust a 128-file limit. The guard
sits between the socket and aiohttp's protocol: it counts connections against a cap below
the process's file limit and a share of it per client address; at either limit it
evicts that client's connection that has waited longest for its headers (at the cap, a
client holding fewer than NEWCOMER_CONNECTIONS takes the busiest client's instead; one
holding that many or more recycles only its own, and is refused if they are all
answering); and it
closes any that has not completed its request headers within
HEADER_TIMEOUT_SECONDS. One client holding connections open hurts only itself.
A response the client stops reading (asyncio pauses writing to it) is evictable once it
has stalled EVICTABLE_STALL_SECONDS, and cut after WRITE_STALL_SECONDS: slow readers from
a few addresses cannot hold every connection against everyone else.

A request aiohttp cannot parse (a control character in a header, say) never reaches the
app's middleware; its answer is still the API's JSON error, not aiohttp's plain text.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .tasks import pause

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SECONDS = 10.0
# A response whose client has read nothing for this long (the socket's buffers full) is
# cut: a paused player reconnects with a Range when it plays on.
WRITE_STALL_SECONDS = 60.0
# A connection whose response has stalled this long may be closed to make room for a
# new client when the connections are all taken.
EVICTABLE_STALL_SECONDS = 2.0
# At the cap, a client holding fewer connections than this may take another's room.
NEWCOMER_CONNECTIONS = 4
KEEPALIVE_SECONDS = 75.0  # an idle keep-alive connection is closed after this
MAX_CONNECTIONS = 1024
LISTEN_QUEUE = 4096  # connections the kernel holds until accepted (net.core.somaxconn caps)
EVICTION_BURST = 16  # connections a client at its share may open at once, old ones closed
EVICTIONS_PER_SECOND = 100  # and how many a second after that
SWITCH_SECONDS = 0.001  # how long a thread holds the interpreter while others wait
_FILES_KEPT = 64  # descriptors left for recordings, sessions, SQLite and ffmpeg's pipes


def connection_cap(soft_file_limit: int) -> int:
    """How many connections may be open at once, given the process's file limit."""
    return max(8, min(MAX_CONNECTIONS, (soft_file_limit - _FILES_KEPT) // 2))


class ConnectionGuard:
    """Which connections are open and since when each has waited for request headers."""

    def __init__(self, cap: int | None = None) -> None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.cap = cap or connection_cap(soft if soft > 0 else 1024)
        self._waiting: dict[RequestHandler, float | None] = {}  # None: in a request
        self._stalled: dict[RequestHandler, float] = {}  # writing paused since
        self._peers: dict[str, set[RequestHandler]] = {}  # client address -> connections
        self._peer_of: dict[RequestHandler, str] = {}
        # No one client may hold more than a quarter of the connections.
        self.per_peer = max(4, self.cap // 4)
        # Client address at its share -> evictions it may still cause, and when counted.
        self._evictions: dict[str, tuple[float, float]] = {}
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self.write_timeouts = 0

    @property
    def open(self) -> int:
        return len(self._waiting)

    def admit(self, peer: str) -> bool:
        """Whether a new connection from `peer` may be served, room made for it if need be.
        A client at its share gets room among its own connections EVICTION_BURST times
        at once and EVICTIONS_PER_SECOND after that; beyond, its new connections are
        refused before any work is done on them, so a flood of connections costs little."""
        mine = self._peers.get(peer)
        if mine is not None and len(mine) >= self.per_peer:
            now = time.monotonic()
            tokens, since = self._evictions.get(peer, (EVICTION_BURST, now))
            tokens = min(EVICTION_BURST, tokens + (now - since) * EVICTIONS_PER_SECOND)
            admitted = tokens >= 1 and self._evict(list(mine))
            self._evictions[peer] = (tokens - admitted, now)
            if not admitted:
                self.refused += 1
                return False
        elif len(self._waiting) >= self.cap:
            if mine is not None and len(mine) >= NEWCOMER_CONNECTIONS:
                # A client that holds several makes room among its own: were it to take
                # others', clients that reconnect at once would evict each other for good.
                admitted = self._evict(list(mine))
            else:
                # A new client: room is made at the client that holds the most, else at
                # any client (an idle connection, one waiting for its headers, or a
                # response that has stalled).
                busiest = max(self._peers.values(), key=len)
                admitted = self._evict(list(busiest)) or self._evict(list(self._waiting))
            if not admitted:
                self.refused += 1
                return False
        return True

    def opened(self, handler: RequestHandler, peer: str) -> None:
        self._waiting[handler] = time.monotonic()
        self._peers.setdefault(peer, set()).add(handler)
        self._peer_of[handler] = peer

    def _evict(self, handlers: list[RequestHandler]) -> bool:
        """Close, among `handlers`, the idle keep-alive connection, else the one that has
        waited longest for its headers, else the response stalled longest (at least
        EVICTABLE_STALL_SECONDS); False if all are answering a request that flows."""
        stalled_before = time.monotonic() - EVICTABLE_STALL_SECONDS
        candidates = [(0 if self._waiting[h] == _IDLE else 1, self._waiting[h], id(h), h)
                      for h in handlers if self._waiting.get(h) is not None]  # fmt: skip
        candidates += [(2, self._stalled[h], id(h), h) for h in handlers
                       if self._waiting.get(h, 0) is None
                       and self._stalled.get(h, _IDLE) <= stalled_before]  # fmt: skip
        if not candidates:
            return False
        *_, oldest = min(candidates, key=lambda entry: entry[:3])
        self.evicted += 1
        self._close(oldest)
        return True

    def paused(self, handler: RequestHandler) -> None:
        """The client stopped reading: the socket's buffers are full."""
        self._stalled.setdefault(handler, time.monotonic())

    def resumed(self, handler: RequestHandler) -> None:
        self._stalled.pop(handler, None)

    def received(self, handler: RequestHandler) -> None:
        """Bytes arrived: on an idle keep-alive connection they start a header clock."""
        if self._waiting.get(handler) == _IDLE:
            self._waiting[handler] = time.monotonic()

    def closed(self, handler: RequestHandler) -> None:
        self._forget(handler)

    def _forget(self, handler: RequestHandler) -> None:
        self._waiting.pop(handler, None)
        self._stalled.pop(handler, None)
        peer = self._peer_of.pop(handler, None)
        handlers = self._peers.get(peer, set()) if peer is not None else set()
        handlers.discard(handler)
        if peer is not None and not handlers:
            self._peers.pop(peer, None)
            self._evictions.pop(peer, None)

    def request_started(self, handler: object) -> None:
        if handler in self._waiting:
            self._waiting[handler] = None  # type: ignore[index]

    def request_finished(self, handler: object) -> None:
        if handler in self._waiting:
            # Idle keep-alive from now on: aiohttp's keep-alive timeout closes it, and the
            # next request's first bytes start a header clock (received()).
            self._waiting[handler] = _IDLE  # type: ignore[index]

    def _close(self, handler: RequestHandler) -> None:
        stalled = handler in self._stalled
        self._forget(handler)
        transport = handler.transport  # force_close() closes it, and forgets it
        if transport is not None and (stalled or transport.get_write_buffer_size()):
            # close() would wait to flush what is left to a client that may read nothing,
            # holding the descriptor the guard no longer counts.
            transport.abort()
        handler.force_close()

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        """Close connections that have waited too long for their request headers, and
        responses that have stalled too long."""
        while not stop.is_set():
            if await pause(stop, 1.0):
                return
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """One pass of `sweep_forever` at time `now`."""
        deadline = now - HEADER_TIMEOUT_SECONDS
        late = [h for h, since in self._waiting.items() if since is not None and since < deadline]
        for handler in late:
            self.timed_out += 1
            self._close(handler)
        stalled = [h for h, since in self._stalled.items() if since < now - WRITE_STALL_SECONDS]
        for handler in stalled:
            self.write_timeouts += 1
            self._close(handler)

    def state(self) -> dict[str, int]:
        return {"open": self.open, "cap": self.cap, "per_client": self.per_peer,
                "evicted": self.evicted, "refused": self.refused,
                "header_timeouts": self.timed_out,
                "write_timeouts": self.write_timeouts}  # fmt: skip


_IDLE = float("inf")  # waiting for a next request that may never come: never "late"


def _peer(transport: asyncio.BaseTransport) -> str:
    address = transport.get_extra_info("peername")
    return str(address[0]) if address else "?"


class _JsonErrors(RequestHandler):
    """aiohttp's protocol, answering requests it cannot parse as the API does."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs; closes
        if status == 500:
            sentence = "internal error"
        else:
            first = (message or "").strip().splitlines()[:1]
            detail = first[0].rstrip(":").strip() if first else ""
            sentence = "the request is not valid HTTP" + (f": {detail}" if detail else "")
        response = web.json_response({"error": sentence}, status=plain.status)
        response.force_close()
        return response


class _Guarded:
    """The protocol the socket sees: aiohttp's own, made once the guard admits the
    connection, with the guard told what happens."""

    def __init__(self, guard: ConnectionGuard, handler: Callable[[], RequestHandler]) -> None:
        self._guard = guard
        self._make = handler
        self._handler: RequestHandler | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = _peer(transport)
        if not self._guard.admit(peer):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._handler = self._make()
        self._handler.connection_made(transport)
        self._guard.opened(self._handler, peer)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._guard.received(self._handler)
            self._handler.data_received(data)

    def eof_received(self) -> None:
        if self._handler is not None:
            self._handler.eof_received()

    def connection_lost(self, error: BaseException | None) -> None:
        if self._handler is not None:
            self._guard.closed(self._handler)
            self._handler.connection_lost(error)

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._guard.paused(self._handler)
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._guard.resumed(self._handler)
            self._handler.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections go through a ConnectionGuard."""

    def __init__(self, runner: web.AppRunner, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner was not set up")
        guard = self._guard
        loop = asyncio.get_running_loop()

        # As the runner's own handlers: no access log (None turns it off), our keep-alive.
        options: dict[str, Any] = {"access_log": None, "keepalive_timeout": KEEPALIVE_SECONDS}

        def handler() -> RequestHandler:
            return _JsonErrors(server, loop=loop, **options)

        def protocol() -> _Guarded:
            return _Guarded(guard, handler)

        self._server = await loop.create_server(
            protocol,  # type: ignore[arg-type]
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        # `backlog` is also how many connections asyncio accepts at once, so it stays
        # small; the kernel's queue of connections not yet accepted holds no descriptor
        # of ours and is made long, so that a flood of connections from one client does
        # not make the kernel drop another's (its SYN retried after a second).
        for listening in self._server.sockets:
            with listening.dup() as same:
                same.listen(LISTEN_QUEUE)


async def serve(app: web.Application, guard: ConnectionGuard, host: str, port: int) -> None:
    """Serve `app` until SIGTERM or SIGINT, then shut it down cleanly."""
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS, shutdown_timeout=5
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # asyncio accepts up to `backlog` connections at once before any is looked at:
        # keep that well inside the descriptors the cap leaves free.
        backlog = max(8, min(128, guard.cap // 4))
        await GuardedSite(runner, guard, host=host, port=port, backlog=backlog).start()
        log.info("server: listening on %s:%d, at most %d connections", host, port, guard.cap)
        # What start-up made (modules, the app, its caches) lives as long as the process:
        # kept out of the garbage collector's sight, a full collection takes a few ms
        # instead of about 50 ms that no request is answered.
        gc.collect()
        gc.freeze()
        # A thread busy in Python (a directory of 100,000 listed and compared, the index
        # read) gives the interpreter up every switch interval; a request takes it back
        # several times, each after up to that long: at 1 ms, not Python's 5 ms, /healthz
        # answers in such a scan in half the time (docs/performance.md, "Index at scale").
        sys.setswitchinterval(SWITCH_SECONDS)
        await stop.wait()
    finally:
        await runner.cleanup()
