"""Schemathesis against a live agent, from the agent's own /api/openapi.json: every check,
every phase (examples, coverage, fuzzing, and the stateful phase that follows the API's
links from a POST to its GET, DELETE and playlist), with and without a token."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.demo import Rendered
from agent.layout import make_layout

from .conftest import place_old
from .test_lifecycle import T0, call, free_port, indexed, start

# Real processes, players or a fuzzer: left out of the quick loop (pytest -m 'not slow').
pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("token", ["", "fuzz-token"])
def test_schemathesis_finds_nothing(
    tmp_path: Path, footage: dict[str, list[Rendered]], token: str
) -> None:
    st = Path(sys.executable).with_name("st")
    if not st.is_file():
        pytest.fail("schemathesis is not installed (scripts/setup-dev.sh installs it)")
    place_old(footage["ts"], tmp_path / "rec", make_layout("ffmpeg", "UTC"), "cam", T0)
    port = free_port()
    process = start(tmp_path, port, token=token)
    try:
        deadline = time.monotonic() + 20
        while not indexed(port, 3):
            assert time.monotonic() < deadline, "not indexed"
            time.sleep(0.05)
        argv = [
            str(st), "--config-file", str(CONFIG), "run",
            f"http://127.0.0.1:{port}/api/openapi.json", "--checks", "all", "--max-examples", "15",
            "--seed", "20261127", "--no-color",
        ]  # fmt: skip
        if token:
            argv += ["--header", f"Authorization: Bearer {token}"]
        found = subprocess.run(argv, capture_output=True, text=True, timeout=540, cwd=tmp_path)
        assert found.returncode == 0, found.stdout[-8000:] + found.stderr[-2000:]
        assert call(port, "GET", "/healthz")[0] == 200  # and the agent is still up
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in stderr
