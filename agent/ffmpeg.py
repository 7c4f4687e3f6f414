"""The one place that runs ffmpeg: argument lists, no shell, a deadline,
stderr drained, and on timeout or cancellation SIGTERM, a grace period, SIGKILL, reaped.

Every child is started through util-linux's `setpriv --pdeathsig KILL`, which sets
Linux's parent-death signal and then execs it: no ffmpeg outlives the agent, even one
killed with kill -9, and no Python code runs between fork and exec (a `preexec_fn` would,
in a process with threads, on the event loop's thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import signal

log = logging.getLogger(__name__)

GRACE_SECONDS = 2.0
_STDERR_KEEP = 4000
_WRITE_FAILED = ("Error writing trailer", "Error closing file", "No space left on device")
# The concat demuxer could not open a listed file (deleted meanwhile): ffmpeg 5.1 ends the
# output there, short, and exits 0.
_READ_FAILED = ("Impossible to open",)


class FfmpegError(Exception):
    """ffmpeg could not run, failed or timed out; `detail` is the end of its stderr."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@functools.cache
def launcher() -> list[str]:
    """What goes in front of every child's arguments: setpriv, which gives the child
    SIGKILL when the agent dies and then execs it (the same process). Found once."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning("ffmpeg: setpriv (util-linux) is missing: an ffmpeg may outlive a killed agent")
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


async def _spawn(argv: list[str], stdout: int) -> asyncio.subprocess.Process:
    """Start `argv`: no shell, no stdin, stderr piped, dying with the agent."""
    try:
        return await asyncio.create_subprocess_exec(
            *launcher(),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:
        raise FfmpegError(f"cannot run {argv[0]}: {error.strerror or error}") from None


def _failure(argv: list[str], returncode: int | None, text: str) -> FfmpegError | None:
    """What went wrong in a finished run, from its status and the end of its stderr."""
    if returncode in (126, 127) and "failed to execute" in text:  # said by setpriv
        return FfmpegError(f"cannot run {argv[0]}", text.strip())
    if returncode != 0:
        return FfmpegError(f"{argv[0]} exited with status {returncode}", text.strip())
    if any(sign in text for sign in _WRITE_FAILED):
        # ffmpeg 5.1 exits 0 when writing the trailer or closing the output fails.
        return FfmpegError(f"{argv[0]} could not write its output", text.strip())
    if any(sign in text for sign in _READ_FAILED):
        return FfmpegError(f"{argv[0]} could not read all of its input", text.strip())
    return None


async def run(argv: list[str], time_limit: float) -> None:
    """Run `argv`; raise FfmpegError if it cannot start, exits non-zero or overruns the limit."""
    process = await _spawn(argv, asyncio.subprocess.DEVNULL)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        await stop(process)
        raise FfmpegError(f"{argv[0]} did not finish within {time_limit:g} s") from None
    except BaseException:
        await stop(process)
        raise
    failure = _failure(argv, process.returncode, stderr.decode("utf-8", "replace")[-_STDERR_KEEP:])
    if failure is not None:
        raise failure


async def stop(process: asyncio.subprocess.Process) -> None:
    """Terminate `process`, kill it after GRACE_SECONDS, and reap it (shielded from cancel)."""

    async def reap() -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), GRACE_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    task = asyncio.ensure_future(reap())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task  # the child is reaped even when the caller is cancelled
        raise
