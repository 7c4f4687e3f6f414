"""The OpenAPI description matches the routes the agent serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.app import create_app
from agent.openapi import document

from .conftest import make_config


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    paths = document()["paths"]
    documented = {
        (path, method) for path, item in paths.items() for method in item if method != "parameters"
    }
    assert served == documented


# What SPEC.md's contract says each operation may answer (the document may list more).
CONTRACT = {
    ("/api/playback", "post"): {"201", "400", "401", "404", "413", "503", "507"},
    ("/api/cameras/{camera_id}/playlist.m3u8", "get"): {"303", "400", "401", "404", "503"},
    ("/api/cameras/{camera_id}/recordings", "get"): {"200", "400", "401", "404"},
    ("/api/cameras", "get"): {"200", "401"},
    ("/api/playback/{session_id}", "get"): {"200", "400", "401", "404"},
    ("/api/playback/{session_id}", "delete"): {"204", "400", "401", "404"},
    ("/media/playback/{session_id}/{name}", "get"): {"200", "206", "304", "400", "404", "416"},
    ("/media/playback/{session_id}/clip.mp4", "get"): {"200", "206", "304", "400", "404", "416"},
    ("/metrics", "get"): {"200", "401"},
    ("/healthz", "get"): {"200"},
}


def test_every_operation_documents_the_statuses_of_the_contract() -> None:
    """Each operation lists at least the statuses SPEC.md gives it; only /api (but its
    own description) and /metrics document 401, the routes that need the token."""
    paths = document()["paths"]
    for (path, method), statuses in CONTRACT.items():
        listed = set(paths[path][method]["responses"])
        assert statuses <= listed, (path, method, statuses - listed)
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            guarded = path == "/metrics" or (
                path.startswith("/api/") and path != "/api/openapi.json"
            )
            assert ("401" in operation["responses"]) == guarded, (path, method)


async def test_served_open_even_with_a_token(tmp_path: Path, start_agent: Any) -> None:
    client = await start_agent(make_config(tmp_path, server={"api_token": "t0ken"}))
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    body = await response.json()
    assert body["openapi"].startswith("3.1")
    assert "/api/playback" in body["paths"]
