"""What a session keeps on disk, and how it is read back: `session.json` (a summary:
what the API says of the session, and its expiry) and `plan.json` (its media items and
the recordings it locks), their formats, and the migrations from older ones.

Formats, as written by the agent over time:
- 2: everything in session.json, each item with its timeline and counter shifts;
- 3: the plan and the locked recordings in plan.json, session.json a summary;
- 4 (now): plan.json's items unnamed (named by their place), on their chain's timeline,
  with one `offset` for the session; session.json as in 3.
Formats 3 and 4 are read as they are; a format 2 session is rewritten as 4 when read.
"""

from __future__ import annotations

import json
import math
import operator
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import BadRequest
from .files import replace_file
from .playlists import MediaItem, MediaKind, Plan, init_name, keyframe_name, media_name
from .times import format_us, parse_rfc3339

MEDIA_NAME = re.compile(r"s[0-9]{6}\.(ts|m4s)|i[0-9]{6}\.mp4")
KEYFRAME_NAME = re.compile(r"k([0-9]{6})-([1-9][0-9]{0,14})-([1-9][0-9]{0,6})\.m4s")
META = "session.json"
PLAN = "plan.json"
PLAYLIST = "index.m3u8"
FORMAT = 4  # the format written (see above)
# session.json's summary is the same in formats 3 and 4: both are read as they are.
SUMMARY_FORMATS = (3, FORMAT)
# Media fields a format 3 or 4 plan may lack (written before they existed).
_LATER_FIELDS = {
    "stop_at", "suffix", "nulls", "init_size", "mp4_tag", "cut_sample", "stop_sample", "timescale",
    "inode", "mtime_ns", "ctime_ns",
}  # fmt: skip
# What plan.json keeps of an item: not its name, which its place gives.
MEDIA_FIELDS = [field.name for field in fields(MediaItem) if field.init and field.name != "name"]
MEDIA_ROW = operator.attrgetter(*MEDIA_FIELDS)
# Compact JSON (json.dumps given separators makes an encoder each call).
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
# A watched session's new expiry is written to disk when it has moved this far.


def safe_relpath(path: object) -> str:
    """A recording path from session.json, refused unless plainly inside the root."""
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise ValueError(f"unsafe recording path {path!r}")
    return path


@dataclass
class Session:
    id: str
    camera_id: str
    from_us: int
    to_us: int
    created_us: int
    expires_us: int
    segment_count: int
    persisted_expiry_us: int = field(default=0, compare=False)

    @property
    def duration_s(self) -> float:
        return (self.to_us - self.from_us) / 1e6

    @property
    def playlist_url(self) -> str:
        return f"/media/playback/{self.id}/{PLAYLIST}"

    @property
    def multivariant_url(self) -> str:
        """The multivariant playlist: the media playlist and its I-frames (iframes.py)."""
        return f"/media/playback/{self.id}/multivariant.m3u8"

    def public(self) -> dict[str, Any]:
        """The API's view of the session."""
        return {
            "id": self.id,
            "camera_id": self.camera_id,
            "playlist_url": self.playlist_url,
            "multivariant_url": self.multivariant_url,
            "from": format_us(self.from_us),
            "to": format_us(self.to_us),
            "duration_s": self.duration_s,
            "segment_count": self.segment_count,
            "expires_at": format_us(self.expires_us),
        }

    def to_json(self) -> dict[str, Any]:
        body = self.public()
        del body["playlist_url"], body["multivariant_url"]
        body.update(format=FORMAT, created_at=format_us(self.created_us))
        return body

    @classmethod
    def from_json(cls, data: Any, expected_id: str) -> Session:
        """Parse session.json; raises ValueError (or a subclass) on anything unexpected."""
        if not isinstance(data, dict) or data.get("format") not in SUMMARY_FORMATS:
            raise ValueError("not a session.json of a known format")
        return cls._summary(data, expected_id, data["segment_count"])

    @classmethod
    def _summary(cls, data: dict[str, Any], expected_id: str, segment_count: Any) -> Session:
        if data.get("id") != expected_id:
            raise ValueError("id does not match its directory")
        camera = data["camera_id"]
        if not isinstance(camera, str):
            raise ValueError("bad camera_id")
        if isinstance(segment_count, bool) or not isinstance(segment_count, int):
            raise ValueError("bad segment_count")
        expires_us = _time(data["expires_at"])
        return cls(
            id=expected_id,
            camera_id=camera,
            from_us=_time(data["from"]),
            to_us=_time(data["to"]),
            created_us=_time(data["created_at"]),
            expires_us=expires_us,
            segment_count=segment_count,
            persisted_expiry_us=expires_us,
        )


