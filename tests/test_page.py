"""The operator's page at `/`, served by a real agent and driven in headless Chromium over
the DevTools protocol: cameras, the day's timeline with its gaps, deep links, the wall
clock (across seeks and gaps), the keyboard, the token prompt, export and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent.demo import Rendered, render_run
from agent.page import load, settings
from agent.times import parse_rfc3339

from .conftest import (
    T0,
    S,
    at,
    camera_counts,
    make_config,
    place_old,
    record,
    start_with,
    started,
    utc,
    wait_for,
)
from .hls import parse, video_facts
from .players import Chromium, ffmpeg_errors
from .test_iframes import parse_iframes

# Real processes, players or a fuzzer: left out of the quick loop (pytest -m 'not slow').
pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
PARIS = {"recordings": {"timezone": "Europe/Paris"}}
# The page's recordings queries so far, each its query string.
RECORDINGS_QUERIES = (
    "performance.getEntriesByType('resource').map(e => e.name)"
    ".filter(n => n.includes('/recordings?')).map(n => decodeURIComponent(n.split('?')[1]))"
)


def test_settings_are_what_the_page_needs(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        playback={"window_seconds": 7200, "max_seconds": 600},
        server={"api_token": "s3cret"},
        recordings={"timezone": "Europe/Paris"},
    )
    assert settings(config) == {
        "timezone": "Europe/Paris",
        "window_seconds": 600,  # never more than a session may cover
        "token_required": True,
    }
    assert "s3cret" not in load(config)["/"].body.decode()


def test_settings_cannot_close_the_script_element(tmp_path: Path) -> None:
    html = load(make_config(tmp_path))["/"].body.decode()
    data = html.split('<script id="settings" type="application/json">')[1].split("</script>")[0]
    assert json.loads(data)["window_seconds"] == 3600
    assert "<" not in data


async def test_page_files_are_served_with_their_types_and_guards(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage)
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"
    again = await client.get("/", headers={"If-None-Match": page.headers["ETag"]})
    assert again.status == 304
    script = await client.get("/page/page.js")
    assert (script.status, script.content_type) == (200, "text/javascript")
    style = await client.head("/page/page.css")
    assert (style.status, style.content_type) == (200, "text/css")
    for name in ("nope.js", "..%2Fpage.py", "index.html"):
        missing = await client.get(f"/page/{name}")
        assert missing.status == 404
        assert "error" in await missing.json()


# -- in Chromium -----------------------------------------------------------------------------


def _when(text: str) -> float:
    return parse_rfc3339(text, "t") / S


async def _open(browser: Chromium, url: str) -> None:
    await browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=1200, height=860, deviceScaleFactor=1, mobile=False,
    )  # fmt: skip
    await browser.navigate(url)
    await browser.wait_for("document.readyState === 'complete'")


async def _key(browser: Chromium, key: str, code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        await browser.call(
            "Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code
        )


async def _screen(browser: Chromium) -> dict[str, Any]:
    """The frame on screen: the video's time, the clock and the address, read at once."""
    return dict(
        await browser.evaluate(
            "({t: document.getElementById('video').currentTime,"
            " seeking: document.getElementById('video').seeking,"
            " clock: document.getElementById('clock').dateTime,"
            " text: document.getElementById('clock').textContent,"
            " src: document.getElementById('video').src, hash: location.hash,"
            " status: document.getElementById('status').textContent})"
        )
    )


async def _wall_clock(
    client: TestClient[Any, Any], src: str, media_s: float, ended_ok: bool = False
) -> float | None:
    """Where `media_s` seconds into the playlist at `src` falls on the wall clock, from
    its PROGRAM-DATE-TIME and EXTINF lines, worked out here apart from the page. With
    `ended_ok`, None if the session has ended (a tile that renewed its window between the
    page's answer and this request ends the window it played)."""
    path = src.split(str(client.make_url("")).rstrip("/"), 1)[1]
    answer = await client.get(path)
    if ended_ok and answer.status == 404:
        return None
    playlist = parse(await answer.text())
    start = 0.0
    wall = None
    for entry in playlist.entries:
        if entry.pdt is not None:
            wall = datetime.fromisoformat(entry.pdt).timestamp()
        assert wall is not None
        if media_s < start + entry.duration:
            return wall + max(media_s - start, 0)
        start += entry.duration
        wall += entry.duration
    raise AssertionError(f"{media_s} s is past the playlist's end")


