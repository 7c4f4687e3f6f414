"""A camera's chain: sessions sliced from it equal sessions planned on their own, and the
chain follows the index as recordings arrive, go and change."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from agent import chains as chains_module
from agent.containers.probe import Cut
from agent.index import Index, Segment
from agent.keys import INDEX, PLAYBACK
from agent.playlists import Chain, Plan, plan_alone
from agent.stored import Stored

from .conftest import T0, S, at, camera_counts, make_config, place_old, post, start_with, wait_for
from .hls import parse
from .players import ffmpeg_errors

# Fields that depend on where a chain begins, not on the session: the wall clock is
# chained from the chain's first recording (or its last gap), counters from its first.
ANCHORED = {"pdt_us", "cc_shift"}


def _recording(n: int, start_us: int, duration: int, first: int, **facts: Any) -> Segment:
    """Recording `n` of camera `cam`: MPEG-TS, H.264, `duration` 90 kHz ticks from
    `first` (its wall-clock length `end_us` after its start, if given)."""
    return Segment(
        path=f"cam/{n:06d}.ts", camera="cam", start_us=start_us,
        end_us=start_us + facts.pop("end_us", duration * S // 90_000), size=2_500_000,
        mtime_ns=1, inode=n, container="mpegts", video_codec="h264",
        has_audio="audio_start" in facts, timescale=90_000, first_pts=first,
        duration=duration, frame_ticks=3600, **facts,
    )  # fmt: skip


def _recordings(rnd: random.Random, count: int) -> list[Segment]:
    """One camera's 10 s MPEG-TS recordings, some with timestamps that restart, some
    after gaps, with audio that starts early or late."""
    found, start_us, pts = [], T0, rnd.randrange(1 << 33)
    reset = rnd.random() < 0.5
    for n in range(count):
        duration = 900_000 + rnd.choice((0, 3600, -3600))
        if rnd.random() < 0.15:  # a gap
            start_us += rnd.randrange(S, 30 * S)
            pts += rnd.randrange(1 << 30)
        first = 0 if reset else pts % (1 << 33)
        counter = rnd.randrange(16)
        found.append(
            _recording(
                n,
                start_us,
                duration,
                first,
                audio_start=first - rnd.randrange(4000),
                audio_end=first + duration + rnd.randrange(3000),
                streams="256:1b,257:0f",
                counters=f"0:{counter}:5,256:{counter}:7,257:0:{counter}",
            )
        )
        start_us += duration * S // 90_000
        pts += duration
    return found


def _chain(recordings: list[Segment]) -> Chain:
    """A chain of MPEG-TS H.264 recordings, names with whole seconds."""
    chain = Chain(S, fragmented=False, reboxed=False)
    for segment in recordings:
        chain.append(segment)
    return chain


def _differences(alone: Plan, sliced: Plan) -> list[tuple[int, dict[str, Any]]]:
    """Where two plans' items differ as served (named, on their session's timeline), but
    for the fields a chain's beginning sets."""
    assert len(alone.items) == len(sliced.items)
    found = []
    for n in range(len(alone.items)):
        mine, theirs = dataclasses.asdict(alone.at(n)), dataclasses.asdict(sliced.at(n))
        differ = {
            name: (mine[name], theirs[name])
            for name in mine
            if mine[name] != theirs[name] and name not in {*ANCHORED, "text", "row"}
        }
        if differ:
            found.append((n, differ))
    return found


def test_a_slice_of_a_chain_is_the_session_planned_alone() -> None:
    rnd = random.Random(8)
    for _ in range(200):
        recordings = _recordings(rnd, rnd.randrange(2, 40))
        chain = _chain(recordings)
        k = rnd.randrange(len(recordings))
        m = rnd.randrange(k, len(recordings))
        head = recordings[k]
        cut = None
        if rnd.random() < 0.5:
            keyframe = (head.first_pts + rnd.randrange(1, 800_000)) % (1 << 33)
            cut = Cut(offset=18_800, pts=keyframe, prefix=(0, 188), early=(376,))
        from_us = head.start_us + rnd.randrange(9 * S)
        alone = plan_alone(recordings[k : m + 1], from_us, S, cut)
        sliced = chain.slice(k, m, from_us, cut)
        assert _differences(alone, sliced) == []
        # The served timeline starts where a session's does, whatever the chain's start.
        assert sliced.at(0).shift == alone.at(0).shift


