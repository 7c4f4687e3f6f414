"""Background tasks: a failing loop is logged, restarted with backoff and shown in /healthz."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.demo import Rendered, place
from agent.tasks import MAX_BACKOFF_SECONDS, Supervisor, next_backoff

from .conftest import T0, camera_counts, make_config, place_old, started, wait_for


def test_backoff_doubles_up_to_a_ceiling() -> None:
    assert next_backoff(1) == 2
    assert next_backoff(MAX_BACKOFF_SECONDS) == MAX_BACKOFF_SECONDS


async def test_a_failing_loop_is_restarted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    runs: list[int] = []
    healthy = asyncio.Event()

    async def flaky(stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        healthy.set()
        await stop.wait()

    supervisor.start("flaky", flaky)

    async def reported() -> bool:
        return "flaky" in supervisor.down

    await wait_for(reported, what="the failure to be reported")
    assert "disk I/O error" in supervisor.down["flaky"]
    await asyncio.wait_for(healthy.wait(), 10)
    assert supervisor.down == {}
    await supervisor.stop()
    assert len(runs) == 2
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged
    assert logged[0].exc_info is not None  # the traceback is kept


async def test_an_index_failure_degrades_healthz_until_it_recovers(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """A real SQLite error while indexing (here a trigger refuses inserts) is logged, the
    loop restarts, /healthz says degraded meanwhile, and indexing resumes by itself."""
    config = make_config(tmp_path)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    client = await started(start_agent, config)
    assert await camera_counts(client) == {"cam": 3}
    with sqlite3.connect(config.index.database) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON segments BEGIN"
            " SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    place(footage["ts"], config.recordings.root, config.layout, "late", T0)

    async def degraded() -> list[str] | None:
        body = await (await client.get("/healthz")).json()
        failed = [p for p in body["problems"] if "background task index-" in p]
        return failed if body["status"] == "degraded" and failed else None

    problems = await wait_for(degraded, timeout=20, what="/healthz to report the failure")
    assert "refused by the test" in problems[0]
    with sqlite3.connect(config.index.database) as db:
        db.execute("DROP TRIGGER refuse")

    async def recovered() -> bool:
        body = await (await client.get("/healthz")).json()
        restarted = not [p for p in body["problems"] if "background task" in p]
        return restarted and await camera_counts(client) == {"cam": 3, "late": 3}

    await wait_for(recovered, timeout=90, what="indexing to resume")
