"""A camera's spans by the hour (spanbook.py): the same answer as the spans of every
recording in the range, kept hours dropped when the index changes them, and the
recordings query's default and longest range."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from agent.errors import BadRequest
from agent.index import Index, Segment
from agent.playback import recordings_range
from agent.spanbook import HOUR_US, MAX_RANGE_US, SpanBook
from agent.timeline import Span, clip, spans

from .conftest import T0, S, make_config, place_old, started, utc

DAY = 86_400 * S


def _recording(n: int, start_us: int, seconds: int, first_pts: int) -> Segment:
    return Segment(
        path=f"cam/{n:08d}.ts", camera="cam", start_us=start_us,
        end_us=start_us + seconds * S, size=1000, mtime_ns=1, inode=1,
        container="mpegts", video_codec="h264", has_audio=False, timescale=90_000,
        first_pts=first_pts % (1 << 33), duration=seconds * 90_000, frame_ticks=3_600,
    )  # fmt: skip


def _archive(days: int, chance: random.Random) -> list[Segment]:
    """10 s recordings, one continuous timestamp run, with gaps now and then (a lost
    recording, a recorder restarted with new timestamps, a file named a second late)."""
    made, at, pts = [], T0, 0
    for n in range(days * 8_640):
        roll = chance.random()
        if roll < 0.01:
            at, pts = at + 10 * S, pts + 900_000  # one missing
        elif roll < 0.015:
            pts += 12_345_678  # new timestamps, no hole on the clock
        elif roll < 0.02:
            at += S  # named a second late: within a name's resolution
        made.append(_recording(n, at, 10, pts))
        at, pts = at + 10 * S, pts + 900_000
    return made


async def _index(tmp_path: Path, recordings: list[Segment]) -> Index:
    index = Index(tmp_path / "index.sqlite3", {"t": "1"})
    await index.open()
    await index.put(recordings)
    return index


def _expected(recordings: list[Segment], low: int, high: int) -> list[Span]:
    """What timeline.spans makes of every recording that overlaps the range."""
    overlapping = [r for r in recordings if r.start_us < high and r.end_us > low]
    return clip(spans(overlapping, S), low, high)


async def test_spans_by_the_hour_are_the_spans_of_every_recording(tmp_path: Path) -> None:
    """Three days of recordings with gaps of each kind: any range, hours kept or made
    afresh, gives what the spans of all its recordings give."""
    chance = random.Random(5)
    recordings = _archive(3, chance)
    index = await _index(tmp_path, recordings)
    try:
        book = SpanBook(index, S)
        ranges = [(T0 - DAY, T0 + 4 * DAY), (T0 + 7 * S, T0 + 3 * DAY - 13 * S)]
        for _ in range(60):
            low = T0 + chance.randrange(-3_600, 3 * 86_400) * S + chance.randrange(S)
            ranges.append((low, low + chance.randrange(1, 2 * 86_400) * S))
        for low, high in ranges:
            found = await book.spans("cam", low, high)
            assert found == _expected(recordings, low, high), (low, high)
        assert len(await book.spans("cam", T0, T0 + 3 * DAY)) > 100  # gaps were made
    finally:
        await index.close()


async def test_long_and_overlapping_recordings_give_the_same_spans(tmp_path: Path) -> None:
    """Recordings of an hour and more (over the hours after theirs), and short ones that
    overlap them or each other, named on their own clocks: the same spans still."""
    chance = random.Random(9)
    recordings, at = [], T0
    for n in range(600):
        seconds = chance.choice([10, 10, 10, 3_700, 5_400, 30])
        recordings.append(_recording(n, at, seconds, chance.randrange(1 << 33)))
        at += chance.choice([10 * S, 10 * S, 40 * S, -5 * S, 3_600 * S, 600 * S])
    recordings.sort(key=lambda r: r.start_us)
    index = await _index(tmp_path, recordings)
    try:
        book = SpanBook(index, S)
        end = max(r.end_us for r in recordings)
        for _ in range(80):
            low = T0 + chance.randrange(-3_600, (end - T0) // S) * S + chance.randrange(S)
            high = min(low + chance.randrange(1, 4 * 86_400) * S, low + MAX_RANGE_US)
            assert await book.spans("cam", low, high) == _expected(recordings, low, high)
    finally:
        await index.close()


async def test_a_change_drops_the_hours_it_touches(tmp_path: Path) -> None:
    """Kept hours follow the index: a recording filling a gap joins two spans, one
    removed splits one, one appended extends the last."""
    recordings = [_recording(n, T0 + n * 10 * S, 10, n * 900_000) for n in range(720)]
    gap = recordings.pop(360)  # 08:59:60 to 09:00:10 missing
    index = await _index(tmp_path, recordings)
    try:
        book = SpanBook(index, S)
        day = (T0 - HOUR_US, T0 + 3 * HOUR_US)
        assert len(await book.spans("cam", *day)) == 2
        await index.put([gap])
        assert await book.spans("cam", *day) == [Span(T0, T0 + 7_200 * S, 720)]
        await index.remove([recordings[100].path])
        assert len(await book.spans("cam", *day)) == 2
        later = _recording(720, T0 + 7_200 * S, 10, 720 * 900_000)
        await index.put([later])
        assert (await book.spans("cam", *day))[-1].end_us == T0 + 7_210 * S
    finally:
        await index.close()


def test_the_recordings_range_is_as_asked_or_the_31_days_up_to_the_last() -> None:
    assert recordings_range(T0, T0 + DAY, None) == (T0, T0 + DAY)
    assert recordings_range(T0, None, None) == (T0, T0 + 31 * DAY)
    assert recordings_range(None, T0, None) == (T0 - 31 * DAY, T0)
    assert recordings_range(None, None, T0) == (T0 - 31 * DAY, T0)
    # October in Paris, 31 days and the hour the change to winter time repeats: one query.
    october = (utc("2026-09-30T22:00:00Z"), utc("2026-10-31T23:00:00Z"))
    assert october[1] - october[0] == 31 * DAY + 3_600 * S
    assert recordings_range(*october, None) == october
    # Antarctica/Troll's October: +02 to +00, 746 hours.
    troll = (utc("2026-09-30T22:00:00Z"), utc("2026-11-01T00:00:00Z"))
    assert troll[1] - troll[0] == MAX_RANGE_US
    assert recordings_range(*troll, None) == troll
    with pytest.raises(BadRequest, match="at most 31 days"):
        recordings_range(T0, T0 + MAX_RANGE_US + 1, None)


async def test_recordings_without_a_range_answer_the_31_days_up_to_the_last(
    tmp_path: Path, footage: dict[str, Any], start_agent: Any
) -> None:
    """Footage 40 days ago and today: without `from`/`to` only today's is answered; a
    range over 31 days is refused with a sentence."""
    config = make_config(tmp_path)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0 - 40 * DAY)
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    client = await started(start_agent, config)
    answer = await client.get("/api/cameras/cam/recordings")
    assert answer.status == 200
    body = await answer.json()
    assert [(s["from"], s["to"], s["segment_count"]) for s in body["spans"]] == [
        ("2026-11-20T08:00:00Z", "2026-11-20T08:00:06Z", 3)
    ]
    old = await client.get("/api/cameras/cam/recordings?to=2026-10-12T00:00:00Z")
    assert [s["segment_count"] for s in (await old.json())["spans"]] == [3]
    far = await client.get(
        "/api/cameras/cam/recordings?from=2026-10-01T00:00:00Z&to=2026-11-21T00:00:00Z"
    )
    assert far.status == 400
    assert "at most 31 days" in (await far.json())["error"]
