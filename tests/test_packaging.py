"""The Debian package agrees with the code (the full proof is scripts/test-deb.sh)."""

from __future__ import annotations

import re
from pathlib import Path

from agent import __version__
from agent.config import DEFAULT_PATH

DEBIAN = Path(__file__).resolve().parent.parent / "debian"


def test_changelog_version_is_the_agents() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.match(r"nvr-playback-agent \(([^)]+)\)", first)
    assert match is not None
    assert match.group(1) == __version__


def test_unit_runs_the_packaged_command_with_the_default_config() -> None:
    unit = (DEBIAN / "nvr-playback-agent.service").read_text()
    assert f"ExecStart=/usr/bin/nvr-playback-agent --config {DEFAULT_PATH}\n" in unit
    assert "\nUser=nvr-playback-agent\n" in unit
    assert "StateDirectory=nvr-playback-agent" in unit
    install = (DEBIAN / "install").read_text()
    assert f"config/agent.toml {DEFAULT_PATH.parent.relative_to('/')}/" in install
