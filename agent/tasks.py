"""Long-lived background tasks: each held, restarted with backoff when it fails (logged
with its traceback, never lost), reported in /healthz while it is down, and stopped at
shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
STOP_SECONDS = 5.0

Loop = Callable[[asyncio.Event], Awaitable[None]]
T = TypeVar("T")


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`, or until `stop` is set: whether it was (every loop's sleep)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def on_own_thread(call: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`call()` on a daemon thread of its own, its outcome in the future returned: one a
    stalled disk holds forever keeps neither a worker of the event loop's pool nor the
    agent from stopping (whoever waits for it may stop waiting)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not answer.done():
            outcome()

    def run() -> None:
        try:
            result = call()
        except BaseException as error:  # handed to whoever awaits the answer
            handed: Callable[[], None] = functools.partial(answer.set_exception, error)
        else:
            handed = functools.partial(answer.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, handed)

    threading.Thread(target=run, name=name, daemon=True).start()
    return answer


def next_backoff(current: float) -> float:
    """The wait before the next restart after one more failure (pure policy)."""
    return min(MAX_BACKOFF_SECONDS, current * 2)


class Supervisor:
    """Runs loops of the form `async def loop(stop)` until `stop` is set."""

    def __init__(self) -> None:
        self.down: dict[str, str] = {}  # task name -> why it is not running now
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, loop: Loop) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def _supervise(self, name: str, loop: Loop) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stop.is_set():
            try:
                await loop(self._stop)
                return
            except Exception as error:
                log.exception("%s failed; restarting it in %g s", name, backoff)
                self.down[name] = f"background task {name} failed ({error}); restarting"
            await pause(self._stop, backoff)
            backoff = next_backoff(backoff)
            self.down.pop(name, None)

    async def stop(self) -> None:
        """Ask every loop to stop; cancel those that have not within STOP_SECONDS."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
