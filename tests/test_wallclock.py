"""Recordings named in local time across daylight-saving changes (layout.py, wallclock.py,
the indexer): each file placed at the instant it was recorded, however its name reads."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.demo import Rendered
from agent.layout import make_layout
from agent.times import format_us, parse_rfc3339
from agent.wallclock import MTIME_TRUSTED_US, How, chosen, place

from .conftest import (
    SEGMENT_US,
    S,
    camera_counts,
    make_config,
    post,
    record,
    started,
    utc,
    wait_for,
)
from .hls import parse
from .test_index import seg

PARIS = "Europe/Paris"
SYDNEY = "Australia/Sydney"  # the southern hemisphere: summer time ends in April


# --- names ------------------------------------------------------------------------------


def test_a_name_of_the_repeated_hour_means_two_instants_and_one_of_the_skipped_none() -> None:
    layout = make_layout("ffmpeg", PARIS)
    autumn = layout.parse("cam/2026-10-25/02-30-00.ts")
    assert autumn is not None
    assert autumn.instants == (utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:30:00Z"))
    assert autumn.ambiguous
    assert not autumn.gap
    spring = layout.parse("cam/2026-03-29/02-30-00.ts")
    assert spring is not None
    assert spring.gap
    assert spring.instants == ()
    plain = layout.parse("cam/2026-10-25/04-00-00.ts")
    assert plain is not None
    assert plain.instants == (utc("2026-10-25T03:00:00Z"),)
    assert not plain.ambiguous
    # Sydney: 02:30 on 5 April 2026 comes twice (AEDT, then AEST).
    south = make_layout("ffmpeg", SYDNEY).parse("cam/2026-04-05/02-30-00.ts")
    assert south is not None
    assert south.instants == (utc("2026-04-04T15:30:00Z"), utc("2026-04-04T16:30:00Z"))


def test_a_name_with_its_offset_means_one_instant_and_says_when_the_zone_disagrees() -> None:
    layout = make_layout("{camera}/%Y-%m-%d/%H-%M-%S%z.ts", PARIS)
    first = layout.parse("cam/2026-10-25/02-30-00+0200.ts")
    second = layout.parse("cam/2026-10-25/02-30-00+0100.ts")
    assert first is not None
    assert second is not None
    assert (first.start_us, second.start_us) == (
        utc("2026-10-25T00:30:00Z"),
        utc("2026-10-25T01:30:00Z"),
    )
    assert first.offset
    assert not first.disagrees
    assert not second.disagrees
    wrong = layout.parse("cam/2026-10-25/12-00-00+0500.ts")
    assert wrong is not None
    assert wrong.start_us == utc("2026-10-25T07:00:00Z")  # the name's offset is taken
    assert wrong.disagrees
    assert layout.parse("cam/2026-10-25/12-00-00+2400.ts") is None
    assert layout.parse("cam/2026-10-25/12-00-00+0160.ts") is None
    # A layout writes the offset it reads.
    assert layout.format("cam", utc("2026-10-25T01:30:00Z")) == "cam/2026-10-25/02-30-00+0100.ts"


def test_place_decides_by_the_modification_time() -> None:
    name = make_layout("ffmpeg", PARIS).parse("cam/2026-10-25/02-30-00.ts")
    assert name is not None
    early, late = name.instants
    ten = 10 * S
    assert place(name, ten, late + ten + 2 * S) == place(name, ten, late + ten)
    assert place(name, ten, late + ten).start_us == late
    assert place(name, ten, late + ten).how is How.MTIME
    assert place(name, ten, early + ten + 5 * S).start_us == early
    # Half-way between, far off, or missing: undecided, both instants offered.
    for mtime in (early + ten + 1800 * S, late + ten + 5 * 3600 * S, None):
        undecided = place(name, ten, mtime)
        assert undecided.how is How.UNDECIDED
        assert undecided.candidates == (early, late)
    gap = make_layout("ffmpeg", PARIS).parse("cam/2026-03-29/02-30-00.ts")
    assert gap is not None
    mtime = utc("2026-03-29T01:10:10Z")
    assert place(gap, ten, mtime).start_us == mtime - ten
    assert place(gap, ten, mtime).how is How.GAP
    # A gap name's file copied or touched later is not moved to that day: undecided.
    for far in (gap.start_us + ten + MTIME_TRUSTED_US + S, utc("2027-01-15T00:00:00Z"), None):
        assert place(gap, ten, far).how is How.UNDECIDED


def _written(start_s: int, duration_s: int, mtime: int, size: int = 0) -> Any:
    """A recording of 100 kB a second (or `size` bytes), written at `mtime`."""
    found = seg("cam", start_s, duration_s)
    return replace(found, path=f"{found.path}.{mtime}", mtime_ns=mtime,
                   size=size or 100_000 * duration_s)  # fmt: skip


def test_of_two_recordings_of_the_same_time_the_later_written_is_kept() -> None:
    a, b, c = _written(0, 10, 1), _written(10, 10, 5), _written(10, 10, 9)
    d, e = _written(19, 10, 2), _written(29, 10, 3)  # overlap by a second: neighbours
    assert chosen([a, b, c, d, e]) == ([a, c, d, e], [b], [])
    assert chosen([a, c, b, d]) == ([a, c, d], [b], [])
    # A short newer file inside a long one does not drop the long one.
    long, short = _written(100, 60, 1), _written(110, 2, 9)
    assert chosen([long, short]) == ([long, short], [], [])
    # What the chain chose before is replaced by one of its time written later, and
    # kept over one written before it.
    assert chosen([_written(10, 10, 99)], before=c) == ([_written(10, 10, 99)], [c], [])
    assert chosen([_written(10, 10, 1), e], before=c) == ([e], [_written(10, 10, 1)], [])


def test_a_file_whose_next_recording_shows_its_duration_false_is_left_out() -> None:
    """Five hours claimed in 376 kB (timestamps that jump between frames), the camera's
    10-second files starting inside them: those are played, not it."""
    false = _written(0, 5 * 3600, 1, size=376_000)
    real = [_written(20 + 10 * n, 10, 2) for n in range(3)]
    assert chosen([false, *real]) == (real, [], [false])
    # Known before the next recordings arrived: left out once they do.
    assert chosen(real, before=false) == (real, [], [false])
    # Overlapping the next by less than 2 s, or as dense as it (a long file of the
    # camera's own bit rate), it is believed.
    brief = _written(0, 21, 1, size=1000)
    assert chosen([brief, *real]) == ([brief, *real], [], [])
    dense = _written(0, 5 * 3600, 1)
    assert chosen([dense, *real]) == ([dense, *real], [], [])
    # A camera's night file at a tenth of its day rate, and one beside a file of a frame
    # (80 kB in 40 ms): believed.
    night = _written(0, 3600, 1, size=10_000 * 3600)
    assert chosen([night, _written(1800, 10, 2)])[2] == []
    frame = replace(_written(1800, 1, 2, size=80_000), end_us=1800 * S + 40_000)
    assert chosen([dense, frame])[2] == []
    # Denser than 1/100 of the next: believed; sparser: not.
    edge = 5 * 3600 * 100_000 // 100
    assert chosen([_written(0, 5 * 3600, 1, size=edge + 1), real[0]])[2] == []
    assert chosen([_written(0, 5 * 3600, 1, size=edge - 1), real[0]])[2] != []


# --- the agent on such footage ----------------------------------------------------------


async def spans(client: Any, query: str = "") -> list[tuple[str, str]]:
    """The camera's spans: of the 31 days up to its last recording, or as `query` asks."""
    answer = await client.get(f"/api/cameras/cam/recordings{query}")
    assert answer.status == 200, await answer.text()
    return [(span["from"], span["to"]) for span in (await answer.json())["spans"]]