async def _clock_is_right(client: TestClient[Any, Any], browser: Chromium) -> dict[str, Any]:
    """Playing on: the clock shows the wall-clock time of the frame on screen within 1 s."""
    screen = await _screen(browser)
    expected = await _wall_clock(client, screen["src"], screen["t"])
    assert abs(_when(screen["clock"]) - expected) <= 1, screen
    return screen


async def test_page_lists_cameras_and_shows_the_gap_in_the_day(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage, **PARIS)
    async with Chromium() as browser:
        await _open(browser, str(client.make_url("/")))
        cameras = await browser.wait_for(
            "[...document.querySelectorAll('#cameras button')].map(b => b.dataset.camera)"
        )
        assert cameras == ["cam"]
        spans = await browser.wait_for(
            "[...document.querySelectorAll('#spans .span')].map(s =>"
            " ({from: s.dataset.from, to: s.dataset.to, left: parseFloat(s.style.left),"
            " width: parseFloat(s.style.width)}))"
        )
        assert [(s["from"], s["to"]) for s in spans] == [(at(0), at(6)), (at(20), at(26))]
        first, second = spans
        assert first["left"] + first["width"] < second["left"]  # the gap is drawn empty
        # The day is the box's day (Paris), whose midnight is 23:00 UTC the day before.
        assert await browser.evaluate("document.getElementById('day').value") == "2026-11-20"
        assert first["left"] == pytest.approx((9 * 3600) / 86400 * 100, abs=0.01)
        assert await browser.evaluate("document.getElementById('status').textContent") == ""
        # Zoomed to 10 minutes around the footage, its seconds are visible.
        await browser.evaluate("document.querySelector('#zoom [data-zoom=\"600000\"]').click()")
        widths = await browser.wait_for(
            "(w => w.length === 2 && w[0] > 0.5 && w)([...document.querySelectorAll("
            "'#spans .span')].map(s => parseFloat(s.style.width)))"
        )
        assert widths == [pytest.approx(1, abs=0.01), pytest.approx(1, abs=0.01)]
        ticks = await browser.evaluate(
            "[...document.querySelectorAll('#hours .tick')].map(t => t.textContent)"
        )
        assert "09:00" in ticks, ticks  # one a minute, in the box's zone


