"""Sessions on disk: restarts, crash leftovers, the sweep, failures of ffmpeg."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent import sessions as sessions_module
from agent import stored as stored_module
from agent.app import create_app
from agent.demo import Rendered
from agent.ids import new_session_id as new_id
from agent.index import Index
from agent.keys import INDEX, SESSIONS
from agent.playlists import RECORDED, MediaItem, Plan
from agent.sessions import SessionStore
from agent.stored import FORMAT, Stored
from agent.sweep import is_stray, sweep_once

from .conftest import (
    at,
    fetch_all,
    got,
    make_config,
    post,
    scan_complete,
    start_with,
    wait_for,
)
from .players import run
from .test_index import S, seg


async def test_sessions_survive_a_restart(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, aiohttp_client: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "mp4")
    _, kept = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    _, deleted = await post(client, {"camera_id": "cam", "from": at(0), "to": at(3)})
    await client.delete(f"/api/playback/{deleted['id']}")
    locks = await client.server.app[INDEX].locked_paths()
    await client.close()

    config = make_config(tmp_path, recordings={"layout": "frigate"})
    playback = config.playback.dir
    # What a kill -9 can leave: a half-created session, a half-made segment, a stale lock.
    (playback / f".{new_id()}.creating").mkdir()
    (playback / kept["id"] / ".s000001.ts.1234.tmp").write_bytes(b"half")
    (playback / f".{new_id()}.deleting").mkdir()
    client = await aiohttp_client(create_app(config))
    app = client.server.app
    await app[SESSIONS].ready()
    assert await app[INDEX].locked_paths() == locks
    got = await client.get(f"/api/playback/{kept['id']}")
    assert got.status == 200
    assert (await got.json())["expires_at"] == kept["expires_at"]
    assert (await client.get(f"/api/playback/{deleted['id']}")).status == 404
    assert sorted(p.name for p in playback.iterdir()) == [kept["id"]]
    assert not list((playback / kept["id"]).glob(".*"))
    assert len(await fetch_all(client, kept, tmp_path / "after")) == 6


async def test_a_restart_reads_summaries_and_plans_on_demand(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, aiohttp_client: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    sessions = [
        (await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)}))[1] for _ in range(3)
    ]
    locks = await client.server.app[INDEX].locked_paths()
    await client.close()
    config = make_config(tmp_path)
    playback = config.playback.dir
    first, second, third = (playback / s["id"] for s in sessions)
    # A session written by the previous format (everything in session.json) is converted.
    old = json.loads((second / "session.json").read_text())
    old.update(json.loads((second / "plan.json").read_text()), format=2)
    del old["segment_count"]
    (second / "session.json").write_text(json.dumps(old))
    (second / "plan.json").unlink()
    # A plan.json that went bad: its session answers 404 with a sentence, the agent stays.
    (third / "plan.json").write_text("{")
    # The index is lost; a stale lock of a session that is gone must not come back.
    config.index.database.unlink()

    client = await aiohttp_client(create_app(config))
    app = client.server.app
    store = app[SESSIONS]
    await store.ready()
    # Each session locks its range again, from its session.json: no plan is read.
    assert set(store.sessions) == {s["id"] for s in sessions}
    # The locks come back at once; the recordings they cover, as the new index's scan
    # finds them again.
    await wait_for(lambda: scan_complete(client), what="the new index's scan")
    assert await app[INDEX].locked_paths() == locks
    assert store._plans == {}
    response = await client.get(sessions[2]["playlist_url"].replace("index.m3u8", "s000000.ts"))
    assert response.status == 404  # the bad plan: a sentence, the agent stays
    assert "cannot be read" in (await response.json())["error"]
    assert json.loads((second / "session.json").read_text())["format"] == FORMAT
    assert (second / "plan.json").is_file()
    store._plans.clear()  # as after a restart whose locks were whole: nothing read yet
    assert len(await fetch_all(client, sessions[0], tmp_path / "after")) == 6
    assert list(store._plans) == [sessions[0]["id"]]

    await client.close()

    # Restarted with the index whole, plus a stale lock of a session that never was.
    with sqlite3.connect(config.index.database) as db:
        db.execute("INSERT INTO locks VALUES (?, 'cam', 0, ?)", (new_id(), 10**18))
    client = await aiohttp_client(create_app(config))
    app = client.server.app
    store = app[SESSIONS]
    await store.ready()
    assert store._plans == {}  # no plan was read at start
    assert await app[INDEX].locked_paths() == locks
    (first / "plan.json").write_text("{")  # a plan that went bad while the agent ran
    response = await client.get(sessions[0]["playlist_url"].replace("index.m3u8", "s000000.ts"))
    assert response.status == 404
    assert "cannot be read" in (await response.json())["error"]
    assert len(await fetch_all(client, sessions[1], tmp_path / "converted")) == 6
    assert (await client.get("/healthz")).status == 200


async def test_requests_wait_for_the_sessions_being_loaded(
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    start_agent: Any,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    await client.close()
    # Loading held up, as with tens of thousands of sessions on a slow card.
    gate = threading.Event()
    read = stored_module.read_summary

    def held_up(directory: Path, name: str) -> Any:
        gate.wait(30)
        return read(directory, name)

    monkeypatch.setattr(sessions_module, "read_summary", held_up)
    client = await aiohttp_client(create_app(make_config(tmp_path)))
    try:
        health = await (await client.get("/healthz")).json()
        assert health["sessions"]["loading"] is True
        waiting = [
            asyncio.ensure_future(client.get(f"/api/playback/{session['id']}")),
            asyncio.ensure_future(client.get(session["playlist_url"])),
        ]
        await client.get("/healthz")  # a round trip later, they are still waiting
        assert not any(request.done() for request in waiting)
    finally:
        gate.set()
    assert [(await request).status for request in waiting] == [200, 200]
    health = await (await client.get("/healthz")).json()
    assert health["sessions"]["loading"] is False
    assert health["sessions"]["live"] == 1


def _store(tmp_path: Path, index: Index, now: list[float]) -> SessionStore:
    return SessionStore(tmp_path / "playback", 600, index, clock=lambda: now[0])


def _plan() -> Plan:
    item = MediaItem(
        name="s000000.ts",
        source="cam/a.ts",
        kind=RECORDED,
        duration=2.0,
        pdt_us=0,
        discontinuity=False,
        size=100,
    )
    return Plan((item,), 0.0)


async def test_sweep_expires_sessions_and_strays(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3", {"t": "1"})
    await index.open()
    try:
        now = [1_800_000_000.0]
        store = _store(tmp_path, index, now)
        await store.load()
        a, b = seg("cam", 0), seg("cam", 10)  # [0, 10 s) and [10 s, 20 s)
        await index.put([a, b, seg("cam", 20)])
        watched = await store.create("cam", 0, 10 * S, [a.path], _plan())
        idle = await store.create("cam", 5 * S, 15 * S, [a.path, b.path], _plan())
        building = await store.create("cam", 10 * S, 20 * S, [b.path], _plan())
        held = store.hold(building.id)  # a media build is working on it
        held.__enter__()
        stray_old = store.directory / "leftover-old"
        stray_new = store.directory / "leftover-new"
        stray_old.mkdir()
        stray_new.mkdir()
        os.utime(stray_old, (time.time() - 7200, time.time() - 7200))
        assert await index.locked_paths() == {a.path: 2, b.path: 2}

        now[0] += 550
        store.touch(watched)  # a viewer fetched something: another TTL from now
        now[0] += 100
        await sweep_once(store)
        assert set(store.sessions) == {watched.id, building.id}
        assert not (store.directory / idle.id).exists()
        assert await index.locked_paths() == {a.path: 1, b.path: 1}
        assert not stray_old.exists()
        assert stray_new.exists()
        on_disk = json.loads((store.directory / watched.id / "session.json").read_text())
        assert on_disk["expires_at"] == watched.public()["expires_at"]  # written through

        held.__exit__(None, None, None)
        now[0] += 3600
        await sweep_once(store)
        assert store.sessions == {}
        assert await index.locked_paths() == {}
    finally:
        await index.close()


def test_stray_policy() -> None:
    sid = new_id()
    assert is_stray("junk", True, 0, 100, 10, set())
    assert not is_stray("junk", True, 95, 100, 10, set())
    assert not is_stray("junk", False, 0, 100, 10, set())
    assert not is_stray(sid, True, 0, 100, 10, {sid})
    assert not is_stray(f".{sid}.creating", True, 0, 100, 10, {sid})
    assert is_stray(f".{sid}.creating", True, 0, 100, 10, set())


async def test_watching_extends_the_expiry(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    later = [0.0]
    client = await start_with(
        start_agent, tmp_path, footage, "ts", clock=lambda: time.time() + later[0]
    )
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(4)})
    later[0] = 1800
    await client.get(session["playlist_url"])
    after = await (await client.get(f"/api/playback/{session['id']}")).json()
    assert after["expires_at"] > session["expires_at"]
    later[0] = 7200  # nobody watched for two hours
    assert (await client.get(f"/api/playback/{session['id']}")).status == 404


async def test_a_damaged_recording_is_a_clear_error_and_the_rest_plays(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """In a re-boxed session (plain MP4 recordings), a recording replaced by garbage or
    deleted by someone else answers 404 with a sentence; the others play on."""
    client = await start_with(start_agent, tmp_path, footage, "mp4")
    _, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)})
    base = session["playlist_url"].rsplit("/", 1)[0]
    root = tmp_path / "recordings"
    sources = sorted(root.rglob("*.mp4"))
    size = sources[1].stat().st_size
    sources[1].write_bytes(b"\0" * 4096)  # a corrupt recording, cut short
    sources[2].unlink()  # a recording deleted by someone else
    corrupt = await client.get(f"{base}/s000001.m4s")
    assert corrupt.status == 404
    assert f"was cut short (4096 of {size} bytes)" in (await corrupt.json())["error"]
    missing = await client.get(f"{base}/s000002.m4s")
    assert missing.status == 404
    assert "no longer on disk" in (await missing.json())["error"]
    assert await got(client, f"{base}/s000000.m4s") == 200  # the agent goes on
    assert await got(client, f"{base}/s000003.m4s") == 200
    assert (await client.get("/healthz")).status == 200


async def test_without_ffmpeg_every_style_plays_and_health_is_ok(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """No ffmpeg on the box: sessions of plain MP4 (re-boxed) play and export, /healthz
    says ffmpeg is missing and is still "ok"."""
    client = await start_with(
        start_agent, tmp_path, footage, "mp4", ffmpeg={"ffmpeg": "/nonexistent/ffmpeg"}
    )
    status, session = await post(client, {"camera_id": "cam", "from": at(0), "to": at(5)})
    assert status == 201
    for name in ("i000000.mp4", "s000000.m4s", "clip.mp4"):
        assert await got(client, session["playlist_url"].replace("index.m3u8", name)) == 200
    health = await (await client.get("/healthz")).json()
    assert health["ffmpeg"] is False
    assert health["status"] == "ok", health["problems"]


async def test_many_concurrent_reboxed_segments_all_answer(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Four sessions' every segment and init section asked for at once: each answers 200
    with whole boxes, and /healthz answers meanwhile (no ffmpeg: none is configured)."""
    client = await start_with(
        start_agent, tmp_path, footage, "hevc_mp4", ffmpeg={"ffmpeg": "/nonexistent/ffmpeg"}
    )
    sessions = [
        (await post(client, {"camera_id": "cam", "from": at(0), "to": at(26)}))[1] for _ in range(4)
    ]
    names = [f"s{n:06d}.m4s" for n in range(6)] + [f"i{n:06d}.mp4" for n in range(6)]
    urls = [s["playlist_url"].replace("index.m3u8", name) for s in sessions for name in names]

    async def get(url: str) -> tuple[int, bytes]:
        response = await client.get(url)
        return response.status, await response.read()

    results, health = await asyncio.gather(
        asyncio.gather(*(get(u) for u in urls)), client.get("/healthz")
    )
    assert health.status == 200
    for url, (status, body) in zip(urls, results, strict=True):
        assert status == 200, url
        assert body[4:8] == (b"moof" if url.endswith(".m4s") else b"ftyp"), url


