"""The worker's Prometheus metrics (METRICS_ENABLED), served at /metrics on its health port.

- task_worker_tasks_finished_total{type,outcome}: what became of each delivery that settled a
  task's fate here (see `FINISHED`); a delivery that only passes a task on (no handler here,
  a row not found yet) finishes nothing.
- task_worker_attempt_duration_seconds{type}: each attempt this worker ran, from its claim
  to its outcome committed.
- task_worker_queue_wait_seconds{type}: claim time minus the time the task became due: its
  run_at if scheduled, else when it was stored (or re-driven), or, for a retry or a postponed
  copy, when its delay ran out (the message's due_at, set by whoever published it; the two
  clocks are the API's host and this one).
- task_worker_tasks_in_flight: deliveries being processed now.
- task_worker_reconnects_total{backend}: database or broker back after being lost.

A type label is a catalogued type or `unknown`: a message's type never makes a new one.

The per-delivery series are plain numbers in this module, turned into metric families by a
prometheus-client collector when a scrape reads them (the library's custom-collector API):
recording one delivery is then a few dict and list updates, where prometheus-client's own
metrics take a lock and a `labels()` lookup for each of the five values a delivery changes.
Everything is recorded and read in the worker's one event-loop thread, so nothing is locked.
A worker is one process: its values never go through the multiprocess files.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from common.metrics import UNKNOWN_TYPE, task_type_label
from models.outcomes import Outcome

Backend = Literal["database", "broker"]

# The outcomes of process_task that finish a delivery's work, by their label.
FINISHED = {
    Outcome.COMPLETED: "completed",
    Outcome.FAILED: "failed",
    Outcome.RETRY: "retried",
    Outcome.CANCELLED: "cancelled",
    Outcome.DUPLICATE: "duplicate_skipped",
    Outcome.ALREADY_FINAL: "duplicate_skipped",
}
# Those in which this worker ran an attempt.
ATTEMPTED = frozenset({Outcome.COMPLETED, Outcome.FAILED, Outcome.RETRY, Outcome.CANCELLED})

# Attempts run from milliseconds to a task type's timeout (minutes); waits likewise.
SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0
)  # fmt: skip
# Each bucket's `le`, written as prometheus-client writes it (0.005, 1.0, +Inf).
_BUCKET_LABELS: tuple[str, ...] = tuple(
    floatToGoString(bound)  # type: ignore[no-untyped-call]
    for bound in (*SECONDS_BUCKETS, float("inf"))
)


class WorkerMetrics:
    """Every metric of one worker, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self._finished = _Counts(
            "task_worker_tasks_finished",
            "Deliveries whose task this worker finished, by type and outcome",
            ("type", "outcome"),
        )
        self._attempts = _Timings(
            "task_worker_attempt_duration_seconds",
            "Attempts run here, from the claim to the outcome committed",
        )
        self._queue_wait = _Timings(
            "task_worker_queue_wait_seconds",
            "Claim time minus the time the task became due (run_at, creation, or a retry's"
            " delay over)",
        )
        self._in_flight: Callable[[], int] = lambda: 0
        registry.register(_Families(self))
        self.reconnects = Counter(
            "task_worker_reconnects",
            "Times a backend was reached again after it was lost",
            ["backend"],
            registry=registry,
        )
        # None until first reached: the first connection is no reconnect.
        self._up: dict[Backend, bool | None] = {"database": None, "broker": None}
        for backend in self._up:
            self.reconnects.labels(backend)  # present at 0 from the start

    def count_in_flight(self, in_flight: Callable[[], int]) -> None:
        """task_worker_tasks_in_flight is `in_flight()` at each scrape (the consumer's count)."""
        self._in_flight = in_flight

    def dead_lettered(self, task_type: str | None = None) -> None:
        """A message dead-lettered without an attempt here (unreadable, or its row never found)."""
        label = UNKNOWN_TYPE if task_type is None else task_type_label(task_type)
        self._finished.add((label, "dead_lettered"))

    def processed(
        self, task_type: str, outcome: Outcome, *, claimed_at: float, seconds: float,
        due_at: float | None,
    ) -> None:  # fmt: skip
        """One process_task call that returned `outcome` after `seconds`; `claimed_at` and
        `due_at` are epoch seconds (the message's due_at: None for older messages)."""
        label = FINISHED.get(outcome)
        if label is None:
            return
        type_label = task_type_label(task_type)
        self._finished.add((type_label, label))
        if outcome in ATTEMPTED:
            self._attempts.observe(type_label, seconds)
            if due_at is not None:
                self._queue_wait.observe(type_label, max(0.0, claimed_at - due_at))

    def backend_state(self, backend: Backend, *, up: bool) -> None:
        """Whether `backend` answers now; back after being lost counts one reconnect."""
        was = self._up[backend]
        if up and was is False:
            self.reconnects.labels(backend).inc()
        if up or was is not None:
            self._up[backend] = up

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Families(Collector):
    """The per-delivery series of one WorkerMetrics, as metric families at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        yield metrics._finished.family()
        yield metrics._attempts.family()
        yield metrics._queue_wait.family()
        yield GaugeMetricFamily(
            "task_worker_tasks_in_flight", "Deliveries being processed now", metrics._in_flight()
        )


class _Counts:
    """A counter by labels: an int per label tuple."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self._values: dict[tuple[str, ...], int] = {}

    def add(self, labels: tuple[str, ...]) -> None:
        self._values[labels] = self._values.get(labels, 0) + 1

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, value in list(self._values.items()):
            family.add_metric(labels, value)
        return family


class _Timings:
    """A histogram by task type over SECONDS_BUCKETS: per type, the count of observations
    in each bucket alone (made cumulative at scrape time) and their sum."""

    def __init__(self, name: str, documentation: str) -> None:
        self._name, self._documentation = name, documentation
        self._counts: dict[str, list[int]] = {}  # the last slot is +Inf's
        self._sums: dict[str, float] = {}

    def observe(self, type_label: str, seconds: float) -> None:
        counts = self._counts.get(type_label)
        if counts is None:
            counts = self._counts[type_label] = [0] * (len(SECONDS_BUCKETS) + 1)
            self._sums[type_label] = 0.0
        counts[bisect.bisect_left(SECONDS_BUCKETS, seconds)] += 1  # a bound is `le`
        self._sums[type_label] += seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self._name, self._documentation, labels=("type",))
        for type_label, counts in list(self._counts.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_LABELS, counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([type_label], buckets, self._sums[type_label])
        return family


async def watch_broker(
    metrics: WorkerMetrics, connected: Callable[[], bool], *, interval_seconds: float = 0.5
) -> None:
    """Forever: sample the broker link's state (a flag read), so that a reconnection is
    counted even when no delivery comes to notice it. Cancel it to stop."""
    while True:
        metrics.backend_state("broker", up=connected())
        await asyncio.sleep(interval_seconds)
