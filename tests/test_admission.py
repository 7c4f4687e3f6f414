"""The admission policy and limiter, on plain data and a real event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.admission import Decision, Kind, Limiter, build_slots, decide
from agent.config import AdmissionConfig
from agent.errors import Busy, InsufficientStorage

MB = 1 << 20


@pytest.mark.parametrize(
    ("running", "cpu", "free_mb", "need_mb", "expected"),
    [
        (0, 10.0, 1000, 10, Decision.START),
        (2, 10.0, 1000, 10, Decision.WAIT),  # all slots taken
        (0, 95.0, 1000, 10, Decision.WAIT),  # CPU over the limit
        (0, 10.0, 515, 10, Decision.NO_DISK),  # would leave less than 512 MB
        (2, 95.0, 100, 10, Decision.NO_DISK),
    ],
)
def test_decide(running: int, cpu: float, free_mb: int, need_mb: int, expected: Decision) -> None:
    found = decide(running, 2, cpu, 90, free_mb * MB, 512 * MB, need_mb * MB, Kind.READ_AHEAD)
    assert found is expected


def test_viewers_pass_the_cpu_rule_and_go_first() -> None:
    busy_cpu = (0, 2, 95.0, 90, 1000 * MB, 512 * MB, 10 * MB)
    assert decide(*busy_cpu, Kind.VIEWER) is Decision.START
    assert decide(*busy_cpu, Kind.READ_AHEAD) is Decision.WAIT
    idle_cpu = (0, 2, 10.0, 90, 1000 * MB, 512 * MB, 10 * MB)
    assert decide(*idle_cpu, Kind.READ_AHEAD, viewers_waiting=1) is Decision.WAIT
    assert decide(*idle_cpu, Kind.READ_AHEAD) is Decision.START
    full = (2, 2, 10.0, 90, 1000 * MB, 512 * MB, 10 * MB)
    assert decide(*full, Kind.VIEWER) is Decision.WAIT  # slots still bound everyone
    no_disk = (0, 2, 10.0, 90, 515 * MB, 512 * MB, 10 * MB)
    assert decide(*no_disk, Kind.VIEWER) is Decision.NO_DISK


def test_build_slots_from_cpu_count() -> None:
    assert build_slots(3) == 3
    assert build_slots(0) >= 1


async def test_limiter_queues_then_rejects(tmp_path: Path) -> None:
    """One slot: the second job waits for the first, and a job that cannot get the slot
    within queue_timeout_seconds is refused with Retry-After. Each step waits on the
    state it needs, never on a margin of wall-clock time."""
    limiter = Limiter(AdmissionConfig(max_builds=1, queue_timeout_seconds=1), tmp_path)
    await limiter.sample()
    limiter.cpu_percent = 0.0
    order: list[str] = []

    async def job(name: str, holding: asyncio.Event, release: asyncio.Event) -> None:
        async with limiter.slot(0, Kind.READ_AHEAD):
            order.append(name)
            holding.set()
            await release.wait()

    a_holds, a_release = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(job("a", a_holds, a_release))
    await a_holds.wait()
    b_holds, b_release = asyncio.Event(), asyncio.Event()
    b = asyncio.create_task(job("b", b_holds, b_release))
    while limiter.waiting == 0:  # b waits for a's slot
        await asyncio.sleep(0)
    assert order == ["a"]
    a_release.set()
    await b_holds.wait()
    assert order == ["a", "b"]
    # b holds the slot until it is told: d cannot get it within its second.
    with pytest.raises(Busy) as caught:
        await job("d", asyncio.Event(), asyncio.Event())
    assert caught.value.retry_after >= 1
    b_release.set()
    await asyncio.gather(a, b)
    assert order == ["a", "b"]
    assert limiter.state()["rejected_busy"] == 1
    assert limiter.running == 0


async def test_limiter_refuses_what_would_fill_the_disk(tmp_path: Path) -> None:
    limiter = Limiter(AdmissionConfig(min_free_disk_mb=512), tmp_path)
    await limiter.sample()
    with pytest.raises(InsufficientStorage):
        async with limiter.slot(limiter.free_bytes):
            pass
    assert limiter.state()["rejected_disk"] == 1


async def test_the_disk_is_looked_at_again_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before refusing for want of disk, the limiter looks at the disk again: a statvfs
    that a stalled disk can hold for seconds, so never on the event loop's thread."""
    limiter = Limiter(AdmissionConfig(min_free_disk_mb=0), tmp_path)
    limiter.free_bytes = -1  # the last sample: under the floor
    threads: list[int] = []
    real = psutil.disk_usage

    def disk_usage(path: str) -> Any:
        threads.append(threading.get_ident())
        return real(path)

    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    await limiter.check_disk(0)  # room again: not refused
    assert threads
    assert threading.get_ident() not in threads


async def test_a_sample_that_fails_is_said_and_the_next_one_recovers(tmp_path: Path) -> None:
    """The sampler survives any error (here the playback directory is gone): /healthz's
    problems say it could not sample, with the last figures kept, until a sample works."""
    directory = tmp_path / "playback"
    directory.mkdir()
    limiter = Limiter(AdmissionConfig(min_free_disk_mb=0), directory)
    await limiter.sample()
    free = limiter.free_bytes
    assert free > 0
    assert limiter.problems() == []
    directory.rmdir()
    await limiter.sample()
    assert limiter.free_bytes == free
    assert [p for p in limiter.problems() if "could not sample" in p]
    directory.mkdir()
    await limiter.sample()
    assert limiter.problems() == []
