"""Configuration: TOML parsed once into frozen dataclasses; any mistake is one ConfigError line."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .layout import Layout, make_layout

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli serves older Pythons
    import tomllib
else:  # pragma: no cover - Debian 13 and Raspberry Pi OS have 3.13
    import tomli as tomllib

DEFAULT_PATH = Path("/etc/nvr-playback-agent/agent.toml")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    api_token: str = ""


@dataclass(frozen=True)
class RecordingsConfig:
    root: Path = Path("/var/lib/nvr/recordings")
    layout: str = "ffmpeg"
    timezone: str = "UTC"


@dataclass(frozen=True)
class IndexConfig:
    database: Path = Path("/var/lib/nvr-playback-agent/index.sqlite3")


@dataclass(frozen=True)
class PlaybackConfig:
    dir: Path = Path("/var/lib/nvr-playback-agent/playback")
    max_seconds: int = 14400
    session_ttl_seconds: int = 3600
    sweep_interval_seconds: int = 60
    build_timeout_seconds: int = 300
    max_sessions: int = 1000
    window_seconds: int = 3600
    segment_seconds: int = 6


@dataclass(frozen=True)
class AdmissionConfig:
    max_builds: int = 0
    max_cpu_percent: int = 90
    min_free_disk_mb: int = 512
    queue_timeout_seconds: int = 5


@dataclass(frozen=True)
class FfmpegConfig:
    ffmpeg: str = "ffmpeg"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    recordings: RecordingsConfig
    index: IndexConfig
    playback: PlaybackConfig
    admission: AdmissionConfig
    ffmpeg: FfmpegConfig
    layout: Layout  # derived from recordings.layout and recordings.timezone


Check = Callable[[str, Any], Any]


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: {value!r} must be a string")
    if "\x00" in value:
        raise ConfigError(f"{key}: {value!r} must not contain a NUL character")
    return value


def _nonempty(key: str, value: Any) -> str:
    text = _string(key, value)
    if not text.strip():
        raise ConfigError(f"{key}: must not be empty")
    return text


def _path(key: str, value: Any) -> Path:
    text = _nonempty(key, value)
    if not os.path.isabs(text):
        raise ConfigError(f"{key}: {text!r} must be an absolute path")
    return Path(text)


def _host(key: str, value: Any) -> str:
    text = _nonempty(key, value)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if text != "localhost":
            raise ConfigError(
                f"{key}: {text!r} must be an IP address to listen on (like 0.0.0.0 or ::)"
            ) from None
    return text


def _token(key: str, value: Any) -> str:
    text = _string(key, value)
    if text and (text != text.strip() or any(ord(c) < 0x21 or ord(c) > 0x7E for c in text)):
        raise ConfigError(f"{key}: must be printable ASCII without spaces")
    return text


def _int(low: int, high: int) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {value!r} must be a whole number from {low} to {high}")
        if not low <= value <= high:
            raise ConfigError(f"{key}: {value} is out of range; expected {low} to {high}")
        return int(value)

    return check


_DAY = 86_400
_SCHEMA: dict[str, tuple[type, dict[str, Check]]] = {
    "server": (
        ServerConfig,
        {"host": _host, "port": _int(0, 65535), "api_token": _token},
    ),
    "recordings": (
        RecordingsConfig,
        {"root": _path, "layout": _nonempty, "timezone": _nonempty},
    ),
    "index": (IndexConfig, {"database": _path}),
    "playback": (
        PlaybackConfig,
        {
            "dir": _path,
            "max_seconds": _int(1, 7 * _DAY),
            "session_ttl_seconds": _int(10, 30 * _DAY),
            "sweep_interval_seconds": _int(1, _DAY),
            "build_timeout_seconds": _int(1, _DAY),
            "max_sessions": _int(1, 1_000_000),
            "window_seconds": _int(10, 7 * _DAY),
            "segment_seconds": _int(1, 60),
        },
    ),
    "admission": (
        AdmissionConfig,
        {
            "max_builds": _int(0, 1024),
            "max_cpu_percent": _int(1, 100),
            "min_free_disk_mb": _int(0, 1 << 30),
            "queue_timeout_seconds": _int(0, 3600),
        },
    ),
    "ffmpeg": (FfmpegConfig, {"ffmpeg": _nonempty}),
}

T = TypeVar("T")


def _section(name: str, cls: type[T], checks: dict[str, Check], raw: Any) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: must be a table ([{name}])")
    unknown = sorted(set(raw) - set(checks))
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}: unknown key; expected one of {', '.join(sorted(checks))}"
        )
    values = {key: checks[key](f"{name}.{key}", raw[key]) for key in raw}
    return cls(**values)


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Check a parsed TOML document and build the Config, or raise ConfigError."""
    unknown = sorted(set(raw) - set(_SCHEMA))
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown section; expected one of {', '.join(sorted(_SCHEMA))}"
        )
    sections: dict[str, Any] = {
        name: _section(name, cls, checks, raw.get(name, {}))
        for name, (cls, checks) in _SCHEMA.items()
    }
    recordings: RecordingsConfig = sections["recordings"]
    layout = make_layout(recordings.layout, recordings.timezone)
    return Config(layout=layout, **sections)


def load_config(path: Path) -> Config:
    """Read and check the TOML file at `path`, or raise ConfigError."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"configuration file {path} cannot be read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"configuration file {path} is not valid TOML: {error}") from None
    return parse_config(raw)
