"""Scrub previews: the keyframe at a moment (keyframes.py, GET .../keyframe), decoded by
the browser (WebCodecs) on the page's timeline."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.containers.nal import decoder_config
from agent.containers.samples import Table
from agent.demo import Rendered
from agent.keyframes import keyframe_at

from .conftest import T0, S, at, start_with
from .players import Chromium


def annex_b(description: bytes, data: bytes) -> bytes:
    """An H.264 elementary stream of one sample: the avcC's parameter sets, then the
    sample's NAL units, each after a start code (ISO/IEC 14496-15 5.3.3.1)."""
    out, at_ = [], 6
    for count_at in (5, None):
        count = description[5] & 0x1F if count_at == 5 else description[at_]
        at_ += 0 if count_at == 5 else 1
        for _ in range(count):
            length = int.from_bytes(description[at_ : at_ + 2], "big")
            out.append(b"\0\0\0\1" + description[at_ + 2 : at_ + 2 + length])
            at_ += 2 + length
    k = 0
    while k < len(data):
        length = int.from_bytes(data[k : k + 4], "big")
        out.append(b"\0\0\0\1" + data[k + 4 : k + 4 + length])
        k += 4 + length
    return b"".join(out)


def md5s(path: Path, *options: str) -> list[str]:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", *options, "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line[:1].isdigit()]


def test_the_keyframe_at_a_time_is_the_last_shown_at_or_before_it() -> None:
    table = Table(b"vide", "h264", 90_000, b"")
    table.dts.extend(3000 * n for n in range(6))
    table.cto.extend([9000, 0, 0, 9000, 0, 0])  # the two B-frames after each shown before it
    table.sync = bytearray([1, 0, 0, 1, 0, 0])
    start = T0
    first = keyframe_at(table, start, start + 10_000)
    assert first is not None
    assert (first.sample, first.time_us) == (0, start + 66_666)  # shown third
    later = keyframe_at(table, start, start + S)
    assert later is not None
    assert (later.sample, later.time_us) == (3, start + 166_666)
    assert keyframe_at(Table(b"vide", "h264", 90_000, b""), start, start) is None


def test_codec_strings_say_profile_and_level() -> None:
    avcc = bytes([1, 0x64, 0x00, 0x1F, 0xFF, 0xE0, 0])
    entry = b"\0\0\0\0avc1" + bytes(78) + (8 + len(avcc)).to_bytes(4, "big") + b"avcC" + avcc
    assert decoder_config(entry) == ("avc1.64001f", avcc)
    # Main profile, compatible with Main and Main 10, level 4.0, progressive source.
    hvcc = bytes([1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 120]) + bytes(10)
    entry = b"\0\0\0\0hvc1" + bytes(78) + (8 + len(hvcc)).to_bytes(4, "big") + b"hvcC" + hvcc
    assert decoder_config(entry) == ("hvc1.1.6.L120.90", hvcc)
    assert decoder_config(b"\0\0\0\0mp4v" + bytes(78)) is None


