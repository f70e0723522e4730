"""What both services' Prometheus metrics share: the registry a scrape reads, prometheus-client's
multiprocess mode for API_WORKERS > 1, and the label values that stay low-cardinality.

prometheus-client picks how a metric stores its values when `prometheus_client.values` is
first imported, from PROMETHEUS_MULTIPROC_DIR: so the directory is set in the parent process
before uvicorn starts its workers (`multiprocess_directory`), and each worker, importing
afresh, writes its values to files there that a scrape by any of them sums up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from common.task_types import CATALOGUE

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The label value of a task type that is not in the catalogue (a message's type is a user value).
UNKNOWN_TYPE = "unknown"


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Undispatched tasks that are due, and how long the oldest of them has been due (0: none)."""

    tasks: int = 0
    oldest_age_seconds: float = 0.0


async def no_backlog() -> OutboxBacklog:
    """The outbox of backends without one (the unit tests' fakes)."""
    return OutboxBacklog()


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[str]:
    """For the processes started inside it, an empty directory for their metric files: the
    one PROMETHEUS_MULTIPROC_DIR names (emptied: an earlier run's files would add up with
    theirs), or a new one, removed at the end. Enter it before the processes start."""
    given = os.environ.get(MULTIPROC_ENV)
    directory = given or tempfile.mkdtemp(prefix="task-api-metrics-")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)
            del os.environ[MULTIPROC_ENV]


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format of `registry`'s metrics or, in multiprocess mode, of every process's
    (read from their files at this moment)."""
    if multiprocess():
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(registry)


def task_type_label(name: str) -> str:
    """`name` if it is a catalogued task type, else `unknown`: never a new label value."""
    return name if name in CATALOGUE else UNKNOWN_TYPE


def status_class(status: int) -> str:
    """`2xx` for 200-299, and so on (`unknown` outside 100-599)."""
    return f"{status // 100}xx" if 100 <= status < 600 else "unknown"