def test_a_chain_cut_back_or_shortened_plans_as_one_planned_so() -> None:
    rnd = random.Random(9)
    for _ in range(50):
        recordings = _recordings(rnd, rnd.randrange(3, 30))
        straight = _chain(recordings)
        # Cut back to some recording and grown again: as if never cut.
        regrown = _chain(recordings)
        back = rnd.randrange(len(recordings))
        regrown.truncate(back)
        for segment in recordings[back:]:
            regrown.append(segment)
        last = len(recordings) - 1
        assert regrown.slice(0, last, T0).items == straight.slice(0, last, T0).items
        # The oldest recordings dropped: the rest of the chain stands as planned.
        dropped = rnd.randrange(1, len(recordings))
        shortened = _chain(recordings)
        shortened.drop(dropped)
        k = rnd.randrange(len(recordings) - dropped)
        whole = straight.slice(k + dropped, last, recordings[k + dropped].start_us)
        assert shortened.slice(k, last - dropped, recordings[k + dropped].start_us) == whole


def test_a_wall_clock_chained_for_days_stays_with_the_names() -> None:
    """A camera whose media clock runs 0.1 % fast: a day of its 10 s recordings adds up
    to 86 s more than the names say. The wall clock follows the names within what they
    can say (whole seconds here), however long the chain."""
    recordings = []
    for n in range(8640):
        duration = 900_900  # 10.01 s of media in 10 s of wall clock
        recordings.append(
            _recording(n, T0 + n * 10 * S, duration, (n * duration) % (1 << 33), end_us=10_010_000)
        )
    chain = _chain(recordings)
    found = chain.slice(0, len(recordings) - 1, T0)
    assert all(
        abs(item.pdt_us - segment.start_us) <= S + 60_000
        for item, segment in zip(found.items, recordings, strict=True)
    )
    # Still chained between: most recordings' times come from the one before.
    chained = sum(
        1
        for before, item in zip(found.items, found.items[1:], strict=False)
        if item.pdt_us == before.pdt_us + 10_010_000
    )
    assert chained > 0.9 * len(recordings)


def _entries(playlist: str) -> list[tuple[str, float, bool]]:
    """What a playlist says of each segment: its wall-clock time, duration, and whether
    a discontinuity comes before it."""
    return [(e.pdt, round(e.duration, 6), e.discontinuity) for e in parse(playlist).entries]


async def test_sessions_follow_recordings_that_arrive_go_and_change(
    tmp_path: Path, footage: Any, start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    chains = client.server.app[PLAYBACK].chains
    config = make_config(tmp_path)
    # After the first scan, the latest playback.max_seconds of each camera are planned.
    await asyncio.wait_for(chains.warmed.wait(), 10)
    # With their items' playlist lines and plan.json rows made, so that the first session
    # writes them as fast as a later one.
    ahead = chains._kept["cam"].chain.items
    assert ahead
    assert all(item.text and item.row for item in ahead)

    async def session(start: float, end: float) -> tuple[dict[str, Any], str]:
        status, body = await post(client, {"camera_id": "cam", "from": at(start), "to": at(end)})
        assert status == 201, body
        response = await client.get(body["playlist_url"])
        return body, await response.text()

    _, whole = await session(0.5, 25)
    assert chains.counts == {"sliced": 1, "grown": 0, "planned": 0}
    # A later session inside the chain: sliced, its every segment as in the first one,
    # the wall clock included.
    _, later = await session(3, 25)
    assert chains.counts["sliced"] == 2
    assert _entries(later)[1:] == _entries(whole)[2:]
    # New recordings: the chain grows by them.
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0 + 40 * S)

    async def indexed(count: int) -> bool:
        return await camera_counts(client) == {"cam": count}

    await wait_for(lambda: indexed(9), what="new recordings indexed")
    _, longer = await session(3, 46)
    assert chains.counts["grown"] == 1
    # The same segments; the last one's duration may now run on to the next one's start.
    assert _entries(longer)[: len(_entries(later)) - 1] == _entries(later)[:-1]
    assert len(parse(longer).entries) == len(parse(later).entries) + 3
    assert parse(longer).entries[-3].discontinuity is False  # a gap, the same streams
    # The oldest recording removed (retention): the rest of the chain stands.
    sorted(config.recordings.root.rglob("*.ts"))[0].unlink()
    await wait_for(lambda: indexed(8), what="the oldest recording forgotten")
    _, again = await session(3, 46)
    assert chains.counts == {"sliced": 3, "grown": 1, "planned": 0}
    assert _entries(again) == _entries(longer)
    # A recording rewritten in the middle: the chain is cut back to it and grows again.
    files = sorted(config.recordings.root.rglob("*.ts"))
    files[3].write_bytes(files[4].read_bytes())
    os.utime(files[3], (time.time() - 3599, time.time() - 3599))
    mtime_ns = files[3].stat().st_mtime_ns

    async def reindexed() -> bool:
        segments = await client.server.app[INDEX].segments("cam", T0, T0 + 60 * S)
        return any(s.mtime_ns == mtime_ns for s in segments)

    await wait_for(reindexed, what="the rewritten recording indexed")
    changed, after = await session(3, 46)
    assert chains.counts == {"sliced": 3, "grown": 2, "planned": 0}
    # A session that starts before the chain (planned from 04:00:26, four hours before
    # the latest recording's end): planned on a chain of its own, kept instead (one
    # recording: the first one is gone).
    await session(-14_380, 4)
    health = await (await client.get("/healthz")).json()
    assert health["sessions"]["plans"] == {
        "sliced": 3, "grown": 2, "planned": 1, "cameras_kept": 1, "recordings_kept": 1,
        "planned_ahead": True,
    }  # fmt: skip
    assert len(parse(after).entries) == len(parse(again).entries)
    assert await ffmpeg_errors(str(client.make_url(changed["playlist_url"]))) == ""