@dataclass(frozen=True)
class Stored:
    """What plan.json holds: the session's media items and the recordings it locks."""

    plan: Plan
    segment_ids: list[str]

    def to_bytes(self) -> bytes:
        """plan.json's text. One row per media item, in the order of `media_fields`: a
        day's session is 8,640 items, so no key names repeated for each; an item's row is
        made once, for every session that shares the item."""
        head = _compact(
            {
                "format": FORMAT,
                "segment_ids": self.segment_ids,
                "start_offset": self.plan.start_offset,
                "offset": self.plan.offset,
                "media_fields": MEDIA_FIELDS,
            }
        )
        rows = b",".join([item.row or row_of(item) for item in self.plan.items])
        return b"".join((head[:-1], b',"media":[', rows, b"]}"))

    @classmethod
    def from_json(cls, data: Any) -> Stored:
        """Parse plan.json (or a format 2 session.json); raises ValueError (or a subclass)
        on anything unexpected."""
        if not isinstance(data, dict) or data.get("format") not in (2, 3, FORMAT):
            raise ValueError("not a plan of a known format")
        items: list[MediaItem] = []
        names = data["media_fields"]
        # Plans written before `stop_at`, `suffix` and `nulls` existed lack them: their
        # items run to the recording's end, as recorded.
        if not isinstance(names, list) or set(MEDIA_FIELDS) - set(names) - _LATER_FIELDS:
            raise ValueError("media entries of another shape")
        if set(names) - {*MEDIA_FIELDS, "name"}:
            raise ValueError("media entries of another shape")
        for n, row in enumerate(data["media"]):
            raw = dict(zip(names, row, strict=True))
            named = raw.pop("name", None)  # formats 2 and 3 named each item
            raw["source"] = sys.intern(raw["source"])  # one string per path, shared
            item = MediaItem(
                **{
                    **raw,
                    "kind": MediaKind(raw["kind"]),  # ValueError if unknown
                    **{
                        name: tuple(int(offset) for offset in raw.get(name, ()))
                        for name in ("prefix", "suffix", "nulls")
                    },
                }
            )
            if (
                named not in (None, media_name(n, item.is_mp4))
                or item.mp4_tag not in ("", "avc1", "hvc1")
                or not math.isfinite(item.duration)
                or not isinstance(item.shift, int)
                or not isinstance(item.cc_shift, str)
                or not isinstance(item.stop_at, int)
                or not isinstance(item.timescale, int)
                or type(item.inode) is not int
                or type(item.mtime_ns) is not int
                or type(item.ctime_ns) is not int
            ):
                raise ValueError(f"bad media entry {n}")
            item.counter_shifts()  # raises ValueError if it does not parse
            safe_relpath(item.source)
            items.append(item)
        if not items:
            raise ValueError("no media")
        offset = data.get("offset", 0)
        if type(offset) is not int:
            raise ValueError("a plan offset that is not a whole number")
        return cls(
            plan=Plan(tuple(items), float(data["start_offset"]), offset),
            segment_ids=[sys.intern(safe_relpath(p)) for p in data["segment_ids"]],
        )


def named_item(plan: Plan, name: str) -> tuple[int, MediaItem] | None:
    """The media item a URL name stands for, with its number, or None: the item's own
    name, or for fragmented MP4 the name of the init section of the item's recording."""
    if not MEDIA_NAME.fullmatch(name):
        return None
    number = int(name[1:7])
    if number >= len(plan.items):
        return None
    served = plan.at(number)
    if name == served.name or (name == init_name(number) and served.is_mp4):
        return number, served
    return None


def named_keyframe(plan: Plan, name: str) -> tuple[int, MediaItem, int, int] | None:
    """A keyframe URL name's item (fragmented MP4 served as recorded), with its number,
    the fragment's moof offset and the sample (playlists.keyframe_name), or None."""
    found = KEYFRAME_NAME.fullmatch(name)
    if found is None:
        return None
    number, moof_at, sample = (int(part) for part in found.groups())
    if number >= len(plan.items) or name != keyframe_name(number, moof_at, sample):
        return None
    served = plan.at(number)
    return (number, served, moof_at, sample) if served.kind == MediaKind.FRAGMENTS else None


def _time(value: object) -> int:
    try:
        return parse_rfc3339(value, "time")
    except BadRequest:
        raise ValueError(f"bad time {value!r}") from None


def row_of(item: MediaItem) -> bytes:
    """An item's plan.json row (kept on the item)."""
    item.row = _ENCODE(MEDIA_ROW(item)).encode()
    return item.row


def _compact(data: dict[str, Any]) -> bytes:
    return _ENCODE(data).encode()


def write_summary(directory: Path, session: Session) -> None:
    """Replace session.json atomically (write, fsync, rename)."""
    replace_file(directory / META, _compact(session.to_json()))


def _read_json(path: Path) -> Any:
    with open(path, "rb") as handle:
        return json.load(handle)


def read_summary(directory: Path, name: str) -> Session:
    """A session's summary from its directory; a format 2 session (everything in
    session.json) is rewritten in the current format (plan.json first, so that a crash
    midway leaves it readable). Raises OSError, ValueError, KeyError or TypeError."""
    data = _read_json(directory / META)
    if isinstance(data, dict) and data.get("format") == 2:
        stored = Stored.from_json(data)
        session = Session._summary(data, name, len(stored.segment_ids))
        replace_file(directory / PLAN, stored.to_bytes())
        write_summary(directory, session)
        return session
    return Session.from_json(data, name)


def read_plan(directory: Path) -> Stored:
    return Stored.from_json(_read_json(directory / PLAN))
