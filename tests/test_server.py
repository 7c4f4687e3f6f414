"""The connection guard's policy, on plain objects and a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from agent import server
from agent.server import ConnectionGuard


class Connection:
    """What the guard uses of aiohttp's protocol and its transport, as aiohttp 3.11
    behaves: force_close() closes the transport and forgets it."""

    def __init__(self, pending: int = 0) -> None:
        self.transport: Connection | None = self
        self.pending = pending  # bytes the transport still has to send
        self.closed = self.aborted = False

    def force_close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def get_write_buffer_size(self) -> int:
        return self.pending

    def close(self) -> None:
        if not self.aborted:
            self.closed = True

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(server.time, "monotonic", lambda: now[0])
    return now


def _answering(guard: ConnectionGuard, peer: str, count: int) -> list[Any]:
    """`count` connections of `peer`, each in the middle of a response."""
    made = [Connection() for _ in range(count)]
    for connection in made:
        guard.opened(connection, peer)  # type: ignore[arg-type]
        guard.request_started(connection)
    return made


def test_stalled_readers_of_a_few_addresses_leave_room_for_everyone(clock: list[float]) -> None:
    """Four addresses fill every connection with responses they do not read: a fifth
    client still gets in, the reader stalled longest making room; a response that flows
    is never closed for it."""
    guard = ConnectionGuard(cap=32)
    readers = [_answering(guard, f"10.0.0.{n}", guard.per_peer) for n in range(4)]
    assert guard.open == guard.cap
    assert not guard.admit("10.0.0.9")  # all of them flowing: no room
    for n, mine in enumerate(readers):
        for connection in mine:
            clock[0] += 0.01
            if n > 0:
                guard.paused(connection)  # the client stopped reading
    assert not guard.admit("10.0.0.9")  # stalled for a moment only: no room yet
    clock[0] += server.EVICTABLE_STALL_SECONDS + 1
    assert guard.admit("10.0.0.9")  # the busiest address's responses flow: room elsewhere
    assert readers[1][0].aborted  # the first to stall, cut without waiting to flush
    assert not any(c.closed or c.aborted for c in readers[0])  # flowing: kept


def test_a_response_stalled_for_a_minute_is_cut(clock: list[float]) -> None:
    guard = ConnectionGuard(cap=32)
    slow, paused = _answering(guard, "10.0.0.1", 2)
    guard.paused(slow)
    guard.paused(paused)
    clock[0] += server.WRITE_STALL_SECONDS / 2
    guard.resumed(slow)  # it read a little: its clock starts again when it stalls again
    guard.paused(slow)
    clock[0] += server.WRITE_STALL_SECONDS / 2 + 1
    guard.sweep(clock[0])
    assert paused.aborted
    assert not slow.aborted
    assert guard.state()["write_timeouts"] == 1


def test_at_the_cap_a_client_with_several_connections_recycles_its_own(
    clock: list[float],
) -> None:
    """Clients that reconnect at once must not evict each other for good: one that holds
    several connections makes room among its own; only a newcomer takes another's."""
    guard = ConnectionGuard(cap=32)
    readers = [_answering(guard, f"10.0.0.{n}", guard.per_peer) for n in range(4)]
    for mine in readers:
        for connection in mine:
            clock[0] += 0.01
            guard.paused(connection)
    clock[0] += server.EVICTABLE_STALL_SECONDS + 1
    assert guard.admit("10.0.0.2")  # at its share: its own oldest goes
    assert readers[2][0].aborted
    assert not any(c.aborted for n, mine in enumerate(readers) if n != 2 for c in mine)
    _answering(guard, "10.0.0.2", 1)  # the cap again
    assert guard.admit("10.0.0.9")  # a newcomer: the busiest client's stalled one goes
    assert readers[0][0].aborted


def test_below_its_share_a_client_with_several_connections_still_recycles_its_own(
    clock: list[float],
) -> None:
    guard = ConnectionGuard(cap=32)
    full = [_answering(guard, f"10.0.0.{n}", guard.per_peer) for n in range(3)]
    several = _answering(guard, "10.0.0.3", server.NEWCOMER_CONNECTIONS + 1)
    _answering(guard, "10.0.0.4", guard.cap - guard.open)  # the cap reached
    for connection in [c for mine in full for c in mine] + several:
        clock[0] += 0.01
        guard.paused(connection)
    clock[0] += server.EVICTABLE_STALL_SECONDS + 1
    assert guard.admit("10.0.0.3")
    assert several[0].aborted  # its own
    assert not any(c.aborted for mine in full for c in mine)
