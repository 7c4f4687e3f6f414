"""The agent as a real process: it starts, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[recordings]\nroot = "{tmp_path / "rec"}"\n'
        f'[index]\ndatabase = "{tmp_path / "index.sqlite3"}"\n'
        f'[playback]\ndir = "{tmp_path / "playback"}"\n'
    )
    (tmp_path / "rec").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.load(r)["status"] == "ok"
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the agent did not answer"
                time.sleep(0.05)
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
