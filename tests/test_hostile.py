"""Hostile and broken input, as an attacker on the LAN or a misbehaving recorder would send
it: each answered with a clear error or ignored with one log line, nothing changed, the
agent up."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.demo import Rendered

from .conftest import (
    T0,
    S,
    at,
    camera_counts,
    make_config,
    place_old,
    post,
    scan_complete,
    start_with,
    started,
    wait_for,
)


async def test_a_body_of_exactly_64_kib_is_read(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    head = json.dumps({"camera_id": "cam", "from": at(0), "to": at(4)})[:-1]
    body = (head + ', "pad": "').encode()
    body += b"x" * (64 * 1024 - len(body) - 2) + b'"}'
    assert len(body) == 64 * 1024
    response = await client.post("/api/playback", data=body)
    assert response.status == 400  # read, then refused for its unknown field
    assert "unknown field `pad`" in (await response.json())["error"]
    response = await client.post("/api/playback", data=body + b" ")
    assert response.status == 413


async def test_json_nested_a_thousand_deep_is_400(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    response = await client.post("/api/playback", data="[" * 1000 + "]" * 1000)
    assert response.status == 400
    response = await client.post("/api/playback", data='{"a":' * 50_000 + "1" + "}" * 50_000)
    assert response.status in (400, 413)
    assert list(await response.json()) == ["error"]


async def test_names_outside_sane_years_are_not_indexed(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    hostile = config.recordings.root / "hcam" / "9999-12-31" / "23-59-55.ts"
    hostile.parent.mkdir(parents=True)
    shutil.copyfile(footage["ts"][0].path, hostile)
    client = await started(start_agent, config)
    response = await client.get("/api/cameras")
    assert response.status == 200
    assert await camera_counts(client) == {"cam": 3}
    said = [r for r in caplog.records if "outside 1970-2200" in r.getMessage()]
    assert len(said) == 1


async def test_a_date_folder_swapped_for_a_symlink_is_not_served(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(5)})
    day = tmp_path / "recordings" / "cam" / "2026-11-20"
    elsewhere = tmp_path / "elsewhere"
    shutil.move(day, elsewhere)
    day.symlink_to(elsewhere, target_is_directory=True)
    media = session["playlist_url"].replace("index.m3u8", "s000001.ts")
    response = await client.get(media)
    assert response.status == 404
    assert list(await response.json()) == ["error"]


async def test_a_post_during_the_first_scan_is_503_never_a_short_session(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """A large archive takes a while to scan: until it is done, sessions are refused with
    Retry-After rather than planned from half an index."""
    config = make_config(tmp_path)
    for hour in range(40):  # 40 copies of the run: 120 segments, a few hundred ms to scan
        place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0 + hour * 6 * S)
    client = await start_agent(config)
    body = {"camera_id": "cam", "from": at(0), "to": at(240)}
    first = await client.post("/api/playback", json=body)
    answers = [(first.status, first.headers.get("Retry-After"), await first.json())]
    await wait_for(lambda: scan_complete(client), what="the first scan")
    status, session = await post(client, body)
    assert status == 201
    assert session["segment_count"] == 120
    for status, retry, answer in answers:
        if status == 503:
            assert retry is not None
            assert "indexing" in answer["error"]
        else:
            assert status == 201
            assert answer["segment_count"] == 120


async def test_malformed_requests_are_one_warning_line(
    tmp_path: Path, start_agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_agent(make_config(tmp_path))
    for request in (
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == b"400"
    assert (await client.get("/healthz")).status == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    warned = [
        r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno == logging.WARNING
    ]
    assert len(warned) == 2
    assert all(record.exc_info is None for record in warned)
    assert "Content-Length" in warned[0].getMessage()


async def test_healthz_says_degraded_when_the_disk_is_under_the_floor(
    tmp_path: Path, start_agent: Any
) -> None:
    client = await start_agent(make_config(tmp_path, admission={"min_free_disk_mb": 1 << 30}))
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "degraded"
    assert any(problem.startswith("disk:") for problem in body["problems"])
