"""Admission control: how much ffmpeg work may run, from the CPU and disk headroom.

Every ffmpeg the agent runs takes a slot first: at most `max_builds` at once, none that
would leave less than `min_free_disk_mb` free on the playback filesystem. Work has a
kind, and the kinds are not equal:
- a VIEWER's build is a segment a player is waiting for: the CPU rule does not hold it
  back (it protects the recorder from new work, and cutting a stream that is being
  watched is worse), it goes first when a slot frees, and it may wait longer;
- READ_AHEAD (segments made before a player asks) starts only while system CPU is at
  most `max_cpu_percent` and no viewer is waiting.
An export runs no ffmpeg and takes no slot (export.py).
A request that cannot get a slot in time is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from .config import AdmissionConfig
from .errors import Busy, InsufficientStorage
from .tasks import pause

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.5
_MB = 1 << 20


# A player waiting for a segment may wait at least this long for a slot.
VIEWER_WAIT_SECONDS = 15


class Decision(enum.Enum):
    START = "start"
    WAIT = "wait"
    NO_DISK = "no-disk"


class Kind(enum.Enum):
    VIEWER = "viewer"  # a segment a player asked for
    READ_AHEAD = "read_ahead"  # a segment made before anyone asks


def decide(
    running: int,
    max_builds: int,
    cpu_percent: float,
    max_cpu_percent: int,
    free_bytes: int,
    min_free_bytes: int,
    need_bytes: int,
    kind: Kind,
    viewers_waiting: int = 0,
) -> Decision:
    """Whether a build of `kind` that will write `need_bytes` may start now (pure policy)."""
    if free_bytes - need_bytes < min_free_bytes:
        return Decision.NO_DISK
    if running >= max_builds:
        return Decision.WAIT
    if kind is not Kind.VIEWER and (cpu_percent > max_cpu_percent or viewers_waiting):
        return Decision.WAIT
    return Decision.START


def build_slots(configured: int) -> int:
    """`max_builds`, where 0 means one per CPU."""
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


@dataclass
class Counters:
    started: int = 0
    delayed: int = 0  # started after waiting for a slot or for CPU headroom
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
        self.by_kind = {kind: Counters() for kind in Kind}
        self._waiting_viewers = 0
        self.sample_error = ""  # why the last sample failed, if it did
        self.cpu_percent = 0.0
        self.free_bytes = 1 << 62
        self._changed = asyncio.Condition()
        psutil.cpu_percent(interval=None)  # sets the baseline the next reading counts from
        self._cpu_read_at = time.monotonic()

    async def sample_forever(self, stop: asyncio.Event) -> None:
        """Keep CPU and free-disk figures fresh without blocking the event loop."""
        while not stop.is_set():
            if await pause(stop, SAMPLE_SECONDS):
                return
            await self.sample()

    async def sample(self) -> None:
        # A CPU reading over less than a tenth of a second says nothing: keep the last one.
        fresh_cpu = time.monotonic() - self._cpu_read_at >= 0.1

        def read() -> tuple[float, int]:
            free = psutil.disk_usage(str(self.playback_dir)).free
            return (psutil.cpu_percent(interval=None) if fresh_cpu else self.cpu_percent), free

        try:
            self.cpu_percent, self.free_bytes = await asyncio.to_thread(read)
        except Exception as error:  # out of file descriptors, /proc unreadable, ...
            if not self.sample_error:
                log.warning("admission: cannot sample CPU and disk: %s", error)
            self.sample_error = str(error) or type(error).__name__
            return
        self.sample_error = ""
        if fresh_cpu:
            self._cpu_read_at = time.monotonic()
        async with self._changed:
            self._changed.notify_all()

    def _decide(self, need_bytes: int, kind: Kind) -> Decision:
        return decide(
            self.running,
            self.max_builds,
            self.cpu_percent,
            self.config.max_cpu_percent,
            self.free_bytes,
            self.config.min_free_disk_mb * _MB,
            need_bytes,
            kind,
            self._waiting_viewers,
        )

    def _count(self, kind: Kind, field: str) -> None:
        for counters in (self.counters, self.by_kind[kind]):
            setattr(counters, field, getattr(counters, field) + 1)

    async def check_disk(self, need_bytes: int, kind: Kind = Kind.VIEWER) -> None:
        """Raise InsufficientStorage if writing `need_bytes` would break the disk floor."""
        floor = self.config.min_free_disk_mb * _MB
        if self.free_bytes - need_bytes < floor:
            # The last sample may be a second old, from before space was freed: look
            # again before refusing, off the event loop (statvfs of a disk that stalls, an
            # SD card under a recorder's writes, can take seconds).
            with contextlib.suppress(OSError):
                usage = await asyncio.to_thread(psutil.disk_usage, str(self.playback_dir))
                self.free_bytes = usage.free
        if self.free_bytes - need_bytes < floor:
            self._count(kind, "rejected_disk")
            raise InsufficientStorage(
                "not enough free disk space on the playback filesystem for this request"
            )

    def wait_seconds(self, kind: Kind) -> float:
        """How long work of `kind` may wait for a slot before it is refused."""
        queue = self.config.queue_timeout_seconds
        return max(queue, VIEWER_WAIT_SECONDS) if kind is Kind.VIEWER else queue

    @contextlib.asynccontextmanager
    async def slot(
        self, need_bytes: int, kind: Kind = Kind.VIEWER, wait: bool = True
    ) -> AsyncIterator[None]:
        """Hold a build slot for the body; raise Busy or InsufficientStorage instead."""
        deadline = time.monotonic() + (self.wait_seconds(kind) if wait else 0)
        viewer = kind is Kind.VIEWER
        self.waiting += 1
        self._waiting_viewers += viewer
        waited = False
        try:
            async with self._changed:
                while True:
                    decision = self._decide(need_bytes, kind)
                    if decision is Decision.NO_DISK:
                        await self.check_disk(need_bytes, kind)
                    if decision is Decision.START:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._count(kind, "rejected_busy")
                        raise Busy(
                            "the agent is busy preparing other footage; try again shortly",
                            retry_after=max(1, self.config.queue_timeout_seconds),
                        )
                    waited = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
                self.running += 1
                self._count(kind, "started")
                if waited:
                    self._count(kind, "delayed")
                # Disk fills as builds write: count this one against the free space now.
                self.free_bytes -= need_bytes
        finally:
            self.waiting -= 1
            self._waiting_viewers -= viewer
            if viewer:  # work held back for this viewer may go now
                async with self._changed:
                    self._changed.notify_all()
        try:
            yield
        finally:
            self.running -= 1
            async with self._changed:
                self._changed.notify_all()

    def problems(self) -> list[str]:
        """What keeps new work from starting, in sentences for /healthz."""
        found = []
        floor = self.config.min_free_disk_mb
        if self.free_bytes < floor * _MB:
            found.append(
                f"disk: {self.free_bytes // _MB} MB free on {self.playback_dir},"
                f" under admission.min_free_disk_mb ({floor}): new sessions get 507"
            )
        if self.sample_error:
            found.append(f"admission could not sample CPU and disk: {self.sample_error}")
        return found

    def state(self) -> dict[str, object]:
        return {
            "max_builds": self.max_builds,
            "running": self.running,
            "waiting": self.waiting,
            "started": self.counters.started,
            "delayed": self.counters.delayed,
            "rejected_busy": self.counters.rejected_busy,
            "rejected_disk": self.counters.rejected_disk,
            "by_kind": {kind.value: asdict(self.by_kind[kind]) for kind in Kind},
            "cpu_percent": round(self.cpu_percent, 1),
            "free_disk_mb": self.free_bytes // _MB,
        }
