"""What /healthz says of the disks without waiting for them.

A stat of the recordings root (and a look for ffmpeg on the PATH) can take seconds when a
disk stalls: a USB disk resetting, a network share gone quiet. /healthz must answer at
once all the same, so these are looked at in the background, one look at a time, and a
look still unanswered after STALL_SECONDS is said as a stall.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .tasks import on_own_thread, pause

LOOK_SECONDS = 2.0
STALL_SECONDS = 1.0


def stall_problem(root: Path, asked_at: float | None, now: float) -> str | None:
    """The sentence for /healthz when a look at `root` begun at `asked_at` (monotonic,
    None when none is under way) has waited STALL_SECONDS or more (pure policy)."""
    if asked_at is None or now - asked_at < STALL_SECONDS:
        return None
    return (
        f"the recordings root {root} has not answered for {now - asked_at:.0f} s"
        " (its disk stalls): new recordings wait, sessions of them may too"
    )


class Vitals:
    """The recordings root's and ffmpeg's presence, as last looked at."""

    def __init__(
        self, root: Path, ffmpeg: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self.ffmpeg = ffmpeg
        self.clock = clock
        self.root_found: bool | None = None  # None: not answered yet
        self.ffmpeg_found = False
        self.asked_at: float | None = None  # when the look under way began

    async def look(self) -> None:
        """Look at both once (each on a thread of its own; returns when they answer)."""
        self.asked_at = self.clock()
        try:
            look = functools.partial(os.path.isdir, self.root)
            self.root_found = await on_own_thread(look, "vitals")
        finally:
            self.asked_at = None
        self.ffmpeg_found = await on_own_thread(functools.partial(_on_path, self.ffmpeg), "vitals")

    async def look_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.look()
            if await pause(stop, LOOK_SECONDS):
                return

    def stalled(self) -> str | None:
        """A sentence for /healthz if the look under way has waited too long."""
        return stall_problem(self.root, self.asked_at, self.clock())


def _on_path(command: str) -> bool:
    return shutil.which(command) is not None
