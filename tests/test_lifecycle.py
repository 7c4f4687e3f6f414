"""The agent as a real process: it starts, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.client
import json
import random
import resource
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent import ffmpeg
from agent.demo import Rendered
from agent.layout import make_layout
from agent.times import format_us, parse_rfc3339

from .conftest import place_old

# Real processes, players or a fuzzer: left out of the quick loop (pytest -m 'not slow').
pytestmark = pytest.mark.slow

T0 = parse_rfc3339("2026-11-20T08:00:00Z", "t")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    tmp_path: Path, port: int, files: int | None = None, layout: str = "ffmpeg", token: str = ""
) -> subprocess.Popen[str]:
    """The agent as a real process on `port`, once its /healthz answers; with `files`,
    its limit of open files is that low."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\napi_token = "{token}"\n'
        f'[recordings]\nroot = "{tmp_path / "rec"}"\nlayout = "{layout}"\n'
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


def _whole(body: bytes) -> bool:
    """A complete fragmented MP4 segment or init section: boxes that add up to its length,
    moofs each with its mdat (a fragment a keyframe), or an ftyp and a moov."""
    kinds, at = [], 0
    while at + 8 <= len(body):
        size = int.from_bytes(body[at : at + 4], "big")
        if size < 8:
            return False
        kinds.append(body[at + 4 : at + 8])
        at += size
    fragments = len(kinds) >= 2 and kinds == [b"moof", b"mdat"] * (len(kinds) // 2)
    return at == len(body) and (fragments or kinds == [b"ftyp", b"moov"])


def _load(
    port: int, until: float, created: list[dict[str, Any]], seed: int, most: int
) -> list[str]:
    """One client until `until` or until the agent dies: POSTs (until `most` sessions are
    created in all, well within max_sessions), playlists and segments of the sessions
    created so far; what it saw that was wrong."""
    chance = random.Random(seed)
    wrong = []
    while time.monotonic() < until:
        try:
            if not created or (chance.random() < 0.3 and len(created) < most):
                first = chance.randrange(0, 5000, 100)
                status, session = call(
                    port,
                    "POST",
                    "/api/playback",
                    {
                        "camera_id": "cam",
                        "from": format_us(T0 + first * 1000),
                        "to": format_us(T0 + (first + 800) * 1000 + 500_000),
                    },
                )
                if status == 201:
                    created.append(session)
                continue
            session = chance.choice(created)
            playlist = call(port, "GET", session["playlist_url"])[1].decode()
            name = chance.choice([line for line in playlist.splitlines() if line[:1] != "#"])
            if chance.random() < 0.2:  # its init section
                name = f"i{name[1:7]}.mp4"
            status, body = call(port, "GET", session["playlist_url"].replace("index.m3u8", name))
            if status == 200 and not _whole(body):
                wrong.append(f"{session['id']}/{name}: {len(body)} bytes, not whole boxes")
        except urllib.error.HTTPError as error:
            if error.code != 503:  # a busy box may say so
                wrong.append(f"HTTP {error.code}: {error.read()[:200]!r}")
        except (OSError, http.client.HTTPException):
            return wrong  # the agent was killed
    return wrong


def _agent_ffmpeg(tmp_path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "ffmpeg" and str(tmp_path) in " ".join(
            process.info["cmdline"] or ()
        ):
            found.append(process)
    return found


@pytest.mark.timeout(600)
def test_kill_9_in_a_loop_loses_nothing(tmp_path: Path, footage: dict[str, list[Rendered]]) -> None:
    """30 times: clients POST, fetch playlists, segments and init sections (re-boxed from
    MP4 recordings as they are asked for), and the agent is killed with SIGKILL at a
    random moment. Then every session that answered 201 plays to its end, the locks are
    exactly the live sessions' recordings, no ffmpeg is left, and nothing half-made was
    ever served."""
    layout = make_layout("frigate", "UTC")
    place_old(footage["mp4"], tmp_path / "rec", layout, "cam", T0)
    chance = random.Random(8)
    created: list[dict[str, Any]] = []
    wrong: list[str] = []
    port = free_port()
    for cycle in range(30):
        process = start(tmp_path, port, layout="frigate")
        try:
            deadline = time.monotonic() + 20
            while not indexed(port, 3):
                assert time.monotonic() < deadline, "not indexed"
                time.sleep(0.05)
            until = time.monotonic() + 20
            before = len(created)
            with ThreadPoolExecutor(4) as pool:
                clients = [
                    pool.submit(_load, port, until, created, cycle * 10 + n, before + 20)
                    for n in range(4)
                ]
                # Killed at a random moment once this cycle has a session of its own, so
                # that every cycle puts one through the kill.
                deadline = time.monotonic() + 15
                while len(created) == before:
                    assert time.monotonic() < deadline, f"cycle {cycle}: no session created"
                    time.sleep(0.01)
                time.sleep(chance.uniform(0.0, 1.5))
                process.kill()
                for client in clients:
                    wrong.extend(client.result())
        finally:
            process.kill()
            process.communicate()

        def orphans() -> list[psutil.Process]:
            return _agent_ffmpeg(tmp_path)

        deadline = time.monotonic() + 5
        while orphans():
            assert time.monotonic() < deadline, f"cycle {cycle}: ffmpeg left: {orphans()}"
            time.sleep(0.05)
    assert wrong == []

    process = start(tmp_path, port, layout="frigate")
    try:
        playback = tmp_path / "playback"
        # The live sessions: those that answered 201, and any whose answer a kill cut off.
        live = {p.name for p in playback.iterdir() if not p.name.startswith(".")}
        assert live >= {session["id"] for session in created}
        held: collections.Counter[str] = collections.Counter()
        for session_id in live:
            assert call(port, "GET", f"/api/playback/{session_id}")[0] == 200
            plan = json.loads((playback / session_id / "plan.json").read_text())
            held.update(set(plan["segment_ids"]))
        for session in created:
            status, again = call(port, "GET", f"/api/playback/{session['id']}")
            assert (status, again) == (200, session)
            playlist = call(port, "GET", session["playlist_url"])[1].decode()
            base = session["playlist_url"].rsplit("/", 1)[0]
            for name in [line for line in playlist.splitlines() if not line.startswith("#")]:
                status, body = call(port, "GET", f"{base}/{name}")
                assert status == 200
                assert _whole(body), f"{session['id']}/{name}"
        with contextlib.closing(sqlite3.connect(tmp_path / "index.sqlite3")) as db:
            locks = dict(db.execute("SELECT path, sessions FROM locked_segments"))
        assert locks == held
        for session in created[::10]:
            played = subprocess.run(
                ["ffmpeg", "-v", "error", "-nostdin", "-i",
                 f"http://127.0.0.1:{port}{session['playlist_url']}", "-f", "null", "-"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert (played.returncode, played.stderr) == (0, "")
    finally:
        process.terminate()
        process.communicate(timeout=10)


def _second_agent_refused(tmp_path: Path, port: int, changes: dict[str, str]) -> str:
    """Start a second agent on the first one's configuration, another port and
    `changes` made to it: it must stop at once with one line and exit status 1, which is
    returned."""
    text = (tmp_path / "agent.toml").read_text().replace(str(port), str(free_port()))
    for old, new in changes.items():
        text = text.replace(old, new)
    second_config = tmp_path / "second.toml"
    second_config.write_text(text)
    second = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(second_config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "another agent is using" in second.stderr
    assert "Traceback" not in second.stderr
    return second.stderr


def test_a_second_agent_on_the_same_state_stops_at_once(tmp_path: Path) -> None:
    """It must not clean up the running agent's work: one line, exit status 1."""
    port = free_port()
    first = start(tmp_path, port)
    try:
        (tmp_path / "playback" / ".pbs_leftover.creating").mkdir()  # looks like a crash's
        said = _second_agent_refused(tmp_path, port, {})
        assert "playback.dir" in said
        assert (tmp_path / "playback" / ".pbs_leftover.creating").exists()
        assert call(port, "GET", "/healthz")[0] == 200
    finally:
        first.kill()
        first.communicate()


def test_a_second_agent_sharing_only_the_index_stops_at_once(
    tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    """Its own playback directory and port, the first one's index: it would drop every
    lock the first one's sessions hold. One line, exit status 1, the locks intact."""
    place_old(footage["ts"], tmp_path / "rec", make_layout("ffmpeg", "UTC"), "cam", T0)
    port = free_port()
    first = start(tmp_path, port)
    try:
        deadline = time.monotonic() + 20
        while not indexed(port, 1):
            assert time.monotonic() < deadline, "not indexed"
            time.sleep(0.05)
        body = {"camera_id": "cam", "from": format_us(T0), "to": format_us(T0 + 2_000_000)}
        assert call(port, "POST", "/api/playback", body)[0] == 201
        with contextlib.closing(sqlite3.connect(tmp_path / "index.sqlite3")) as db:
            before = db.execute("SELECT COUNT(*) FROM locks").fetchone()
        own = {str(tmp_path / "playback"): str(tmp_path / "elsewhere")}
        assert "index.database" in _second_agent_refused(tmp_path, port, own)
        with contextlib.closing(sqlite3.connect(tmp_path / "index.sqlite3")) as db:
            assert db.execute("SELECT COUNT(*) FROM locks").fetchone() == before == (1,)
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


async def test_children_start_through_setpriv_without_python_between_fork_and_exec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A preexec_fn runs Python in the forked child of a threaded process (documented as
    unsafe; a child that hangs there blocks the event loop): children are started with
    setpriv's parent-death signal instead, and a missing program is still said plainly."""
    seen: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    real = asyncio.create_subprocess_exec

    async def recorded(*argv: str, **options: Any) -> asyncio.subprocess.Process:
        seen.append((argv, options))
        return await real(*argv, **options)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recorded)
    await ffmpeg.run(["true"], 10)
    ((argv, options),) = seen
    assert "preexec_fn" not in options
    assert Path(argv[0]).name == "setpriv"
    assert argv[1:] == ("--pdeathsig", "KILL", "--", "true")
    with pytest.raises(ffmpeg.FfmpegError, match="cannot run no-such-program"):
        await ffmpeg.run(["no-such-program"], 10)


def healthz_from(address: str, port: int) -> Any:
    """GET /healthz from a loopback `address` of the caller's choosing."""
    connection = http.client.HTTPConnection("127.0.0.1", port, 10, (address, 0))
    try:
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        assert answer.status == 200
        return json.loads(answer.read())
    finally:
        connection.close()


def test_connections_wait_in_the_kernel_while_the_agent_is_busy(tmp_path: Path) -> None:
    """The queue of connections not yet accepted is long and holds none of the agent's
    descriptors: while the agent is busy (here stopped), 300 connections are all taken
    by the kernel at once, none dropped to a SYN retried a second later; once the agent
    runs again, another client is answered at once."""
    port = free_port()
    process = start(tmp_path, port, files=128)
    held = []
    try:
        process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(300):
                # A dropped SYN is sent again only after a second.
                held.append(socket.create_connection(("127.0.0.1", port), timeout=0.9))
        finally:
            process.send_signal(signal.SIGCONT)
            for connection in held:
                connection.close()
        # Another client: the queued connections' address is at its share for a while.
        healthz_from("127.0.0.2", port)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert "Traceback" not in stderr


def test_half_sent_requests_cannot_exhaust_the_agent(tmp_path: Path) -> None:
    """150 connections that each send half a request, against a 128-file limit: the agent
    keeps answering (another client at once, the same address after a retry, most of its
    flood refused unread), closes them once their headers are late, and logs no flood."""
    port = free_port()
    process = start(tmp_path, port, files=128)
    held = []
    try:
        for _ in range(150):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(connection)
            with contextlib.suppress(ConnectionError):  # refused at once: a flood's share
                connection.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(20):  # another client is answered at once
            assert healthz_from("127.0.0.2", port)["status"] in {"ok", "degraded"}
        # The flooding address itself gets room too, at a limited rate: a retry or two.
        deadline = time.monotonic() + 10
        answered = 0
        while answered < 20:
            try:
                health = healthz_from("127.0.0.1", port)
                answered += 1
            except ConnectionError:
                assert time.monotonic() < deadline, "the flooding address is never answered"
                time.sleep(0.02)
        assert health["connections"]["open"] <= health["connections"]["cap"]
        assert health["connections"]["refused"] > 0
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


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_gone_mid_body_is_no_error(tmp_path: Path, how: str) -> None:
    """A POST whose client closes (or resets) the connection while its body is read is
    dropped with a line at INFO, not logged as an error; the agent goes on."""
    port = free_port()
    process = start(tmp_path, port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(
                b"POST /api/playback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            # "100 Continue" comes once the agent is reading the body.
            assert connection.recv(1024).startswith(b"HTTP/1.1 100")
            connection.sendall(b'{"camera_id"')
            if how == "reset":  # RST, not FIN
                linger = struct.pack("ii", 1, 0)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        deadline = time.monotonic() + 10
        while b'route="/api/playback"' not in call(port, "GET", "/metrics")[1]:
            assert time.monotonic() < deadline, "the POST was never counted"
            time.sleep(0.05)
        assert call(port, "GET", "/healthz")[0] == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert "Traceback" not in stderr
    assert "ERROR" not in stderr
    assert "the client went away" in stderr
