"""Configuration: defaults, the documented file, and one clear line for every mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config, parse_config
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_documented_file_is_exactly_the_defaults() -> None:
    assert load_config(REPO / "config" / "agent.toml") == parse_config({})


def test_defaults_match_the_spec() -> None:
    config = parse_config({})
    server = config.server
    assert (server.host, server.port, server.api_token) == ("0.0.0.0", 8080, "")
    assert str(config.recordings.root) == "/var/lib/nvr/recordings"
    assert config.layout.template == "{camera}/%Y-%m-%d/%H-%M-%S.ts"
    assert str(config.index.database) == "/var/lib/nvr-playback-agent/index.sqlite3"
    assert config.playback.max_seconds == 14400
    assert config.admission.queue_timeout_seconds == 5


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"server": {"prot": 1}}, "server.prot"),
        ({"serve": {}}, "serve"),
        ({"server": {"port": "8080"}}, "server.port"),
        ({"server": {"port": True}}, "server.port"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"host": "my box"}}, "server.host"),
        ({"server": {"api_token": "two words"}}, "server.api_token"),
        ({"server": []}, "server"),
        ({"recordings": {"root": "relative/path"}}, "recordings.root"),
        ({"recordings": {"layout": "nope"}}, "recordings.layout"),
        ({"recordings": {"layout": "{camera}/%Y-%m-%d.ts"}}, "recordings.layout"),
        ({"recordings": {"layout": "%Y/%m/%d/%H-%M-%S-%Q.ts"}}, "recordings.layout"),
        ({"recordings": {"layout": "../{camera}/%Y-%m-%d/%H-%M-%S.ts"}}, "recordings.layout"),
        ({"recordings": {"timezone": "Mars/Olympus"}}, "recordings.timezone"),
        ({"playback": {"max_seconds": 0}}, "playback.max_seconds"),
        ({"playback": {"session_ttl_seconds": 1.5}}, "playback.session_ttl_seconds"),
        ({"admission": {"max_cpu_percent": 101}}, "admission.max_cpu_percent"),
        ({"admission": {"max_builds": -1}}, "admission.max_builds"),
        ({"ffmpeg": {"ffmpeg": ""}}, "ffmpeg.ffmpeg"),
    ],
)
def test_mistakes_name_the_key(raw: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    message = str(caught.value)
    assert message.startswith(names), message
    assert "\n" not in message


@pytest.mark.parametrize("preset", ["ffmpeg", "mediamtx", "frigate"])
def test_presets_are_accepted(preset: str) -> None:
    assert parse_config({"recordings": {"layout": preset}}).layout.template.endswith(
        (".ts", ".mp4")
    )


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[server]\nport = 'eighty'\n", "server.port: 'eighty' must be a whole number"),
        ("[server\n", "is not valid TOML"),
        ("[recordings]\nlayout = 'frigate'\ntimezone = 'Nowhere'\n", "recordings.timezone"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(content)
    result = run_agent("--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_agent("--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_version_flag() -> None:
    from agent import __version__

    result = run_agent("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout
