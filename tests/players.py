"""Real players for the tests: ffmpeg, VLC (as an ordinary user), GStreamer's playbin3 and
Chromium's own <video> (driven over the DevTools protocol with aiohttp's WebSocket
client). Each runs as a real subprocess with a deadline and is killed if it hangs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

HLSJS = Path(__file__).parent.parent / ".cache" / "hls.js-1.7.4" / "hls.min.js"


async def run(*argv: str, limit: float = 120) -> tuple[int | None, str]:
    """Run a player; (exit status, output), or (None, output) if it hung and was killed."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), limit)
        return process.returncode or 0, out.decode(errors="replace")
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        return None, out.decode(errors="replace")


def need(command: str) -> None:
    if shutil.which(command) is None:
        pytest.fail(f"{command} is not installed (scripts/setup-dev.sh installs it)")


async def ffmpeg_errors(url: str) -> str:
    """What `ffmpeg -v error -i URL -f null -` prints: nothing when all is well."""
    code, out = await run("ffmpeg", "-nostdin", "-v", "error", "-i", url, "-f", "null", "-")
    return out if code == 0 else f"exit {code}: {out}"


async def video_packets(path: Path) -> int:
    """How many video packets a file holds, counted by ffprobe."""
    code, out = await run(
        "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
        "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path),
    )  # fmt: skip
    assert code == 0, out
    # ffprobe may say something of the audio first (VLC's own MPEG-TS output of AAC).
    counts = [line for line in out.splitlines() if line.strip().isdigit()]
    return int(counts[0]) if counts else 0


async def vlc_video_packets(url: str) -> tuple[int, str]:
    """Play `url` in VLC as an ordinary user, its output stored as MPEG-TS; how many video
    packets it stored (frames it received and passed on), and what it said."""
    need("cvlc")
    with tempfile.TemporaryDirectory(prefix="vlc.") as work:
        os.chmod(work, 0o777)  # noqa: S103 - the player runs as nobody and writes here
        out = Path(work) / "out.ts"
        user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        if os.getuid() != 0:
            user = []
        code, said = await run(
            *user, "env", f"HOME={work}", "cvlc", "--intf", "dummy", "--play-and-exit",
            "--no-loop", url, "--sout", f"#std{{access=file,mux=ts,dst={out}}}",
        )  # fmt: skip
        assert code is not None, f"VLC hung:\n{said[-2000:]}"
        return (await video_packets(out) if out.exists() else 0), said


async def gstreamer(url: str) -> tuple[int | None, str]:
    """Play `url` with GStreamer's playbin3 (hlsdemux2) into fake sinks, as fast as it can."""
    need("gst-launch-1.0")
    return await run(
        "gst-launch-1.0", "playbin3", f"uri={url}",
        "video-sink=fakesink sync=false", "audio-sink=fakesink sync=false",
    )  # fmt: skip


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self) -> None:
        need("chromium")
        self._profile = tempfile.mkdtemp(prefix="chromium.")
        self._process: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._id = 0

    async def __aenter__(self) -> Chromium:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._process = await asyncio.create_subprocess_exec(
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-quic", "--mute-audio",
            "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={self._profile}",
            f"--remote-debugging-port={port}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self._http = aiohttp.ClientSession()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while self._ws is None:
            with contextlib.suppress(aiohttp.ClientError, IndexError, KeyError):
                async with self._http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                    pages = [p for p in await answer.json() if p.get("type") == "page"]
                    self._ws = await self._http.ws_connect(
                        pages[0]["webSocketDebuggerUrl"], max_msg_size=0
                    )
            if self._ws is None:
                assert loop.time() < deadline, "Chromium's DevTools did not answer"
                await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        self._id += 1
        await self._ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads((await self._ws.receive()).data)
            if message.get("id") == self._id:
                assert "error" not in message, message
                return dict(message.get("result", {}))

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Poll an expression until it is truthy; its value, or a failure after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                state = await self.evaluate(_VIDEO_STATE)
                pytest.fail(f"timed out waiting for {expression}; video: {state}")
            await asyncio.sleep(0.1)


_VIDEO_STATE = """(() => { const v = document.querySelector('video');
  return v ? {t: v.currentTime, d: v.duration, rs: v.readyState, e: v.error && v.error.message,
              paused: v.paused, ended: v.ended} : null; })()"""


async def chromium_plays(url: str, seek_to: float) -> dict[str, Any]:
    """Chromium's own <video> plays `url` (native HLS), then seeks to `seek_to` seconds
    and plays on from there; what the video reported."""
    async with Chromium() as browser:
        await browser.evaluate(
            "(() => { const v = document.createElement('video'); v.muted = true;"
            f" v.src = {json.dumps(url)}; document.body.appendChild(v); v.play(); }})()"
        )
        await browser.wait_for("document.querySelector('video').currentTime > 0.5")
        duration = await browser.evaluate("document.querySelector('video').duration")
        await browser.evaluate(f"document.querySelector('video').currentTime = {seek_to}")
        await browser.wait_for(
            f"(v => !v.seeking && v.currentTime > {seek_to + 0.5})(document.querySelector('video'))"
        )
        state = await browser.evaluate(_VIDEO_STATE)
        return {"duration": duration, **state}


_HLSJS_PAGE = """<!doctype html><meta charset="utf-8"><title>hls.js</title>
<video muted></video><script src="/hls.min.js"></script><script>
window.errors = []; window.buffered = 0;
const video = document.querySelector("video");
const hls = new Hls({maxBufferLength: 600, maxMaxBufferLength: 600});
window.fatal = false;
hls.on(Hls.Events.ERROR, (_, d) => {
  window.fatal ||= d.fatal;
  const why = d.reason || (d.error && d.error.message) || "";
  errors.push(`${d.fatal ? "fatal " : ""}${d.type}/${d.details}: ${why}`);
});
hls.on(Hls.Events.FRAG_BUFFERED, () => { window.buffered += 1; });
hls.loadSource(new URLSearchParams(location.search).get("src"));
hls.attachMedia(video); video.play();
</script>"""


async def hlsjs_plays(url: str, segments: int) -> dict[str, Any]:
    """hls.js (from npm) in Chromium, on a page of another origin (so CORS is exercised),
    buffers every one of a session's `segments`; what it reported, ERROR events included."""
    if not HLSJS.is_file():
        pytest.fail(f"{HLSJS} is missing (scripts/setup-dev.sh fetches it from npm)")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=_HLSJS_PAGE, content_type="text/html")

    async def script(_: web.Request) -> web.FileResponse:
        return web.FileResponse(HLSJS)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/hls.min.js", script)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with Chromium() as browser:
            query = aiohttp.helpers.quote(url, safe="")
            # "localhost" is another origin than the agent's 127.0.0.1.
            await browser.navigate(f"http://localhost:{port}/?src={query}")
            await browser.wait_for(
                f"window.errors !== undefined && (window.buffered >= {segments} || window.fatal)"
            )
            await browser.wait_for("document.querySelector('video').currentTime > 0.5")
            return dict(
                await browser.evaluate(
                    "({buffered: window.buffered, errors: window.errors,"
                    " time: document.querySelector('video').currentTime})"
                )
            )
    finally:
        await runner.cleanup()
