"""Recording layouts: where a segment lives under the recordings root, and what its name says.

A layout is a path template relative to the root: `{camera}` is the camera id and the
strftime fields `%Y %m %d %H %M %S %f` give the segment's start time in the configured zone,
or, with `%z` (a UTC offset such as +0100), at that offset: no guessing.

A local time names one instant but twice a year: in the autumn's repeated hour it names
two (`SegmentName.instants`), and in the spring's skipped hour none (`SegmentName.gap`);
wallclock.place decides those from the file itself.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from .errors import ConfigError
from .ids import CAMERA_ID_PATTERN
from .times import from_us, to_us

log = logging.getLogger(__name__)

PRESETS: dict[str, str] = {
    "ffmpeg": "{camera}/%Y-%m-%d/%H-%M-%S.ts",
    "mediamtx": "{camera}/%Y-%m-%d_%H-%M-%S-%f.mp4",
    "frigate": "%Y-%m-%d/%H/{camera}/%M.%S.mp4",
}

_FIELDS = {  # ASCII digits only: \d would take other scripts' digits too
    "Y": "[0-9]{4}",
    "m": "[0-9]{2}",
    "d": "[0-9]{2}",
    "H": "[0-9]{2}",
    "M": "[0-9]{2}",
    "S": "[0-9]{2}",
    "f": "[0-9]{1,9}",
    "z": "[+-][0-9]{4}",
}
_REQUIRED = "YmdHMS"
MIN_YEAR, MAX_YEAR = 1970, 2200  # years a segment's name may give
_REPORTED: set[str] = set()
_CAMERA = CAMERA_ID_PATTERN
_TOKEN = re.compile(r"\{camera\}|%(.)|[^%{]+|\{")


def _compile(template: str, anchor_groups: bool) -> tuple[str, set[str]]:
    """A regex for `template`; repeated fields must repeat the same digits."""
    out: list[str] = []
    seen: set[str] = set()
    for token in _TOKEN.finditer(template):
        text = token.group(0)
        if text == "{camera}":
            name = "camera"
            pattern = _CAMERA
        elif text.startswith("%"):
            code = token.group(1)
            if code == "%":
                out.append("%")
                continue
            if code not in _FIELDS:
                raise ConfigError(
                    f"recordings.layout: unsupported field %{code} in {template!r}; "
                    "expected only {camera}, %Y %m %d %H %M %S %f %z"
                )
            name = code
            pattern = _FIELDS[code]
        else:
            out.append(re.escape(text))
            continue
        if name in seen:
            out.append(f"(?P={name})")
        else:
            out.append(f"(?P<{name}>{pattern})" if anchor_groups else f"(?:{pattern})")
            seen.add(name)
    return "".join(out), seen


@dataclass(frozen=True)
class SegmentName:
    """What a segment's path says: its camera and its start time (UTC microseconds).

    `start_us` is the first instant the name can mean; `instants` all it can mean (two
    in the autumn's repeated hour, the earlier first), none if its local time does not
    exist in the zone (`gap`: the spring's skipped hour). `offset` is True when the name
    carries its UTC offset (%z): it means one instant whatever the zone says."""

    camera: str
    start_us: int
    instants: tuple[int, ...] = ()
    gap: bool = False
    offset: bool = False
    local: str = ""  # the local time the name gives, as written (YYYY-MM-DD HH:MM:SS)
    disagrees: bool = False  # its offset (%z) is not the zone's at that instant

    @property
    def ambiguous(self) -> bool:
        return len(self.instants) > 1


@dataclass(frozen=True)
class Layout:
    template: str
    zone: ZoneInfo
    _full: re.Pattern[str] = field(repr=False, compare=False)
    _parts: tuple[re.Pattern[str], ...] = field(repr=False, compare=False)

    @property
    def depth(self) -> int:
        """How many path components a segment's relative path has."""
        return len(self._parts)

    @property
    def name_resolution_us(self) -> int:
        """How precisely a name gives the start: a second, unless it carries %f."""
        return 1 if "%f" in self.template else 1_000_000

    def dir_may_match(self, level: int, name: str) -> bool:
        """Whether a directory `name` at depth `level` (0 = under the root) can hold segments."""
        return level < self.depth - 1 and self._parts[level].fullmatch(name) is not None

    def format(self, camera: str, start_us: int) -> str:
        """The relative path at which this layout stores `camera`'s segment starting then."""
        local = from_us(start_us).astimezone(self.zone)
        return local.strftime(self.template.replace("{camera}", camera.replace("%", "%%")))

    def may_match(self, relpath: str) -> bool:
        """Whether `relpath` has the layout's shape: 40 times cheaper than `parse`, which
        also says no to a date that does not exist or a year out of range."""
        return self._full.fullmatch(relpath) is not None

    def parse(self, relpath: str) -> SegmentName | None:
        """The camera and UTC start of `relpath` ("/"-separated), or None if it does not match."""
        match = self._full.fullmatch(relpath)
        if match is None:
            return None
        camera = match.group("camera")
        if camera in (".", ".."):
            return None
        groups = match.groupdict()
        fraction = groups.get("f") or "0"
        micro = int((fraction + "000000")[:6])
        if not MIN_YEAR <= int(groups["Y"]) <= MAX_YEAR:
            # 0001 or 9999: a broken clock or a hostile name, not a recording. Said once
            # per name (a bounded memory of names already reported).
            if relpath not in _REPORTED and len(_REPORTED) < 10_000:
                _REPORTED.add(relpath)
                log.warning(
                    "layout: ignoring %s: its year is outside %d-%d", relpath, MIN_YEAR, MAX_YEAR
                )
            return None
        try:
            naive = datetime(
                int(groups["Y"]),
                int(groups["m"]),
                int(groups["d"]),
                int(groups["H"]),
                int(groups["M"]),
                int(groups["S"]),
                micro,
            )
        except ValueError:
            return None  # 2026-02-30 and the like: not a segment name
        written = naive.strftime("%Y-%m-%d %H:%M:%S")
        if groups.get("z"):
            sign = -1 if groups["z"][0] == "-" else 1
            minutes = sign * (int(groups["z"][1:3]) * 60 + int(groups["z"][3:5]))
            if abs(minutes) >= 24 * 60 or int(groups["z"][3:5]) >= 60:
                return None
            given = timedelta(minutes=minutes)
            instant = to_us(naive.replace(tzinfo=timezone(given)))
            differs = from_us(instant).astimezone(self.zone).utcoffset() != given
            return SegmentName(camera, instant, (instant,), offset=True, local=written,
                               disagrees=differs)  # fmt: skip
        return SegmentName(camera, *_instants(naive, self.zone), local=written)


def _instants(naive: datetime, zone: ZoneInfo) -> tuple[int, tuple[int, ...], bool]:
    """The first instant `naive` (a local time in `zone`) can mean, all it means, and
    whether it is in a gap (pure). zoneinfo's `fold` picks the first or the second of a
    repeated time; a time in a gap does not come back from UTC as it went in."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():  # as but twice a year: one instant
        return to_us(first), (to_us(first),), False
    early, late = sorted((to_us(first), to_us(second)))
    real = [
        instant
        for instant in dict.fromkeys((early, late))
        if from_us(instant).astimezone(zone).replace(tzinfo=None) == naive
    ]
    return early, tuple(real), not real


def offset_of(zone: ZoneInfo, start_us: int) -> str:
    """The zone's UTC offset and abbreviation at an instant, as "+01:00 CET" (pure)."""
    local = from_us(start_us).astimezone(zone)
    text = local.strftime("%z")
    return f"{text[:3]}:{text[3:]} {local.tzname()}"


def make_layout(value: str, timezone: str) -> Layout:
    """Build a Layout from a preset name or a template, or raise ConfigError."""
    template = PRESETS.get(value, value)
    zone = _zone(timezone)
    if not template or template.startswith("/") or "\\" in template:
        raise ConfigError(
            f"recordings.layout: {value!r} is not a preset ({', '.join(PRESETS)}) "
            "nor a relative path template"
        )
    parts = template.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ConfigError(f"recordings.layout: {value!r} has an empty, '.' or '..' path component")
    full, seen = _compile(template, anchor_groups=True)
    if "camera" not in seen or template.count("{camera}") != 1:
        raise ConfigError(f"recordings.layout: {value!r} must contain {{camera}} exactly once")
    missing = [f"%{code}" for code in _REQUIRED if code not in seen]
    if missing:
        raise ConfigError(f"recordings.layout: {value!r} lacks {' '.join(missing)}")
    part_patterns = tuple(re.compile(_compile(part, anchor_groups=False)[0]) for part in parts)
    return Layout(template, zone, re.compile(full), part_patterns)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        raise ConfigError(
            f"recordings.timezone: {name!r} is not an IANA time zone name"
            " (like UTC or Europe/Paris)"
        ) from None
