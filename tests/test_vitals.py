"""When a look at the recordings' disk is said as a stall (pure policy)."""

from __future__ import annotations

from pathlib import Path

from agent.vitals import STALL_SECONDS, stall_problem


def test_a_look_is_a_stall_once_it_has_waited_long_enough() -> None:
    root = Path("/srv/recordings")
    assert stall_problem(root, None, 100.0) is None  # no look under way
    assert stall_problem(root, 100.0, 100.0 + STALL_SECONDS / 2) is None
    said = stall_problem(root, 100.0, 100.0 + STALL_SECONDS + 6.4)
    assert said is not None
    assert said.startswith(f"the recordings root {root} has not answered for 7 s")
