"""Layouts: presets, templates, time zones, and names that do not match."""

from __future__ import annotations

import pytest

from agent.layout import make_layout
from agent.times import parse_rfc3339

T0 = parse_rfc3339("2026-11-20T08:05:07Z", "t")


@pytest.mark.parametrize(
    ("preset", "relpath", "micro"),
    [
        ("ffmpeg", "cam-1/2026-11-20/08-05-07.ts", 0),
        ("mediamtx", "cam-1/2026-11-20_08-05-07-250000.mp4", 250_000),
        ("frigate", "2026-11-20/08/cam-1/05.07.mp4", 0),
    ],
)
def test_presets_parse_and_format(preset: str, relpath: str, micro: int) -> None:
    layout = make_layout(preset, "UTC")
    name = layout.parse(relpath)
    assert name is not None
    assert (name.camera, name.start_us) == ("cam-1", T0 + micro)
    assert layout.format("cam-1", T0 + micro) == relpath


def test_timezone_of_names_is_converted_to_utc() -> None:
    layout = make_layout("ffmpeg", "Europe/Paris")
    name = layout.parse("door/2026-11-20/09-05-07.ts")  # CET is UTC+1 in November
    assert name is not None
    assert name.start_us == T0
    summer = layout.parse("door/2026-07-01/10-00-00.ts")  # CEST is UTC+2
    assert summer is not None
    assert summer.start_us == parse_rfc3339("2026-07-01T08:00:00Z", "t")


@pytest.mark.parametrize(
    "relpath",
    [
        "cam/2026-11-20/08-05-07.mp4",  # wrong extension
        "cam/2026-11-20/08-05-07.ts.tmp",  # a file still being written under a temp name
        "cam/2026-11-20/8-5-7.ts",
        "cam/2026-02-30/08-05-07.ts",  # no such day
        "cam/2026-11-20/25-00-00.ts",  # no such hour
        "cam/sub/2026-11-20/08-05-07.ts",
        "../2026-11-20/08-05-07.ts",
        "ca m/2026-11-20/08-05-07.ts",
        "notes.txt",
    ],
)
def test_names_that_do_not_match_are_ignored(relpath: str) -> None:
    assert make_layout("ffmpeg", "UTC").parse(relpath) is None


def test_the_shape_alone_is_checked_cheaply_before_a_name_is_parsed() -> None:
    layout = make_layout("ffmpeg", "UTC")
    assert layout.may_match("cam/2026-11-20/08-05-07.ts")
    assert layout.may_match("cam/2026-02-30/08-05-07.ts")  # parse says no to that day
    assert not layout.may_match("cam/2026-11-20/08-05-07.ts.tmp")
    assert not layout.may_match("cam/2026-11-20/8-5-7.ts")


def test_repeated_fields_must_agree() -> None:
    layout = make_layout("{camera}/%Y/%Y-%m-%d_%H%M%S.ts", "UTC")
    assert layout.parse("c/2026/2026-11-20_080507.ts") is not None
    assert layout.parse("c/2025/2026-11-20_080507.ts") is None


def test_directories_are_pruned_by_their_level() -> None:
    layout = make_layout("frigate", "UTC")
    assert layout.depth == 4
    assert layout.dir_may_match(0, "2026-11-20")
    assert not layout.dir_may_match(0, "clips")
    assert layout.dir_may_match(1, "08")
    assert layout.dir_may_match(2, "front")
    assert not layout.dir_may_match(3, "anything")  # files live at the last level


def test_name_resolution() -> None:
    assert make_layout("ffmpeg", "UTC").name_resolution_us == 1_000_000
    assert make_layout("mediamtx", "UTC").name_resolution_us == 1