async def indexed(client: Any, files: int) -> None:
    async def done() -> bool:
        return (await camera_counts(client)).get("cam", 0) == files

    await wait_for(done, what=f"{files} recordings indexed")


async def played_once_in_order(client: Any, from_us: int, to_us: int) -> None:
    """A session over [from, to): each entry's wall-clock time (from the last
    PROGRAM-DATE-TIME on) follows the one before without a jump back or forth."""
    status, session = await post(
        client, {"camera_id": "cam", "from": format_us(from_us), "to": format_us(to_us)}
    )
    assert status == 201, session
    playlist = parse(await (await client.get(session["playlist_url"])).text())
    wall = None
    for entry in playlist.entries:
        if entry.pdt is not None:
            here = parse_rfc3339(entry.pdt, "pdt")
            if wall is not None:
                assert abs(here - wall) < 100_000, (entry.uri, format_us(here), format_us(wall))
            wall = here
        assert wall is not None
        wall += round(entry.duration * S)
    assert wall is not None
    assert abs(wall - to_us) < 100_000
    first = playlist.entries[0].pdt
    assert first is not None
    assert from_us - SEGMENT_US <= parse_rfc3339(first, "pdt") <= from_us


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        (PARIS, "2026-10-25T01:00:00Z"),  # CEST to CET: 02:00-03:00 local twice
        (PARIS, "2026-03-29T01:00:00Z"),  # CET to CEST: 02:00-03:00 local skipped
        (SYDNEY, "2026-04-04T16:00:00Z"),  # AEDT to AEST
        (SYDNEY, "2026-10-03T16:00:00Z"),  # AEST to AEDT
    ],
)
async def test_footage_across_a_change_is_one_span_played_once_in_order(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, zone: str, change: str
) -> None:
    """Two minutes either side of a change, named in local time: one continuous span at
    the right instants, and a session over it plays every file once, in order."""
    config = make_config(tmp_path, recordings={"timezone": zone})
    begin, end = utc(change) - 120 * S, utc(change) + 120 * S
    written = record(footage["ts"], config.recordings.root, config.layout, "cam", begin, end)
    client = await started(start_agent, config)
    await indexed(client, len(written))
    assert await spans(client) == [(format_us(begin), format_us(end))]
    await played_once_in_order(client, begin, end)


