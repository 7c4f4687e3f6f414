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


def test_every_operation_documents_its_errors() -> None:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert "500" in operation["responses"], (path, method)
            if path.startswith("/api/") and path != "/api/openapi.json":
                assert "401" in operation["responses"], (path, method)


async def test_served_open_even_with_a_token(tmp_path: Path, start_agent: Any) -> None:
    client = await start_agent(make_config(tmp_path, server={"api_token": "t0ken"}))
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    body = await response.json()
    assert body["openapi"].startswith("3.1")
    assert "/api/playback" in body["paths"]
