"""RFC 3339 times in and out of the API; internally every time is integer UTC microseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import BadRequest

# RFC 3339 section 5.6 date-time: a full date, "T" (or space), time, and a mandatory offset.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_rfc3339(value: object, field: str) -> int:
    """Parse an RFC 3339 time with an offset into UTC microseconds, or raise BadRequest."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise BadRequest(
            f"`{field}` must be an RFC 3339 time with an offset, like 2026-11-20T08:00:00Z"
        )
    text = value.upper().replace(" ", "T").replace("Z", "+00:00")
    # fromisoformat takes at most 6 fractional digits: cut nanoseconds to microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"`{field}` is not a valid date and time: {value}") from None
    return to_us(parsed)


def to_us(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def format_us(us: int) -> str:
    """UTC microseconds as RFC 3339 with `Z`, fractional seconds only where there are any."""
    moment = from_us(us)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"
