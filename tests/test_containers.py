"""The container readers are total: any bytes give facts or one ProbeError, in bounded
memory and time. Every input that once failed is kept in tests/regressions/; hypothesis
mutates real footage (sizes, counts, truncations) for more."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.containers import mpegts
from agent.containers.errors import ProbeError
from agent.containers.files import opened
from agent.containers.probe import MediaFacts
from agent.containers.samples import read_recording
from agent.demo import Rendered

from .hostile_media import REGRESSIONS, all_regressions, read_in_bounds

MB = 1 << 20
MEMORY_LIMIT = 50 * MB  # "within 50 MB and 1 s per MB"


def read_all(path: Path) -> MediaFacts | None:
    """Every reader on one file: facts, or None where they said ProbeError; raises what
    else they raise. Its peak allocations and time are checked against the bounds."""
    size = path.stat().st_size
    facts, peak, seconds = read_in_bounds(path)
    assert peak < MEMORY_LIMIT, f"{path.name}: {peak / MB:.0f} MB"
    assert seconds < 1 + 2 * size / MB, f"{path.name}: {seconds:.1f} s"  # 2x: tracemalloc
    return facts


def test_the_regression_files_are_what_the_builder_makes() -> None:
    """tests/regressions/ holds the hostile inputs the builder makes, and those the
    fuzzer found (fuzz-*.bin, written by scripts/fuzz_containers.py), nothing else."""
    built = all_regressions()
    kept = {p.name for p in REGRESSIONS.iterdir() if not p.name.startswith("fuzz-")}
    assert sorted(kept) == sorted(built)
    for name, data in built.items():
        assert (REGRESSIONS / name).read_bytes() == data, name


@pytest.mark.parametrize("name", sorted(p.name for p in REGRESSIONS.iterdir()))
def test_every_hostile_file_ever_found_is_refused_in_bounds(name: str) -> None:
    """Each once took gigabytes, raised IndexError into the indexer, or claimed a day of
    footage: now each gives facts or one ProbeError, within 50 MB (the builder's are all
    refused, but samples-*, hostile to the export's sample tables alone, which refuse
    them)."""
    facts = read_all(REGRESSIONS / name)
    assert facts is None or name.startswith(("fuzz-", "samples-"))
    if name.startswith("samples-"):
        path = REGRESSIONS / name
        with opened(path) as (fd, size), pytest.raises(ProbeError):
            read_recording(fd, size)


def test_a_sparse_file_is_read_in_bounds(
    tmp_path: Path, footage: dict[str, list[Rendered]]
) -> None:
    """A valid head, then 20 GB of holes: refused at once by every reader, never read."""
    path = tmp_path / "sparse.ts"
    path.write_bytes(footage["ts"][0].path.read_bytes())
    os.truncate(path, 20 << 30)
    facts, _, seconds = read_in_bounds(path)
    assert facts is None
    assert seconds < 1


# -- hypothesis: real footage, mutated -------------------------------------------------------

BOUNDARY = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["u32", "byte", "truncate", "cut", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 4)))
        if kind == "u32" and len(data) >= 4:
            value = draw(st.sampled_from(BOUNDARY) | st.integers(0, 0xFFFFFFFF))
            data[at : at + 4] = struct.pack(">I", value)
        elif kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 4096))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 4096))]
    return bytes(data)


@pytest.fixture(scope="module")
def corpus(footage: dict[str, list[Rendered]]) -> list[bytes]:
    """The head of each recorder style's first recording: where the structures are (a
    moov, the first moofs, the PAT, PMT and first PES)."""
    return [runs[0].path.read_bytes()[: 256 * 1024] for runs in footage.values()]


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_mutation_of_real_footage_gives_facts_or_a_probe_error(
    tmp_path: Path, corpus: list[bytes], data: st.DataObject
) -> None:
    content = data.draw(mutated(corpus))
    path = tmp_path / "mutated"
    path.write_bytes(content)
    read_all(path)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    content=st.binary(max_size=188 * 20),
    shift=st.integers(0, (1 << 33) - 1),
    pid=st.integers(0, 0x1FFF),
)
def test_the_in_flight_rewrite_takes_any_bytes(content: bytes, shift: int, pid: int) -> None:
    """The rewrite of served MPEG-TS never raises and never changes a buffer's length."""
    buffer = bytearray(b"\x47" + content[1:] if content else b"")
    buffer = buffer[: len(buffer) - len(buffer) % 188]
    before = len(buffer)
    mpegts.rewrite(buffer, shift, {pid: 3})
    assert len(buffer) == before