async def test_a_recorder_that_overwrites_the_repeated_hour_leaves_a_real_gap(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Names repeat in the autumn's second pass and the recorder writes over the first
    pass's files: what is left is the later hour's (placed there), and the earlier
    hour's overwritten part is a gap, not a false span."""
    config = make_config(tmp_path, recordings={"timezone": PARIS})
    first = utc("2026-10-25T00:00:00Z")  # 02:00 CEST
    second = utc("2026-10-25T01:00:00Z")  # 02:00 CET, the same names again
    root, layout = config.recordings.root, config.layout
    record(footage["ts"], root, layout, "cam", first, first + 120 * S)
    record(footage["ts"], root, layout, "cam", second, second + 60 * S)  # over the first minute
    client = await started(start_agent, config)
    await indexed(client, 60)
    assert await spans(client) == [
        (format_us(first + 60 * S), format_us(first + 120 * S)),
        (format_us(second), format_us(second + 60 * S)),
    ]


async def test_names_nothing_decides_are_placed_in_order_and_said_once(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bad input, each one warning and no misplacement passed off as sure: a name in the
    spring's skipped hour (placed by its modification time), and autumn names whose
    modification time is far off (placed where they overlap no recording, and said on
    /healthz). (A name whose offset, %z, the zone disagrees with: the unit test above.)"""
    caplog.set_level(logging.INFO)
    config = make_config(tmp_path, recordings={"timezone": PARIS})
    root, layout = config.recordings.root, config.layout
    first = utc("2026-10-25T00:10:00Z")  # 02:10 CEST, modified as recorded
    record(footage["ts"], root, layout, "cam", first, first + 6 * S)
    # Named 02:20 local (00:20 or 01:20 UTC), modified now: days from either.
    lost = record(footage["ts"], root, layout, "cam", first + 600 * S, first + 606 * S)
    for path in lost:
        os.utime(path)
    skipped = root / "cam" / "2026-03-29" / "02-30-00.ts"
    skipped.parent.mkdir(parents=True)
    shutil.copyfile(footage["ts"][0].path, skipped)
    when = utc("2026-03-29T01:30:00Z") + SEGMENT_US  # its segment ended 03:30 CEST
    os.utime(skipped, ns=(when * 1000, when * 1000))
    client = await started(start_agent, config)
    await indexed(client, 7)
    found = await spans(client)
    assert (format_us(when - SEGMENT_US), format_us(when)) in await spans(
        client, "?from=2026-03-29T00:00:00Z&to=2026-03-30T00:00:00Z"
    )
    assert (format_us(first), format_us(first + 6 * S)) in found
    # The lost-mtime files: each name's two instants are 00:20 and 01:20 UTC; none
    # overlaps a recording, so the earlier is kept; said once each, and on /healthz.
    assert (format_us(first + 600 * S), format_us(first + 606 * S)) in found
    health = await (await client.get("/healthz")).json()
    assert any("named in a repeated or skipped local hour" in p for p in health["problems"])
    said = [r.getMessage() for r in caplog.records if r.name == "agent.indexer"]
    assert sum("does not exist in Europe/Paris" in m for m in said) == 1
    assert sum("says nothing of which" in m for m in said) == 3
    assert sum("an hour Europe/Paris has twice" in m for m in said) >= 1


async def test_a_session_plays_the_later_written_of_two_recordings_of_the_same_time(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Names with offsets (%z) that say one instant twice (02:30+0200 and 00:30+0000): the
    session plays the time once, from the file written later, and the other is said
    once."""
    config = make_config(
        tmp_path,
        recordings={"timezone": PARIS, "layout": "{camera}/%Y-%m-%d/%H-%M-%S%z.ts"},
    )
    root = config.recordings.root
    begin = utc("2026-10-25T00:30:00Z")
    older = record(footage["ts"], root, config.layout, "cam", begin, begin + 6 * S)
    utc_names = make_layout("{camera}/%Y-%m-%d/%H-%M-%S%z.ts", "UTC")
    newer = record(footage["ts"], root, utc_names, "cam", begin, begin + 6 * S)
    for path in older:
        os.utime(path, ns=(begin * 1000, begin * 1000))  # written before the others
    client = await started(start_agent, config)
    await indexed(client, 6)
    status, session = await post(
        client, {"camera_id": "cam", "from": format_us(begin), "to": format_us(begin + 6 * S)}
    )
    assert status == 201, session
    playlist = parse(await (await client.get(session["playlist_url"])).text())
    assert len(playlist.entries) == 3
    assert abs(sum(e.duration for e in playlist.entries) - 6) < 0.5
    said = [r.getMessage() for r in caplog.records if "covers the same time" in r.getMessage()]
    assert sorted(said) == sorted({m for m in said})  # each once
    assert {Path(m.split()[1]).name for m in said} == {p.name for p in older}
    # A third copy of that time, written now, after the camera's chain was planned: it
    # replaces what the chain chose.
    dhaka_names = make_layout("{camera}/%Y-%m-%d/%H-%M-%S%z.ts", "Asia/Dhaka")  # +0600
    newest = record(footage["ts"], root, dhaka_names, "cam", begin, begin + 6 * S)
    for path in newest:
        os.utime(path)
    await indexed(client, 9)
    status, again = await post(
        client, {"camera_id": "cam", "from": format_us(begin), "to": format_us(begin + 6 * S)}
    )
    assert status == 201, again
    playlist = parse(await (await client.get(again["playlist_url"])).text())
    assert len(playlist.entries) == 3
    said = [r.getMessage() for r in caplog.records if "covers the same time" in r.getMessage()]
    assert {Path(m.split()[1]).name for m in said} == {p.name for p in older + newer}


async def test_a_name_whose_offset_the_zone_disagrees_with_is_said_once(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A name with %z whose offset is not the zone's then: placed by its own offset (the
    name says its instant), one warning for it."""
    config = make_config(
        tmp_path,
        recordings={"timezone": PARIS, "layout": "{camera}/%Y-%m-%d/%H-%M-%S%z.ts"},
    )
    odd = make_layout("{camera}/%Y-%m-%d/%H-%M-%S%z.ts", "Asia/Karachi")  # +0500
    begin = utc("2026-11-20T08:00:00Z")
    record(footage["ts"], config.recordings.root, odd, "cam", begin, begin + 6 * S)
    client = await started(start_agent, config)
    await indexed(client, 3)
    assert await spans(client) == [(format_us(begin), format_us(begin + 6 * S))]
    said = [r.getMessage() for r in caplog.records if "UTC offset is not" in r.getMessage()]
    assert len(said) == 1  # once for the camera, not a line a file