async def test_no_disk_headroom_is_507(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(
        start_agent, tmp_path, footage, "mp4", admission={"min_free_disk_mb": 1 << 30}
    )
    status, body = await post(client, {"camera_id": "cam", "from": at(0), "to": at(5)})
    assert status == 507
    assert list(body) == ["error"]
    assert list((tmp_path / "state" / "playback").iterdir()) == []


async def test_viewers_are_served_while_the_cpu_is_busy(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """With system CPU held over the limit by other work, a re-boxed session (plain MP4
    recordings) still plays to the end and its export downloads: nothing either needs
    waits for the CPU rule (the export was refused with 503 after 5 s when ffmpeg made
    it)."""
    client = await start_with(
        start_agent,
        tmp_path,
        footage,
        "mp4",
        admission={"max_cpu_percent": 50, "queue_timeout_seconds": 1},
    )
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:

        async def busy() -> bool:
            state = (await (await client.get("/healthz")).json())["admission"]
            return bool(state["cpu_percent"] > 50)

        await wait_for(busy, what="system CPU over the limit")
        _, session = await post(client, {"camera_id": "cam", "from": at(0.5), "to": at(26)})
        url = str(client.make_url(session["playlist_url"]))
        code, out = await run("ffmpeg", "-nostdin", "-v", "error", "-i", url, "-f", "null", "-")
        assert code == 0
        assert out == ""
        clip = session["playlist_url"].replace("index.m3u8", "clip.mp4")
        assert await got(client, clip) == 200
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


async def test_sessions_are_capped(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts", playback={"max_sessions": 2})
    body = {"camera_id": "cam", "from": at(0), "to": at(4)}
    first = (await post(client, body))[1]
    assert (await post(client, body))[0] == 201
    response = await client.post("/api/playback", json=body)
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert "playback.max_sessions" in (await response.json())["error"]
    health = await (await client.get("/healthz")).json()
    assert {**health["sessions"], "plans": None} == {
        "live": 2, "max": 2, "loading": False, "plans": None
    }  # fmt: skip
    assert (await client.delete(f"/api/playback/{first['id']}")).status == 204
    assert (await post(client, body))[0] == 201


async def test_concurrent_posts_never_overshoot_the_cap(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Sixty POSTs at once against a cap of twenty: twenty sessions, forty 503s."""
    client = await start_with(start_agent, tmp_path, footage, "ts", playback={"max_sessions": 20})
    body = {"camera_id": "cam", "from": at(0), "to": at(4)}
    answers = await asyncio.gather(*(post(client, body) for _ in range(60)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] * 20 + [503] * 40
    health = await (await client.get("/healthz")).json()
    assert health["sessions"]["live"] == 20


async def test_concurrent_posts_all_answer_and_lock(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """Sixteen clients creating sessions at once: every POST answers 201, and the locks
    are exactly the sessions' segments (the index's writer is never misused)."""
    client = await start_with(start_agent, tmp_path, footage, "ts")
    body = {"camera_id": "cam", "from": at(0), "to": at(26)}

    async def client_posts() -> list[int]:
        return [(await post(client, body))[0] for _ in range(10)]

    results = await asyncio.gather(*(client_posts() for _ in range(16)))
    assert {status for statuses in results for status in statuses} == {201}
    locks = await client.server.app[INDEX].locked_paths()
    assert sorted(locks.values()) == [160] * 6


def _as_format_3(directory: Path) -> None:
    """Rewrite a session as the previous agent wrote it: session.json format 3, plan.json
    format 3 (each item named, its shifts on the session's timeline, no offset)."""
    plan = Stored.from_json(json.loads((directory / "plan.json").read_text())).plan
    old = json.loads((directory / "plan.json").read_text())
    names = ["name", *old["media_fields"]]
    served = [dataclasses.asdict(plan.at(n)) for n in range(len(plan.items))]
    old.update(format=3, media_fields=names, media=[[i[k] for k in names] for i in served])
    del old["offset"]
    (directory / "plan.json").write_text(json.dumps(old))
    summary = json.loads((directory / "session.json").read_text())
    (directory / "session.json").write_text(json.dumps({**summary, "format": 3}))


async def test_an_upgrade_keeps_live_sessions_and_their_locks(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any, aiohttp_client: Any
) -> None:
    client = await start_with(start_agent, tmp_path, footage, "ts")
    _, session = await post(client, {"camera_id": "cam", "from": at(0.5), "to": at(25)})
    before = await fetch_all(client, session, tmp_path / "before")
    locks = await client.server.app[INDEX].locked_paths()
    assert locks
    await client.close()
    config = make_config(tmp_path)
    _as_format_3(config.playback.dir / session["id"])

    client = await aiohttp_client(create_app(config))
    await client.server.app[SESSIONS].ready()
    assert await client.server.app[INDEX].locked_paths() == locks
    response = await client.get(f"/api/playback/{session['id']}")
    assert response.status == 200
    assert (await response.json())["expires_at"] == session["expires_at"]
    after = await fetch_all(client, session, tmp_path / "after")
    assert [p.read_bytes() for p in after] == [p.read_bytes() for p in before]


async def test_a_session_unreadable_at_start_keeps_its_locks_until_swept(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3", {"t": "1"})
    await index.open()
    try:
        now = [time.time()]
        store = _store(tmp_path, index, now)
        await store.load()
        a = seg("cam", 0)
        await index.put([a])
        kept = await store.create("cam", 0, 10 * S, [a.path], _plan())
        gone = await store.create("cam", 0, 10 * S, [a.path], _plan())
        assert await index.locked_paths() == {a.path: 2}
        # A restart that cannot read one session (an I/O error, say), whose other one's
        # directory is gone: only the lock of the one that is gone is dropped.
        meta = store.directory / kept.id / "session.json"
        meta.rename(meta.with_name("moved"))
        meta.mkdir()
        shutil.rmtree(store.directory / gone.id)
        store = _store(tmp_path, index, now)
        await store.load()
        assert store.sessions == {}
        assert await index.locked_paths() == {a.path: 1}
        # The sweep removes the unreadable directory once older than the TTL, and its lock.
        old = time.time() - 7200
        os.utime(store.directory / kept.id, (old, old))
        await sweep_once(store)
        assert not (store.directory / kept.id).exists()
        assert await index.locked_paths() == {}
    finally:
        await index.close()
