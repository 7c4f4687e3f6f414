"""RFC 3339 in and out of the API."""

from __future__ import annotations

import random

import pytest

from agent.errors import BadRequest
from agent.playlists import pdt_text
from agent.times import format_us, parse_rfc3339


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T08:00:00Z",
        "2026-11-20t08:00:00z",
        "2026-11-20T09:00:00+01:00",
        "2026-11-20T03:00:00-05:00",
        "2026-11-20T08:00:00.000000000Z",
    ],
)
def test_equal_instants(text: str) -> None:
    assert parse_rfc3339(text, "from") == 1795161600_000_000


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20T08:00:00",
        "2026-11-20",
        "yesterday",
        "",
        1795161600,
        None,
        "2026-13-20T08:00:00Z",
        "2026-11-20T08:00:00+25:00",
        "20261120T080000Z",
    ],
)
def test_rejected(value: object) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_rfc3339(value, "from")
    assert "`from`" in caught.value.message


def test_format() -> None:
    assert format_us(1795161600_000_000) == "2026-11-20T08:00:00Z"
    assert format_us(1795161600_040_000) == "2026-11-20T08:00:00.04Z"
    assert parse_rfc3339(format_us(1795161600_123_456), "t") == 1795161600_123_456


def test_playlist_times_are_rfc3339_to_the_millisecond() -> None:
    """EXT-X-PROGRAM-DATE-TIME: milliseconds always, truncated, across hour, day and year
    boundaries; the same text as format_us gives."""
    cases = [0, 999, 1_000, 59_999_999, 3_599_999_999, 3_600_000_000, 86_399_999_999,
             1_795_161_600_000_000, 1_798_761_599_999_999, 1_798_761_600_000_001]  # fmt: skip
    rng = random.Random(7)
    cases += [rng.randrange(0, 7_258_118_400_000_000) for _ in range(10_000)]
    for us in cases:
        whole = format_us(us - us % 1_000_000).removesuffix("Z")
        assert pdt_text(us) == f"{whole}.{us % 1_000_000 // 1000:03d}Z", us
    assert pdt_text(1_795_161_600_123_456) == "2026-11-20T08:00:00.123Z"
