"""The one place that runs ffmpeg: a consumer that stops early leaves no process, no
pipe and no waiting behind, whatever is left unread."""

from __future__ import annotations

import asyncio

import psutil

from agent import ffmpeg


async def test_a_stream_whose_consumer_stops_is_stopped_and_reaped() -> None:
    """A producer far ahead of its consumer (a cancelled download: the pipe and asyncio's
    buffer full, reading paused): closing the stream stops it, reads what is left and
    reaps it, so that whatever holds a slot for it is let go."""
    chunks = ffmpeg.stream(["sh", "-c", "exec yes 0123456789abcdef"], 60, chunk=4096)
    first = await anext(chunks)
    assert first
    children = [c for c in psutil.Process().children() if c.name() == "yes"]
    assert len(children) == 1
    async with asyncio.timeout(10):  # until it has filled the pipe and the reader's buffer
        while children[0].status() not in (psutil.STATUS_SLEEPING, psutil.STATUS_DISK_SLEEP):
            await asyncio.sleep(0.05)
    await asyncio.wait_for(chunks.aclose(), 10)  # type: ignore[attr-defined]
    assert not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE
    assert children[0] not in psutil.Process().children()  # reaped
