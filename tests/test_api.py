"""The HTTP contract of the foundation routes: shapes, spans and every error status."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.app import create_app
from agent.demo import Rendered
from agent.times import parse_rfc3339

from .conftest import at, camera_counts, make_config, place_old, start_with, wait_for

T0 = parse_rfc3339("2026-11-20T08:00:00Z", "t")
S = 1_000_000


@pytest.fixture
async def gap_client(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> TestClient[Any, Any]:
    """Camera `cam`: 6 s of footage at 08:00:00 (Paris time in the names), and again at
    08:00:20, so a gap from 08:00:06 to 08:00:20 UTC."""
    config = make_config(tmp_path, recordings={"timezone": "Europe/Paris"})
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0 + 20 * S)
    client: TestClient[Any, Any] = await start_agent(config)

    async def indexed() -> bool:
        return await camera_counts(client) == {"cam": 6}

    await wait_for(indexed, what="footage indexed")
    return client


async def spans(client: TestClient[Any, Any], query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/api/cameras/cam/recordings{query}")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["camera_id"] == "cam"
    return list(body["spans"])


async def test_spans_across_a_gap(gap_client: TestClient[Any, Any]) -> None:
    assert await spans(gap_client) == [
        {"from": "2026-11-20T08:00:00Z", "to": "2026-11-20T08:00:06Z", "segment_count": 3},
        {"from": "2026-11-20T08:00:20Z", "to": "2026-11-20T08:00:26Z", "segment_count": 3},
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "?from=2026-11-20T08:00:03Z&to=2026-11-20T08:00:21Z",
            [("08:00:03", "08:00:06", 2), ("08:00:20", "08:00:21", 1)],
        ),
        (
            "?from=2026-11-20T09:00:03%2B01:00&to=2026-11-20T08:00:06Z",
            [("08:00:03", "08:00:06", 2)],
        ),
        ("?from=2026-11-20T08:00:06Z&to=2026-11-20T08:00:20Z", []),
        ("?from=2026-11-20T08:00:25Z", [("08:00:25", "08:00:26", 1)]),
        ("?to=2026-11-20T08:00:01Z", [("08:00:00", "08:00:01", 1)]),
        ("?from=2026-11-19T00:00:00Z&to=2026-11-19T23:00:00Z", []),
    ],
)
async def test_spans_at_range_edges(
    gap_client: TestClient[Any, Any], query: str, expected: list[tuple[str, str, int]]
) -> None:
    found = await spans(gap_client, query)
    assert [(s["from"][11:19], s["to"][11:19], s["segment_count"]) for s in found] == expected


async def test_cameras_shape(gap_client: TestClient[Any, Any]) -> None:
    response = await gap_client.get("/api/cameras")
    assert response.content_type == "application/json"
    assert await response.json() == {
        "cameras": [
            {
                "id": "cam",
                "segment_count": 6,
                "first_start": "2026-11-20T08:00:00Z",
                "last_end": "2026-11-20T08:00:26Z",
                "segment_seconds": 2.0,
            }
        ]
    }


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/cameras/cam/recordings?from=2026-11-20T08:00:00", 400, "`from`"),
        ("/api/cameras/cam/recordings?from=yesterday", 400, "`from`"),
        ("/api/cameras/cam/recordings?to=2026-11-20", 400, "`to`"),
        (
            "/api/cameras/cam/recordings?from=2026-11-20T08:00:10Z&to=2026-11-20T08:00:10Z",
            400,
            "after",
        ),
        ("/api/cameras/cam/recordings?start=2026-11-20T08:00:10Z", 400, "unknown query"),
        (
            "/api/cameras/cam/recordings?from=2026-11-20T08:00:10Z&from=2026-11-20T08:00:10Z",
            400,
            "twice",
        ),
        ("/api/cameras?x=1", 400, "unknown query"),
        ("/api/cameras/" + "c" * 129 + "/recordings", 400, "camera id"),
        ("/api/cameras/a%20b/recordings", 400, "camera id"),
        ("/api/cameras/nobody/recordings", 404, "nobody"),
        ("/api/nothing-here", 404, "no such"),
        ("/media/../../etc/passwd", 404, "no such"),
    ],
)
async def test_errors(gap_client: TestClient[Any, Any], path: str, status: int, words: str) -> None:
    response = await gap_client.get(path)
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert list(body) == ["error"]
    assert words in body["error"]


async def test_wrong_method_is_405_json(gap_client: TestClient[Any, Any]) -> None:
    response = await gap_client.post("/api/cameras", json={})
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    assert list(await response.json()) == ["error"]


async def test_token(tmp_path: Path, start_agent: Any) -> None:
    client = await start_agent(make_config(tmp_path, server={"api_token": "s3cret-token"}))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        response = await client.get("/api/cameras", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert list(await response.json()) == ["error"]
    for scheme in ("Bearer", "bearer", "BEARER"):  # case-insensitive, RFC 9110 11.1
        response = await client.get(
            "/api/cameras", headers={"Authorization": f"{scheme} s3cret-token"}
        )
        assert response.status == 200, scheme
        await response.read()
    wrong_case = await client.get("/api/cameras", headers={"Authorization": "Bearer S3CRET-TOKEN"})
    assert wrong_case.status == 401
    assert (await client.get("/healthz")).status == 200  # open for monitoring


async def test_token_that_is_not_utf8_is_401(
    tmp_path: Path, start_agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_agent(make_config(tmp_path, server={"api_token": "s3cret-token"}))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"GET /api/cameras HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'{"error": ' in answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_unexpected_failure_is_a_plain_500(
    tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_config(tmp_path))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError(f"secret detail in {tmp_path}")

    app.router.add_get("/api/broken", broken)
    client = await aiohttp_client(app)
    response = await client.get("/api/broken")
    assert response.status == 500
    text = await response.text()
    for leak in ("secret", "Traceback", str(tmp_path)):
        assert leak not in text
    assert list(await response.json()) == ["error"]
    assert "secret detail" in caplog.text  # the operator gets the details in the log


async def test_healthz(gap_client: TestClient[Any, Any]) -> None:
    from agent import __version__

    body = await (await gap_client.get("/healthz")).json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["index"]["segments"] == 6
    assert body["index"]["cameras"] == 1
    assert body["index"]["watching"] is True


async def test_metrics(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    guarded = await start_agent(make_config(tmp_path / "guarded",
                                            server={"api_token": "s3cret-token"}))  # fmt: skip
    assert (await guarded.get("/metrics")).status == 401
    auth = {"Authorization": "Bearer s3cret-token"}
    assert (await guarded.get("/metrics", headers=auth)).status == 200
    client = await start_with(start_agent, tmp_path, footage, "ts")
    response = await client.post(
        "/api/playback", json={"camera_id": "cam", "from": at(0), "to": at(5)}
    )
    session = await response.json()
    media = await client.get(session["playlist_url"].replace("index.m3u8", "s000000.ts"))
    size = len(await media.read())
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = {}
    for line in (await response.text()).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    assert found["nvr_playback_sessions_live"] == 1
    assert found["nvr_playback_sessions_created_total"] == 1
    assert found["nvr_playback_segments_served_total"] == 1
    assert found["nvr_playback_bytes_served_total"] == size
    assert found["nvr_playback_index_segments"] == 6
    assert found['nvr_playback_ffmpeg_started_total{kind="viewer"}'] == 0
    route = 'method="POST",route="/api/playback",status="201"'
    assert found[f"nvr_playback_http_requests_total{{{route}}}"] == 1
    assert found['nvr_playback_http_request_seconds_count{route="/api/playback"}'] == 1