def test_a_plan_written_before_offsets_reads_as_it_was_served() -> None:
    """plan.json format 3 named each item and kept its shifts on the session's timeline;
    format 4 keeps the chain's items as they are and one offset. Both read back to the
    same items as served."""
    recordings = _recordings(random.Random(10), 12)
    sliced = _chain(recordings).slice(4, 11, recordings[4].start_us)
    assert sliced.offset != 0
    stored = Stored(sliced, [segment.path for segment in recordings[4:]])
    again = Stored.from_json(json.loads(stored.to_bytes()))
    served = [dataclasses.asdict(sliced.at(n)) for n in range(len(sliced.items))]
    assert [dataclasses.asdict(again.plan.at(n)) for n in range(len(sliced.items))] == served
    old = json.loads(stored.to_bytes())
    old.update(format=3, media_fields=["name", *old["media_fields"]])
    del old["offset"]
    shift = old["media_fields"].index("shift")
    old["media"] = [
        [item["name"], *row[: shift - 1], item["shift"], *row[shift:]]
        for item, row in zip(served, old["media"], strict=True)
    ]
    before = Stored.from_json(old)
    assert before.plan.offset == 0
    assert [dataclasses.asdict(before.plan.at(n)) for n in range(len(served))] == served


async def test_cameras_planned_ahead_past_the_cap_leave_every_post_whole(
    tmp_path: Path, footage: Any, start_agent: Any, monkeypatch: Any
) -> None:
    """A box with more cameras than the chains kept can hold: those planned ahead (which
    no session has asked for, so no lock of theirs exists) are dropped for the camera in
    use, and every camera's POST answers 201."""
    monkeypatch.setattr(chains_module, "CHAIN_LINKS_KEPT", 8)
    config = make_config(tmp_path)
    cameras = ["a", "b", "c", "d"]
    for n, camera in enumerate(cameras):  # the last placed is the most recent: planned first
        place_old(footage["ts"], config.recordings.root, config.layout, camera, T0 + n * S)
    client = await start_agent(config)
    chains = client.server.app[PLAYBACK].chains
    await asyncio.wait_for(chains.warmed.wait(), 10)
    assert 0 < chains.state()["recordings_kept"] <= 8
    assert set(chains._kept) == {"d", "c"}  # planned ahead, within the cap
    for camera in cameras:
        status, body = await post(client, {"camera_id": camera, "from": at(0), "to": at(6)})
        assert status == 201, (camera, body)
        assert chains.state()["recordings_kept"] <= 8


def test_a_chain_left_with_duplicates_alone_serves_nothing_and_never_hangs(
    tmp_path: Path,
) -> None:
    """A recording whose timestamps claimed hours made those after it duplicates; once it
    is removed (retention, or the operator), the chain holds only duplicates. Slicing
    it says it cannot serve (the session is planned anew), where a StopIteration raised
    in the worker thread used to leave the camera's POSTs waiting for good."""
    long = _recording(0, T0, 900_000 * 100, 0)  # 1,000 s: the next ones lie inside it
    inside = [_recording(n, T0 + n * 10 * S, 900_000, n * 900_000) for n in range(1, 4)]
    chain = _chain([long, *inside])
    assert [link.chosen for link in chain.links] == [True, False, False, False]
    chain.drop(1)
    config = make_config(tmp_path)
    cache = chains_module.ChainCache(config, Index(tmp_path / "i.sqlite3", {"t": "1"}))
    kept = chains_module._Kept(chain, T0, T0 + 1000 * S, 1000 * S)
    assert cache._slice(kept, T0 + 15 * S, T0 + 25 * S) is None
