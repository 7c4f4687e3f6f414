"""Admission control: how much ffmpeg work may run, from the CPU and disk headroom.

Every ffmpeg the agent runs takes a slot first: at most `max_builds` at once, none
started while system CPU use is above `max_cpu_percent`, none that would leave less than
`min_free_disk_mb` free on the playback filesystem. A request that cannot get a slot
within `queue_timeout_seconds` is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from .config import AdmissionConfig
from .errors import Busy, InsufficientStorage

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.5
_MB = 1 << 20


class Decision(enum.Enum):
    START = "start"
    WAIT = "wait"
    NO_DISK = "no-disk"


def decide(
    running: int,
    max_builds: int,
    cpu_percent: float,
    max_cpu_percent: int,
    free_bytes: int,
    min_free_bytes: int,
    need_bytes: int,
) -> Decision:
    """Whether a build that will write `need_bytes` may start now (pure policy)."""
    if free_bytes - need_bytes < min_free_bytes:
        return Decision.NO_DISK
    if running >= max_builds or cpu_percent > max_cpu_percent:
        return Decision.WAIT
    return Decision.START


def build_slots(configured: int) -> int:
    """`max_builds`, where 0 means one per CPU."""
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


@dataclass
class Counters:
    started: int = 0
    rejected_busy: int = 0
    rejected_disk: int = 0


class Limiter:
    """The one gate in front of every ffmpeg run."""

    def __init__(self, config: AdmissionConfig, playback_dir: Path) -> None:
        self.config = config
        self.playback_dir = playback_dir
        self.max_builds = build_slots(config.max_builds)
        self.running = 0
        self.waiting = 0
        self.counters = Counters()
        self.cpu_percent = 0.0
        self.free_bytes = 1 << 62
        self._changed = asyncio.Condition()
        psutil.cpu_percent(interval=None)  # sets the baseline the next reading counts from
        self._cpu_read_at = time.monotonic()

    async def sample_forever(self, stop: asyncio.Event) -> None:
        """Keep CPU and free-disk figures fresh without blocking the event loop."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
            await self.sample()

    async def sample(self) -> None:
        # A CPU reading over less than a tenth of a second says nothing: keep the last one.
        fresh_cpu = time.monotonic() - self._cpu_read_at >= 0.1

        def read() -> tuple[float, int]:
            try:
                free = psutil.disk_usage(str(self.playback_dir)).free
            except OSError:
                free = self.free_bytes
            return (psutil.cpu_percent(interval=None) if fresh_cpu else self.cpu_percent), free

        self.cpu_percent, self.free_bytes = await asyncio.to_thread(read)
        if fresh_cpu:
            self._cpu_read_at = time.monotonic()
        async with self._changed:
            self._changed.notify_all()

    def _decide(self, need_bytes: int) -> Decision:
        return decide(
            self.running,
            self.max_builds,
            self.cpu_percent,
            self.config.max_cpu_percent,
            self.free_bytes,
            self.config.min_free_disk_mb * _MB,
            need_bytes,
        )

    def check_disk(self, need_bytes: int) -> None:
        """Raise InsufficientStorage if writing `need_bytes` would break the disk floor."""
        if self.free_bytes - need_bytes < self.config.min_free_disk_mb * _MB:
            self.counters.rejected_disk += 1
            raise InsufficientStorage(
                "not enough free disk space on the playback filesystem for this request"
            )

    @contextlib.asynccontextmanager
    async def slot(self, need_bytes: int, wait: bool = True) -> AsyncIterator[None]:
        """Hold a build slot for the body; raise Busy or InsufficientStorage instead."""
        deadline = time.monotonic() + (self.config.queue_timeout_seconds if wait else 0)
        self.waiting += 1
        try:
            async with self._changed:
                while True:
                    decision = self._decide(need_bytes)
                    if decision is Decision.NO_DISK:
                        self.check_disk(need_bytes)
                    if decision is Decision.START:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.counters.rejected_busy += 1
                        raise Busy(
                            "the agent is busy preparing other footage; try again shortly",
                            retry_after=max(1, self.config.queue_timeout_seconds),
                        )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
                self.running += 1
                self.counters.started += 1
                # Disk fills as builds write: count this one against the free space now.
                self.free_bytes -= need_bytes
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.running -= 1
            async with self._changed:
                self._changed.notify_all()

    def state(self) -> dict[str, object]:
        return {
            "max_builds": self.max_builds,
            "running": self.running,
            "waiting": self.waiting,
            "started": self.counters.started,
            "rejected_busy": self.counters.rejected_busy,
            "rejected_disk": self.counters.rejected_disk,
            "cpu_percent": round(self.cpu_percent, 1),
            "free_disk_mb": self.free_bytes // _MB,
        }
