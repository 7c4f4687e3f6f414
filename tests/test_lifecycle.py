"""The agent as a real process: it starts, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.demo import Rendered
from agent.layout import make_layout
from agent.times import format_us, parse_rfc3339

from .conftest import place_old

T0 = parse_rfc3339("2026-11-20T08:00:00Z", "t")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(tmp_path: Path, port: int, files: int | None = None) -> subprocess.Popen[str]:
    """The agent as a real process on `port`, once its /healthz answers; with `files`,
    its limit of open files is that low."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[recordings]\nroot = "{tmp_path / "rec"}"\n'
        f'[index]\ndatabase = "{tmp_path / "index.sqlite3"}"\n'
        f'[playback]\ndir = "{tmp_path / "playback"}"\n'
    )
    (tmp_path / "rec").mkdir(exist_ok=True)

    def limit() -> None:
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            call(port, "GET", "/healthz")
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"no answer: {process.communicate()[1]}") from None
            time.sleep(0.05)


def indexed(port: int, segments: int) -> bool:
    """Whether the first scan is done and the index holds `segments` segments."""
    index = call(port, "GET", "/healthz")[1]["index"]
    return bool(index["scan"] == "complete" and index["segments"] >= segments)


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        is_json = response.headers.get_content_type() == "application/json"
        return response.status, json.loads(raw) if is_json else raw


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    process = start(tmp_path, free_port())
    try:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_kill_9_loses_no_session(tmp_path: Path, footage: dict[str, list[Rendered]]) -> None:
    """kill -9 at any moment, then a restart: every session that answered 201 plays."""
    layout = make_layout("ffmpeg", "UTC")
    place_old(footage["ts"], tmp_path / "rec", layout, "cam", T0)
    port = free_port()
    process = start(tmp_path, port)
    try:
        deadline = time.monotonic() + 10
        while not indexed(port, 3):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sessions = [
            call(
                port,
                "POST",
                "/api/playback",
                {
                    "camera_id": "cam",
                    "from": format_us(T0 + k * 500_000),
                    "to": format_us(T0 + 5_000_000),
                },
            )[1]
            for k in range(1, 4)
        ]
        call(port, "GET", sessions[0]["playlist_url"].replace("index.m3u8", "s000000.ts"))
        process.kill()
        process.communicate()
        process = start(tmp_path, port)
        for session in sessions:
            status, again = call(port, "GET", f"/api/playback/{session['id']}")
            assert status == 200
            assert again == session
            played = subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-nostdin",
                    "-i",
                    f"http://127.0.0.1:{port}{session['playlist_url']}",
                    "-f",
                    "null",
                    "-",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert played.returncode == 0, played.stderr
            assert played.stderr == ""
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_a_second_agent_on_the_same_state_stops_at_once(tmp_path: Path) -> None:
    """It must not clean up the running agent's work: one line, exit status 1."""
    port = free_port()
    first = start(tmp_path, port)
    try:
        (tmp_path / "playback" / ".pbs_leftover.creating").mkdir()  # looks like a crash's
        second_config = tmp_path / "second.toml"
        second_config.write_text(
            (tmp_path / "agent.toml").read_text().replace(str(port), str(free_port()))
        )
        second = subprocess.run(
            [sys.executable, "-m", "agent", "--config", str(second_config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another agent is using" in second.stderr
        assert "Traceback" not in second.stderr
        assert (tmp_path / "playback" / ".pbs_leftover.creating").exists()
        assert call(port, "GET", "/healthz")[0] == 200
    finally:
        first.kill()
        first.communicate()


def test_ffmpeg_dies_with_the_agent(tmp_path: Path) -> None:
    """kill -9 of the agent takes its ffmpeg with it (the parent-death signal)."""
    script = (
        "import asyncio, os, sys\n"
        "from agent import ffmpeg\n"
        "print(os.getpid(), flush=True)\n"
        "asyncio.run(ffmpeg.run(['ffmpeg', '-nostdin', '-re', '-f', 'lavfi', '-i',"
        " 'testsrc=size=64x64', '-t', '600', '-f', 'null', '-'], 900))\n"
    )
    agent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    pid = int(agent.stdout.readline())
    deadline = time.monotonic() + 20
    while not (children := psutil.Process(pid).children()):
        assert time.monotonic() < deadline, "ffmpeg did not start"
        time.sleep(0.05)
    (ffmpeg,) = children
    agent.kill()
    agent.communicate()
    deadline = time.monotonic() + 10
    while ffmpeg.is_running() and ffmpeg.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "ffmpeg outlived the agent"
        time.sleep(0.05)


def test_half_sent_requests_cannot_exhaust_the_agent(tmp_path: Path) -> None:
    """150 connections that each send half a request, against a 128-file limit: the agent
    keeps answering, closes them once their headers are late, and logs no flood."""
    port = free_port()
    process = start(tmp_path, port, files=128)
    held = []
    try:
        for _ in range(150):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connection.sendall(b"GET /healthz HTTP/1.1\r\n")
            held.append(connection)
        for _ in range(20):
            assert call(port, "GET", "/healthz")[0] == 200
        health = call(port, "GET", "/healthz")[1]
        assert health["connections"]["open"] <= health["connections"]["cap"]
        assert health["admission"]["free_disk_mb"] > 0
        # Those still open are closed once their headers are late.
        deadline = time.monotonic() + 30
        for connection in held:
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ConnectionResetError):
                assert connection.recv(1024) == b""
        assert call(port, "GET", "/healthz")[0] == 200
    finally:
        for connection in held:
            connection.close()
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert len(stderr.splitlines()) < 30, stderr[-3000:]
    assert "Traceback" not in stderr