async def test_the_calendar_shows_the_days_with_footage_from_one_query(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    """A camera's month at once: the days with footage in the box's zone (Paris: 23:30
    UTC on the 4th is the 5th there), from one recordings query for the month; a day opened
    from it is one more query; October, 31 days and the hour its change repeats, is one
    query too."""
    config = make_config(tmp_path, **PARIS)
    root, layout = config.recordings.root, config.layout
    for when in ("2026-11-03T10:00:00Z", "2026-11-04T23:30:00Z", "2026-11-20T08:00:00Z"):
        place_old(footage["ts"], root, layout, "cam", utc(when))
    client = await started(start_agent, config)
    await wait_for(lambda: _count(client, 9), what="the footage indexed")
    async with Chromium() as browser:
        await _open(browser, str(client.make_url("/")))
        days = await browser.wait_for(
            "(d => d.length && d)([...document.querySelectorAll('#month-days button.has')]"
            ".map(b => b.dataset.day))"
        )
        assert days == ["2026-11-03", "2026-11-05", "2026-11-20"]
        calendar = await browser.evaluate(
            "({name: document.getElementById('month-name').textContent,"
            " days: document.querySelectorAll('#month-days button').length,"
            " first: document.querySelector('#month-days button').style.gridColumnStart,"
            " current: document.querySelector('#month-days [aria-current=date]').dataset.day,"
            " empty: document.querySelector('[data-day=\"2026-11-04\"]').getAttribute("
            "'aria-label')})"
        )
        assert calendar == {
            "name": "November 2026", "days": 30, "first": "7",  # the 1st is a Sunday
            "current": "2026-11-20", "empty": "2026-11-04: no recordings",
        }  # fmt: skip
        # The month (midnight in Paris, 23:00 UTC) and the day shown: one query each.
        assert sorted(await browser.evaluate(RECORDINGS_QUERIES)) == [
            "from=2026-10-31T23:00:00Z&to=2026-11-30T23:00:00Z",
            "from=2026-11-19T23:00:00Z&to=2026-11-20T23:00:00Z",
        ]
        await browser.evaluate("document.querySelector('[data-day=\"2026-11-05\"]').click()")
        spans = await browser.wait_for(
            "(s => !s.some(([a]) => a.startsWith('2026-11-20')) && s)([...document"
            ".querySelectorAll('#spans .span')].map(s => [s.dataset.from, s.dataset.to]))"
        )
        assert spans == [["2026-11-04T23:30:00Z", "2026-11-04T23:30:06Z"]]
        assert await browser.evaluate("document.getElementById('day').value") == "2026-11-05"
        assert len(await browser.evaluate(RECORDINGS_QUERIES)) == 3  # the month was not asked again
        await browser.evaluate("document.getElementById('prev-month').click()")
        october = await browser.wait_for(
            "document.getElementById('month-name').textContent === 'October 2026' &&"
            " ({has: document.querySelectorAll('#month-days button.has').length,"
            " days: document.querySelectorAll('#month-days button').length})"
        )
        assert october == {"has": 0, "days": 31}
        assert (await browser.evaluate(RECORDINGS_QUERIES))[-1] == (
            "from=2026-09-30T22:00:00Z&to=2026-10-31T23:00:00Z"  # 745 hours
        )
        assert await browser.evaluate("document.getElementById('status').textContent") == ""
        # The next month's query fails (the box went away a moment): October stays, said
        # so, and its arrows still work.
        await browser.evaluate(
            "window.realFetch = window.fetch; window.fetch = (url, options) =>"
            " String(url).includes('2026-10-31T23%3A00%3A00Z&') ?"
            " Promise.reject(new TypeError('the box is away')) : window.realFetch(url, options)"
        )
        await browser.evaluate("document.getElementById('next-month').click()")
        said = await browser.wait_for("document.getElementById('status').textContent")
        assert said == "the box is away"
        assert (
            await browser.evaluate("document.getElementById('month-name').textContent")
            == "October 2026"
        )
        await browser.evaluate("window.fetch = window.realFetch")
        await browser.evaluate("document.getElementById('next-month').click()")
        november = await browser.wait_for(
            "document.getElementById('month-name').textContent === 'November 2026' &&"
            " [...document.querySelectorAll('#month-days button.has')].map(b => b.dataset.day)"
        )
        assert november == ["2026-11-03", "2026-11-05", "2026-11-20"]


async def test_a_day_whose_midnight_the_clocks_skip_starts_when_they_do(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    """Chile goes forward at midnight: on 6 September 2026 the wall clock goes from 23:59:59
    on the 5th to 01:00, 04:00 UTC. That day, and September, begin then, not an hour
    before (which is still the 5th)."""
    config = make_config(tmp_path, recordings={"timezone": "America/Santiago"})
    root, layout = config.recordings.root, config.layout
    place_old(footage["ts"], root, layout, "cam", utc("2026-09-06T05:00:00Z"))  # 02:00 there
    client = await started(start_agent, config)
    await wait_for(lambda: _count(client, 3), what="the footage indexed")
    async with Chromium() as browser:
        await _open(browser, str(client.make_url("/")))
        asked = await browser.wait_for(f"(q => q.length === 2 && q)({RECORDINGS_QUERIES})")
        assert sorted(asked) == [
            "from=2026-09-01T04:00:00Z&to=2026-10-01T03:00:00Z",  # September, -04 then -03
            "from=2026-09-06T04:00:00Z&to=2026-09-07T03:00:00Z",  # its 6th: 23 hours
        ]
        assert await browser.evaluate("document.getElementById('day').value") == "2026-09-06"
        spans = await browser.wait_for(
            "(s => s.length && s)([...document.querySelectorAll('#spans .span')].map(s =>"
            " parseFloat(s.style.left)))"
        )
        assert spans[0] == pytest.approx(60 / (23 * 60) * 100, abs=0.01)  # 02:00, an hour in


@pytest.mark.parametrize(
    ("change", "day", "hours", "first_tick"),
    [
        ("2026-10-25T01:00:00Z", "2026-10-25", 25, 4),  # 03:00 CET, 4 h after 00:00 CEST
        ("2026-03-29T01:00:00Z", "2026-03-29", 23, 2),  # 03:00 CEST, 2 h after 00:00 CET
    ],
)
async def test_the_day_of_a_change_is_drawn_as_the_wall_clock_shows_it(
    start_agent: Any,
    tmp_path: Path,
    footage: dict[str, list[Rendered]],
    change: str,
    day: str,
    hours: int,
    first_tick: int,
) -> None:
    """Paris, the two changes of 2026: days of 25 and 23 hours. The footage across the
    change is one span where it was recorded; the hour labels fall where the wall clock
    shows them, and in the autumn's repeated hour each label says its zone, which is not
    the same twice."""
    config = make_config(tmp_path, **PARIS)
    at_change = utc(change)
    written = record(
        footage["ts"], config.recordings.root, config.layout, "cam", at_change - 120 * S,
        at_change + 120 * S,
    )  # fmt: skip
    client = await started(start_agent, config)

    async def indexed() -> bool:
        return (await camera_counts(client)).get("cam") == len(written)

    await wait_for(indexed, what="the footage indexed")
    async with Chromium() as browser:
        await _open(browser, str(client.make_url("/")))
        spans = await browser.wait_for(
            "(s => s.length && s)([...document.querySelectorAll('#spans .span')].map(s =>"
            " ({from: s.dataset.from, to: s.dataset.to, left: parseFloat(s.style.left)})))"
        )
        assert await browser.evaluate("document.getElementById('day').value") == day
        assert [(s["from"], s["to"]) for s in spans] == [(f"{day}T00:58:00Z", f"{day}T01:02:00Z")]
        # Midnight was 22:00 (CEST) or 23:00 (CET) UTC the day before.
        midnight = 2 * 60 if hours == 25 else 60
        spans_left = (midnight + 58) / (hours * 60) * 100
        assert spans[0]["left"] == pytest.approx(spans_left, abs=0.01)
        ticks = await browser.evaluate(
            "[...document.querySelectorAll('#hours .tick')].map(t =>"
            " [t.textContent, parseFloat(t.style.left)])"
        )
        assert [label for label, _ in ticks] == [
            "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"
        ]  # fmt: skip
        assert ticks[0][1] == pytest.approx(first_tick / hours * 100, abs=0.01)
        if hours == 23:
            return  # no hour repeats in the spring
        await browser.evaluate("document.querySelector('#zoom [data-zoom=\"3600000\"]').click()")
        labels = await browser.wait_for(
            "(l => l.some(t => t.includes(' ')) && l)([...document.querySelectorAll("
            "'#hours .tick')].map(t => t.textContent))"
        )
        repeated = [label for label in labels if " " in label]
        assert len({label.split(" ", 1)[1] for label in repeated}) == 2, labels  # both zones
        times = [label.split(" ")[0] for label in labels]
        assert times != sorted(times), labels  # the wall clock goes back an hour


async def test_deep_link_plays_with_the_wall_clock_across_seeks_and_gaps(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage, **PARIS)
    async with Chromium() as browser:
        await _open(browser, str(client.make_url(f"/#camera=cam&t={at(2)}")))
        await browser.wait_for("document.getElementById('video').currentTime > 2.3")
        screen = await _clock_is_right(client, browser)
        assert _when(at(2)) <= _when(screen["clock"]) <= _when(at(6))
        # The box's zone (Paris, UTC+1 in November) is the clock's text.
        assert "09:00:0" in screen["text"], screen
        # The address bar follows what is on screen.
        await browser.wait_for("/t=2026-11-20T08:00:0[3-5]Z/.test(location.hash)")

        # Playing on across the gap: the clock jumps from 08:00:06 to 08:00:20.
        await browser.wait_for("document.getElementById('video').currentTime > 6.5")
        screen = await _clock_is_right(client, browser)
        assert _when(screen["clock"]) >= _when(at(20)), screen

        await browser.evaluate("document.querySelector('#zoom [data-zoom=\"600000\"]').click()")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = await browser.call("Page.captureScreenshot", format="png")
        (SCREENSHOTS / "page.png").write_bytes(base64.b64decode(shot["data"]))

        # Keyboard: steps go through the footage, as a player's do, and the clock follows.
        await browser.wait_for(
            "(v => v.currentTime > 10.2 && (v.pause(), true))(document.getElementById('video'))"
        )
        await _key(browser, "ArrowLeft", 37)
        await browser.wait_for(
            "(v => !v.seeking && v.currentTime < 1)(document.getElementById('video'))"
        )
        screen = await _clock_is_right(client, browser)
        assert _when(at(0)) <= _when(screen["clock"]) <= _when(at(1)), screen
        await _key(browser, " ", 32)  # space plays on
        await browser.wait_for("!document.getElementById('video').paused")
        await _key(browser, "ArrowRight", 39)
        await browser.wait_for(
            "(v => !v.seeking && v.currentTime > 10)(document.getElementById('video'))"
        )
        screen = await _clock_is_right(client, browser)
        assert _when(screen["clock"]) >= _when(at(24)), screen


def _speed(speed: str) -> str:
    return f"document.querySelector('#speeds [data-speed=\"{speed}\"]').click()"


async def test_speeds_scans_and_frame_steps_keep_the_clock_on_the_frame(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    """30 fps footage. 0.5x and 2x are played by the browser; 4x, 8x and 16x forward and
    8x back show keyframes alone (from the session's I-frame playlist), the video
    paused; at each the clock is the wall-clock time of the frame on screen. Paused, `.`
    and `,` move one frame (33 ms, learnt from the frames played) and the clock with it.
    The page asks for no favicon."""
    config = make_config(tmp_path)
    runs = await render_run(tmp_path / "r30", 12, 2, size="320x240", rate=30, keyframe_seconds=1)
    for start in (T0, T0 + 20 * S):
        place_old(runs, config.recordings.root, config.layout, "cam", start)
    client = await started(start_agent, config)
    await wait_for(lambda: _count(client, 12), what="footage indexed")
    async with Chromium() as browser:
        await _open(browser, str(client.make_url(f"/#camera=cam&t={at(0.5)}")))
        video = "document.getElementById('video')"
        await browser.wait_for(f"{video}.currentTime > 0.8")
        await browser.evaluate(_speed("2"))
        assert await browser.evaluate(f"{video}.playbackRate") == 2
        await browser.wait_for(f"{video}.currentTime > 2.5")
        await _clock_is_right(client, browser)
        await browser.evaluate(_speed("0.5"))
        assert await browser.evaluate(f"{video}.playbackRate") == 0.5
        start = await browser.evaluate(f"{video}.currentTime")
        await browser.wait_for(f"{video}.currentTime > {start} + 0.5")
        await _clock_is_right(client, browser)
        for speed, ahead in (("4", 1.5), ("8", 2.5)):
            await browser.evaluate(_speed(speed))
            start = await browser.evaluate(f"{video}.currentTime")
            await browser.wait_for(
                f"(v => v.paused && !v.seeking && v.currentTime > {start} + {ahead})({video})"
            )
            await _clock_is_right(client, browser)
        await browser.evaluate(_speed("16"))
        start = await browser.evaluate(f"{video}.currentTime")
        await browser.wait_for(
            f"(v => v.paused && !v.seeking && v.currentTime > {start} + 3)({video})"
        )
        screen = await _clock_is_right(client, browser)
        # A keyframe (half a frame in), as the session's I-frame playlist places them.
        media = await browser.evaluate(f"{video}.currentTime")
        wall = await _wall_clock(client, screen["src"], media)
        listed = screen["src"].replace("index.m3u8", "iframes.m3u8").split("/media/", 1)[1]
        _, keyframes = parse_iframes(await (await client.get(f"/media/{listed}")).text())
        nearest = min(abs(wall - datetime.fromisoformat(k.pdt).timestamp()) for k in keyframes)
        assert nearest < 0.03, (media, wall)
        await browser.evaluate(_speed("-8"))
        back = screen["t"]
        await browser.wait_for(
            f"(v => v.paused && !v.seeking && v.currentTime < {back} - 1.5)({video})"
        )
        await _clock_is_right(client, browser)
        await browser.evaluate(_speed("1"))
        await browser.evaluate(f"{video}.pause()")
        await browser.wait_for(f"(v => v.paused && !v.seeking)({video})")
        before = await _screen(browser)
        await _key(browser, ".", 190)
        await browser.wait_for(f"(v => !v.seeking && v.currentTime > {before['t']})({video})")
        after = await _screen(browser)
        frame = 1 / 30
        assert after["t"] - before["t"] == pytest.approx(frame, abs=0.004), (before, after)
        moved = _when(after["clock"]) - _when(before["clock"])
        assert moved == pytest.approx(frame, abs=0.004), (before, after)
        await _key(browser, ",", 188)
        await browser.wait_for(f"(v => !v.seeking && v.currentTime < {after['t']})({video})")
        again = await _screen(browser)
        assert again["t"] == pytest.approx(before["t"], abs=0.005)
    metrics = await (await client.get("/metrics")).text()
    assert 'status="404"' not in metrics  # nothing asked for that is not there


async def _count(client: TestClient[Any, Any], count: int) -> bool:
    return await camera_counts(client) == {"cam": count}


async def test_a_click_on_the_timeline_plays_from_there(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage)
    async with Chromium() as browser:
        await _open(browser, str(client.make_url("/")))
        box = await browser.wait_for(
            "(s => s && (r => ({x: r.left + r.width / 2, y: r.top + r.height / 2}))"
            "(s.getBoundingClientRect()))(document.querySelector('#spans .span'))"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await browser.call(
                "Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left",
                clickCount=1,
            )  # fmt: skip
        await browser.wait_for("document.getElementById('video').currentTime > 0.5")
        screen = await _clock_is_right(client, browser)
        assert _when(at(0)) <= _when(screen["clock"]) <= _when(at(26)), screen
        # "Copy link for VLC": the session's playlist URL, which plays in a player.
        await browser.evaluate("document.getElementById('copy-vlc').click()")
        link = await browser.wait_for("document.getElementById('vlc-url').value")
        assert link == screen["src"]
        assert link.startswith(str(client.make_url("/media/playback/")))
        assert await ffmpeg_errors(link) == ""


async def test_playback_runs_on_into_the_next_session(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage, playback={"window_seconds": 10})
    async with Chromium() as browser:
        await _open(browser, str(client.make_url(f"/#camera=cam&t={at(1)}")))
        first = await browser.wait_for(
            "(v => v.currentTime > 0 && v.src)(document.getElementById('video'))"
        )
        # The first session ends before the gap; the next one starts after it.
        await browser.wait_for(
            f"(v => v.src !== {json.dumps(first)} && v.currentTime > 0.5)"
            "(document.getElementById('video'))"
        )
        screen = await _clock_is_right(client, browser)
        assert _when(at(20)) <= _when(screen["clock"]) <= _when(at(26)), screen


async def test_export_from_the_page_downloads_the_clip(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    async with Chromium() as browser:
        await browser.call(
            "Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads)
        )
        await _open(browser, str(client.make_url("/#camera=cam")))
        await browser.wait_for("document.getElementById('day').value === '2026-11-20'")
        await browser.evaluate(
            "(() => { document.getElementById('export-from').value = '2026-11-20T08:00:01';"
            " document.getElementById('export-to').value = '2026-11-20T08:00:05';"
            " document.getElementById('export').requestSubmit(); })()"
        )

        async def downloaded() -> list[Path]:
            return [p for p in downloads.iterdir() if p.suffix == ".mp4"]

        files = await wait_for(downloaded, timeout=30, what="the clip downloaded")
    assert files[0].name == "cam_20261120T080001Z_20261120T080005Z.mp4"
    # From the keyframe at or before 08:00:01 (keyframes every second) to 08:00:05.
    facts = video_facts(files[0])
    assert facts.first_is_keyframe
    assert abs(facts.duration - 4) <= 1
    assert await ffmpeg_errors(str(files[0])) == ""


async def test_token_prompt(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    config = make_config(tmp_path, server={"api_token": "s3cret"})
    place_old(footage["ts"], config.recordings.root, config.layout, "cam", T0)
    client = await started(start_agent, config)
    async with Chromium() as browser:
        await _open(browser, str(client.make_url("/#camera=cam")))
        await browser.wait_for("!document.getElementById('token-form').hidden")
        assert await browser.evaluate("document.getElementById('main').hidden")
        submit = (
            "(v => { document.getElementById('token').value = v;"
            " document.getElementById('token-form').requestSubmit(); })"
        )
        await browser.evaluate(f"{submit}('wrong')")
        await browser.wait_for(
            "/did not accept/.test(document.getElementById('token-error').textContent)"
        )
        await browser.evaluate(f"{submit}('s3cret')")
        cameras = await browser.wait_for(
            "[...document.querySelectorAll('#cameras button')].map(b => b.dataset.camera)"
        )
        assert cameras == ["cam"]
        assert (
            await browser.evaluate("sessionStorage.getItem('nvr-playback-agent.token')") == "s3cret"
        )
        await browser.wait_for("document.querySelectorAll('#spans .span').length === 1")


async def test_bad_links_show_the_apis_sentence(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage)
    api = await client.get(f"/api/cameras/nope/recordings?from={at(0)}&to={at(60)}")
    sentence = (await api.json())["error"]
    async with Chromium() as browser:
        await _open(browser, str(client.make_url("/#camera=nope&t=2026-11-20T08:00:00Z")))
        status = "document.getElementById('status')"
        await browser.wait_for(f"{status}.classList.contains('error')")
        assert await browser.evaluate(f"{status}.textContent") == sentence
        await _open(browser, str(client.make_url("/#camera=cam&t=yesterday")))
        await browser.wait_for(f"/RFC 3339/.test({status}.textContent)")
        # A link to a time without footage: the API's 404 sentence.
        await _open(browser, str(client.make_url("/#camera=cam&t=2026-11-21T08:00:00Z")))
        await browser.wait_for(f"/footage/.test({status}.textContent)")


async def test_browsers_without_hls_get_a_clear_line_and_the_export(
    start_agent: Any, tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    client = await start_with(start_agent, tmp_path, footage)
    async with Chromium() as browser:
        # As in Firefox: no native HLS.
        await browser.call("Page.enable")
        await browser.call(
            "Page.addScriptToEvaluateOnNewDocument",
            source="HTMLMediaElement.prototype.canPlayType = () => '';",
        )
        await _open(browser, str(client.make_url(f"/#camera=cam&t={at(3)}")))
        await browser.wait_for("!document.getElementById('no-hls').hidden")
        assert await browser.evaluate("document.getElementById('video').hidden")
        await browser.wait_for("!document.getElementById('copy-vlc').disabled")
        assert await browser.evaluate("document.getElementById('export-from').value") == (
            "2026-11-20T08:00:03"
        )
        assert await browser.evaluate("document.getElementById('clock').dateTime") == at(3)


_TILES = """[...document.querySelectorAll('#tiles figure')].map(f => {
  const v = f.querySelector('video');
  return {camera: f.dataset.camera, src: v.currentSrc, t: v.currentTime, seeking: v.seeking,
          paused: v.paused, none: !f.querySelector('.none').hidden, ready: v.readyState};
})"""


@pytest.mark.timeout(300)  # two minutes of play, as the drift is measured over
async def test_cameras_together_play_one_wall_clock_within_a_frame(
    start_agent: Any, tmp_path: Path
) -> None:
    """Four cameras of 15 fps footage from a link `#cameras=a,b,c,d&t=`: b with a gap of
    10 s, c with another, d whose footage starts only after the first window the page
    asks for (60 s) and whose files start 3 s off the others'. Over two minutes of play,
    a seek, 2x and the windows renewed (each next window played unseen until it is in
    step), the wall-clock times of the tiles' frames (each from its own playlist) stay
    within one frame (67 ms) of each other once settled; over each gap, and before d's
    footage, that tile says "No recording" while the others play on."""
    config = make_config(tmp_path, playback={"window_seconds": 60})
    runs = await render_run(
        tmp_path / "r15", 150, 10, size="320x240", rate=15, keyframe_seconds=1
    )  # fmt: skip
    root = config.recordings.root
    place_old(runs, root, config.layout, "a", T0)
    b = place_old(runs, root, config.layout, "b", T0)
    b[6].unlink()  # b's gap: its seventh 10 s file, 08:01:00 to 08:01:10
    c = place_old(runs, root, config.layout, "c", T0)
    c[3].unlink()  # c's: 08:00:30 to 08:00:40
    d = place_old(runs, root, config.layout, "d", T0 + 3 * S)
    for path in d[:7]:  # d's footage from 08:01:13 on
        path.unlink()
    client = await started(start_agent, config)
    expected = {"a": 15, "b": 14, "c": 14, "d": 8}

    async def all_indexed() -> bool:
        return await camera_counts(client) == expected

    await wait_for(all_indexed, what="footage indexed")
    drifts: list[float] = []
    gaps_seen: set[str] = set()
    async with Chromium() as browser:
        await _open(browser, str(client.make_url(f"/#cameras=a,b,c,d&t={at(5)}")))
        loop = asyncio.get_running_loop()
        began = loop.time()
        settle_until = began + 4
        seeked = sped = False
        none_before: set[str] = set()
        sessions: dict[str, set[str]] = {}  # each tile's sessions, one a window
        skipped = 0  # samples of a tile whose window ended as it was read
        while loop.time() - began < 125:
            if not seeked and loop.time() - began > 40:
                await browser.evaluate(f"location.hash = '#cameras=a,b,c,d&t={at(20)}'")
                seeked, settle_until = True, loop.time() + 4
            if not sped and loop.time() - began > 70:
                await browser.evaluate(
                    "document.querySelector('#grid-speeds [data-speed=\"2\"]').click()"
                )
                sped, settle_until = True, loop.time() + 4
            tiles = await browser.evaluate(_TILES)
            for tile in tiles:
                sessions.setdefault(tile["camera"], set()).add(tile["src"])
            stamp = await browser.evaluate("document.getElementById('grid-clock').dateTime")
            clock = _when(stamp) - T0 / S if stamp else -1.0
            none = {tile["camera"] for tile in tiles if tile["none"]}
            if none != none_before:  # a tile comes back after its gap as after a seek
                settle_until = loop.time() + 2
            none_before = none
            gaps = {"b": (60, 70), "c": (30, 40), "d": (0, 73)}
            for camera, (low, high) in gaps.items():
                if camera in none and low + 1 < clock < high - 1 and "a" not in none:
                    gaps_seen.add(camera)
            # Once settled, "No recording" exactly where a camera has none (a second's
            # grace at each edge): never over footage, whatever was renewed or seeked.
            edges = [edge for low, high in [*gaps.values(), (150, 150)] for edge in (low, high)]
            if loop.time() > settle_until and all(abs(clock - e) > 1 for e in edges):
                wanted = {c for c, (low, high) in gaps.items() if low <= clock < high}
                wanted |= set(expected) if clock >= 150 else set()
                assert none == wanted, (clock, none)
            # Tiles playing (not seeking, data to play on: a tile waiting for data shows
            # no new frame and is not compared).
            live = [t for t in tiles if not t["none"] and not t["seeking"] and t["ready"] >= 3]
            if loop.time() > settle_until and len(live) >= 2 and not any(t["paused"] for t in live):
                found = [await _wall_clock(client, t["src"], t["t"], True) for t in live]
                walls = [wall for wall in found if wall is not None]
                if len(walls) == len(found):
                    drifts.append(max(walls) - min(walls))
                else:  # a session ended: only as its tile moved on to its next window
                    now = {t["camera"]: t["src"] for t in await browser.evaluate(_TILES)}
                    ended = [t for t, wall in zip(live, found, strict=True) if wall is None]
                    assert all(now[t["camera"]] != t["src"] for t in ended), (ended, now)
                    skipped += 1
            await asyncio.sleep(0.5)
    assert gaps_seen == {"b", "c", "d"}
    assert len(sessions["a"] - {""}) >= 3  # windows renewed as the clock ran on
    assert len(drifts) > 100, drifts
    assert skipped <= len(drifts) // 20, (skipped, len(drifts))  # renewals are rare
    print(f"tiles apart: median {sorted(drifts)[len(drifts) // 2] * 1e3:.1f} ms,"
          f" max {max(drifts) * 1e3:.1f} ms over {len(drifts)} samples")  # fmt: skip
    assert max(drifts) <= 1 / 15, sorted(drifts)[-10:]
