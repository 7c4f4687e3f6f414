"""Where a recording named in local time lies on the one true timeline, when its name
alone cannot say (pure).

A local time names one instant except twice a year. In the autumn's repeated hour
(02:30 in Europe/Paris on the last Sunday of October is 00:30 UTC and 01:30 UTC) the
file itself says which: a recorder closes a segment when it ends, so its modification
time is about its start plus its duration. In the spring's skipped hour (02:30 on the
last Sunday of March does not exist) the recorder's clock disagrees with the zone, and
the modification time is all there is. The rule, in docs/configuration.md:

- a name with its UTC offset (%z): the instant it says;
- a name of one instant: that instant;
- a name of two: the one whose end (start + duration) is nearer the file's modification
  time, if that is nearer than half the distance between them;
- otherwise (modification time missing or far off) undecided: the caller takes the one
  that keeps the camera's recordings from overlapping, else the earlier, and says so;
- a name in a gap: its modification time minus its duration, if that is within
  MTIME_TRUSTED of what the name reads as (a file copied or touched later is not
  moved to another day); otherwise undecided, as above.

And which recordings a session plays (`chosen`): of two of the same time, the one written
later; and not one whose timestamps the next recording shows false.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .index import Segment
from .layout import SegmentName

MTIME_TRUSTED_US = 2 * 3600 * 1_000_000  # a gap name's mtime farther than this: not trusted
# Neighbouring files of one camera overlap by a frame or a second rounded in a name.
OVERLAP_TRUSTED_US = 2_000_000
# Bytes a second: a file this much sparser than the next is not believed (a camera's night
# and day bit rates differ tenfold or so), when the next lasts long enough to say.
SPARSE = 100
EVIDENCE_US = 2_000_000


class How(enum.StrEnum):
    """How a recording's start was decided."""

    NAME = "name"  # its name means one instant
    OFFSET = "offset"  # its name carries its UTC offset (%z)
    MTIME = "mtime"  # of the repeated hour's two instants, the one its mtime says
    UNDECIDED = "undecided"  # of the two, nothing says which: the caller decides
    GAP = "gap"  # its local time does not exist: placed by its mtime


@dataclass(frozen=True)
class Placed:
    start_us: int
    how: How
    candidates: tuple[int, ...] = ()  # UNDECIDED: the instants to choose from


def place(name: SegmentName, duration_us: int, mtime_us: int | None) -> Placed:
    """Where the recording `name` names starts (pure; the module's rule)."""
    if name.offset:
        return Placed(name.start_us, How.OFFSET)
    if name.gap:
        placed = None if mtime_us is None else mtime_us - duration_us
        if placed is None or abs(placed - name.start_us) > MTIME_TRUSTED_US:
            return Placed(name.start_us, How.UNDECIDED, (name.start_us,))
        return Placed(placed, How.GAP)
    if not name.ambiguous:
        return Placed(name.start_us, How.NAME)
    if mtime_us is not None:
        early, late = name.instants[0], name.instants[-1]
        distances = sorted((abs(mtime_us - (c + duration_us)), c) for c in (early, late))
        (nearest, chosen), (_, _) = distances
        if nearest < (late - early) // 2:
            return Placed(chosen, How.MTIME)
    return Placed(name.instants[0], How.UNDECIDED, name.instants)


def same_time(a: Segment, b: Segment) -> bool:
    """Whether two recordings of one camera cover the same instants: they overlap by more
    than half the longer (pure). Neighbours that overlap by a frame or a rounded second,
    as recorders' files do, do not; nor does a short file inside a long one (the chain
    leaves out a recording the one before holds whole)."""
    overlap = min(a.end_us, b.end_us) - max(a.start_us, b.start_us)
    return overlap > max(a.end_us - a.start_us, b.end_us - b.start_us) // 2


def contradicted(a: Segment, b: Segment) -> bool:
    """Whether recording `b`, which starts inside `a`, shows `a`'s duration false (pure):
    `a` runs on more than OVERLAP_TRUSTED_US past `b`'s start, though it holds SPARSE
    times fewer bytes a second than `b`, which lasts at least EVIDENCE_US. A camera's
    recorder writes one file at a time, so such a file's timestamps claim hours its bytes
    cannot hold (jumps between its frames); a long file of the camera's usual density
    that holds a short one is believed, as is one beside a file too short to say."""
    if not a.start_us <= b.start_us < a.end_us - OVERLAP_TRUSTED_US:
        return False
    if b.end_us - b.start_us < EVIDENCE_US:
        return False
    return a.size * (b.end_us - b.start_us) * SPARSE < b.size * (a.end_us - a.start_us)


def chosen(
    segments: list[Segment], before: Segment | None = None
) -> tuple[list[Segment], list[Segment], list[Segment]]:
    """`segments` (by start, after `before`, the recording chosen last, if given) as a
    session plays them (pure): without those that cover the same instants as another (of
    two, the one written later, by modification time, is kept, so that no session plays
    the same time twice), nor those whose duration the next recording shows false
    (`contradicted`). The kept, the left out for their time, and those for their
    duration (`before` among either if it is left out)."""
    kept: list[Segment] = [before] if before is not None else []
    dropped: list[Segment] = []
    false: list[Segment] = []
    for segment in segments:
        while kept and contradicted(kept[-1], segment):
            false.append(kept.pop())
        last = kept[-1] if kept else None
        if last is not None and same_time(last, segment):
            if segment.mtime_ns > last.mtime_ns:
                dropped.append(kept.pop())
                kept.append(segment)
            else:
                dropped.append(segment)
            continue
        kept.append(segment)
    if before is not None and kept and kept[0] is before:
        kept.pop(0)
    return kept, dropped, false
