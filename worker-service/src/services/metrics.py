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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.metrics import UNKNOWN_TYPE, exposition, task_type_label
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
_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0
)  # fmt: skip


class WorkerMetrics:
    """Every metric of one worker, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.finished = Counter(
            "task_worker_tasks_finished",
            "Deliveries whose task this worker finished, by type and outcome",
            ["type", "outcome"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "task_worker_attempt_duration_seconds",
            "Attempts run here, from the claim to the outcome committed",
            ["type"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "task_worker_queue_wait_seconds",
            "Claim time minus the time the task became due (run_at, creation, or a retry's"
            " delay over)",
            ["type"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "task_worker_tasks_in_flight",
            "Deliveries being processed now",
            registry=registry,
            multiprocess_mode="livesum",
        )
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

    def dead_lettered(self, task_type: str | None = None) -> None:
        """A message dead-lettered without an attempt here (unreadable, or its row never found)."""
        label = UNKNOWN_TYPE if task_type is None else task_type_label(task_type)
        self.finished.labels(label, "dead_lettered").inc()

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
        self.finished.labels(type_label, label).inc()
        if outcome in ATTEMPTED:
            self.attempt_seconds.labels(type_label).observe(seconds)
            if due_at is not None:
                self.queue_wait.labels(type_label).observe(max(0.0, claimed_at - due_at))

    def backend_state(self, backend: Backend, *, up: bool) -> None:
        """Whether `backend` answers now; back after being lost counts one reconnect."""
        was = self._up[backend]
        if up and was is False:
            self.reconnects.labels(backend).inc()
        if up or was is not None:
            self._up[backend] = up

    def exposition(self) -> bytes:
        return exposition(self.registry)


async def watch_broker(
    metrics: WorkerMetrics, connected: Callable[[], bool], *, interval_seconds: float = 0.5
) -> None:
    """Forever: sample the broker link's state (a flag read), so that a reconnection is
    counted even when no delivery comes to notice it. Cancel it to stop."""
    while True:
        metrics.backend_state("broker", up=connected())
        await asyncio.sleep(interval_seconds)