async def test_the_keyframe_decodes_alone_to_the_picture_played_then(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """x264 with B-frames in MPEG-TS, and Frigate's MP4s: the keyframe at 08:00:03.5 is the
    one at 03.0; its sample and configuration, given start codes, decode alone to a
    picture of that recording; in a gap, 404 with a sentence."""
    for style in ("ts", "mp4"):
        client = await start_with(start_agent, tmp_path / style, footage, style)
        response = await client.get("/api/cameras/cam/keyframe", params={"t": at(3.5)})
        assert response.status == 200, await response.text()
        found = await response.json()
        assert found["time"] == "2026-11-20T08:00:03Z"
        assert found["codec"].startswith("avc1.")
        assert (found["width"], found["height"]) == (320, 240)
        alone = tmp_path / f"{style}.h264"
        alone.write_bytes(
            annex_b(base64.b64decode(found["description"]), base64.b64decode(found["data"]))
        )
        decoded = md5s(alone, "-f", "h264")
        assert len(decoded) == 1
        played = [
            md5 for path in sorted((tmp_path / style / "recordings").rglob(f"*.{style}"))
            for md5 in md5s(path)
        ]  # fmt: skip
        assert decoded[0] in played  # testsrc draws each frame's time: one of them
        gap = await client.get("/api/cameras/cam/keyframe", params={"t": at(10)})
        assert gap.status == 404
        assert "no recording at 2026-11-20T08:00:10Z" in (await gap.json())["error"]
        bad = await client.get("/api/cameras/cam/keyframe", params={"t": "yesterday"})
        assert bad.status == 400


_GRID = """(() => {
  const c = document.getElementById('preview-frame');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const cells = [];
  for (let gy = 0; gy < 4; gy += 1) for (let gx = 0; gx < 4; gx += 1) {
    let sum = 0, n = 0;
    for (let y = Math.floor(gy * c.height / 4); y < Math.floor((gy + 1) * c.height / 4); y += 1)
      for (let x = Math.floor(gx * c.width / 4); x < Math.floor((gx + 1) * c.width / 4); x += 1) {
        const i = 4 * (y * c.width + x);
        sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]; n += 1;
      }
    cells.push(sum / n);
  }
  return {w: c.width, h: c.height, cells};
})()"""


def grid(rgb: bytes, width: int, height: int) -> list[float]:
    """Mean luma of each of 4 x 4 cells of an RGB picture, as _GRID takes them."""
    cells = []
    for gy in range(4):
        for gx in range(4):
            total = count = 0.0
            for y in range(gy * height // 4, (gy + 1) * height // 4):
                row = rgb[3 * y * width : 3 * (y + 1) * width]
                for x in range(gx * width // 4, (gx + 1) * width // 4):
                    r, g, b = row[3 * x : 3 * x + 3]
                    total += 0.299 * r + 0.587 * g + 0.114 * b
                    count += 1
            cells.append(total / count)
    return cells


@pytest.mark.slow  # a real browser
async def test_hovering_the_timeline_shows_the_keyframe_there(
    tmp_path: Path, footage: dict[str, list[Rendered]], start_agent: Any
) -> None:
    """In Chromium: the pointer over 08:00:03.5 on the day's timeline (zoomed to 10
    minutes) shows the picture the box's keyframe for that time decodes to, as ffmpeg
    decodes it; over the gap, "no recording" and no picture."""
    client = await start_with(start_agent, tmp_path, footage, "ts")
    answer = await (await client.get("/api/cameras/cam/keyframe", params={"t": at(3.5)})).json()
    alone = tmp_path / "alone.h264"
    alone.write_bytes(
        annex_b(base64.b64decode(answer["description"]), base64.b64decode(answer["data"]))
    )
    async with Chromium() as browser:
        # Wide: on the 10-minute timeline a pixel is a quarter of a second, so that the
        # pointer (a whole pixel) is on 08:00:03.5 within the keyframe's second.
        await browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=2600, height=860, deviceScaleFactor=1, mobile=False,
        )  # fmt: skip
        await browser.navigate(str(client.make_url("/#camera=cam&t=2026-11-20T08:00:03Z")))
        await browser.wait_for("!!document.querySelector('#spans .span')")
        # Paused, so that the timeline stands still under the pointer (a zoomed one
        # follows playback).
        await browser.wait_for("document.getElementById('video').currentTime > 0")
        await browser.evaluate("document.getElementById('video').pause()")
        await browser.evaluate("document.querySelector('#zoom [data-zoom=\"600000\"]').click()")

        async def hover(t_us: int) -> None:
            spot = await browser.evaluate(
                f"""(() => {{ const r = document.getElementById('timeline').getBoundingClientRect();
                const first = document.querySelector('#spans .span');
                const from = Date.parse(first.dataset.from);
                const left = first.getBoundingClientRect().left;
                const width = first.getBoundingClientRect().width;
                const to = Date.parse(first.dataset.to);
                return {{x: left + width * ({t_us // 1000} - from) / (to - from),
                         y: r.top + r.height / 2}}; }})()"""
            )
            await browser.call(
                "Input.dispatchMouseEvent", type="mouseMoved", x=spot["x"], y=spot["y"]
            )

        await hover(T0 + 3_500_000)
        shown = await browser.wait_for("document.getElementById('preview').dataset.time")
        assert shown == answer["time"]
        seen = await browser.evaluate(_GRID)
        rgb = subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "h264", "-i", str(alone), "-vf",
             f"scale={seen['w']}:{seen['h']}:in_color_matrix=bt709", "-pix_fmt", "rgb24",
             "-f", "rawvideo", "-"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        expected = grid(rgb, seen["w"], seen["h"])
        # Chromium converts as BT.709 does (within 1.2 here); scaled alike.
        assert max(abs(a - b) for a, b in zip(seen["cells"], expected, strict=True)) < 4, (
            seen["cells"], expected,
        )  # fmt: skip
        assert max(expected) - min(expected) > 20  # a picture, not a blank
        await hover(T0 + 10 * S)  # the gap between 08:00:06 and 08:00:20
        await browser.wait_for(
            "document.getElementById('preview-time').textContent.endsWith('no recording')"
        )
