"""The sweep: a background task that removes expired sessions (and their locks) and
stray directories, and writes the new expiry of sessions that are being watched."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

from .sessions import SessionStore
from .tasks import pause

log = logging.getLogger(__name__)


def is_stray(name: str, is_dir: bool, mtime: float, now: float, ttl: float, live: set[str]) -> bool:
    """Whether a playback directory entry is a leftover to remove (pure policy).

    A directory that is not a live session (no valid session.json) goes once it is older
    than the TTL; a live session, one being created, and anything that is not a
    directory are never strays.
    """
    if not is_dir or name in live:
        return False
    key = name.lstrip(".").split(".")[0]
    if key in live:
        return False  # being created
    return now - mtime > ttl


def _strays(directory: Path, ttl: float, live: set[str]) -> list[str]:
    now = time.time()
    found: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return found
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        if is_stray(entry.name, is_dir, mtime, now, ttl, live):
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.lexists(entry.path):  # a read-only disk keeps it, and its locks
                found.append(entry.name)
    return found


async def sweep_once(store: SessionStore) -> None:
    await store.ready()  # a session not loaded yet would look like a leftover
    await store.check_writable()  # remounted read-only, or writable again
    await store.persist_expiries()
    for session_id in await store.remove_expired():
        log.info("sweep: session %s expired and was removed", session_id)
    live = set(store.sessions) | store.creating
    ttl = store.ttl_us / 1e6
    for name in await asyncio.to_thread(_strays, store.directory, ttl, live):
        log.info("sweep: removed leftover %s", name)
        await store.release_stray(name)


async def sweep_forever(store: SessionStore, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if await pause(stop, interval):
            return
        try:
            await sweep_once(store)
        except Exception:
            log.exception("sweep: a pass failed; trying again next time")
