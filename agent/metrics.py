"""Prometheus metrics at /metrics (text format), from prometheus-client: what fleets of
boxes are monitored with. Counters of what happens are kept where it happens (the
session store, the limiter, the indexer); this module reads them at scrape time, and
counts the HTTP requests itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "nvr_playback"


@dataclass
class Snapshot:
    """The agent's state at scrape time, gathered by the /metrics handler."""

    sessions_live: int
    sessions_max: int
    sessions_created: int
    sessions_expired: int
    sessions_deleted: int
    ffmpeg_running: int
    ffmpeg_by_kind: dict[str, dict[str, int]]  # kind -> started, delayed, rejected_*
    index_segments: int
    index_cameras: int
    index_pending: int
    last_scan_seconds: float | None


class _State(Collector):
    def __init__(self, read: Callable[[], Snapshot | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        if state is None:
            return
        yield _gauge("sessions_live", "Live playback sessions", state.sessions_live)
        yield _gauge("sessions_max", "playback.max_sessions", state.sessions_max)
        for name, value in (("created", state.sessions_created),
                            ("expired", state.sessions_expired),
                            ("deleted", state.sessions_deleted)):  # fmt: skip
            yield _counter(f"sessions_{name}", f"Playback sessions {name}", value)
        yield _gauge("ffmpeg_running", "ffmpeg processes running", state.ffmpeg_running)
        for outcome in ("started", "delayed", "rejected_busy", "rejected_disk"):
            family = CounterMetricFamily(
                f"{_PREFIX}_ffmpeg_{outcome}", f"ffmpeg runs {outcome}, by kind", labels=["kind"]
            )
            for kind, counts in state.ffmpeg_by_kind.items():
                family.add_metric([kind], counts[outcome])
            yield family
        yield _gauge("index_segments", "Segments in the index", state.index_segments)
        yield _gauge("index_cameras", "Cameras in the index", state.index_cameras)
        yield _gauge("index_pending_files", "Files waiting to be indexed", state.index_pending)
        if state.last_scan_seconds is not None:
            yield _gauge("index_first_scan_seconds", "Duration of the first scan",
                         state.last_scan_seconds)  # fmt: skip


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{_PREFIX}_{name}", documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{_PREFIX}_{name}", documentation, value=value)


class Metrics:
    """One registry per application (so that tests and restarts start from zero)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{_PREFIX}_http_requests", "HTTP requests answered, by route and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            f"{_PREFIX}_http_request_seconds", "Time to answer a request (headers sent)",
            ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.segments_served = Counter(
            f"{_PREFIX}_segments_served", "Media segments served", registry=self.registry
        )
        self.bytes_served = Counter(
            f"{_PREFIX}_bytes_served", "Media bytes served", registry=self.registry
        )
        self._snapshot: Snapshot | None = None
        self.registry.register(_State(lambda: self._snapshot))

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition with `snapshot` as the state."""
        self._snapshot = snapshot
        return generate_latest(self.registry)
