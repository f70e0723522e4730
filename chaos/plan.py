"""What a chaos run does and when."""

from __future__ import annotations

from dataclasses import dataclass

from testkit.proxy import Fault


@dataclass(frozen=True)
class FaultWindow:
    backend: str  # "database" or "broker"
    shape: Fault
    at: float  # seconds after the run starts
    seconds: float


def rotation(backend: str, *, start: float, seconds: float, gap: float) -> list[FaultWindow]:
    """Every fault shape in turn, each for `seconds`, with `gap` of health between them."""
    return [
        FaultWindow(backend, shape, start + n * (seconds + gap), seconds)
        for n, shape in enumerate(Fault)
    ]


@dataclass(frozen=True)
class ChaosPlan:
    tasks: int  # submitted through the API
    submit_seconds: float  # spread over this long, while the faults happen
    concurrency: int  # client requests in flight
    kill_worker_every: float  # SIGKILL one of the two workers, then start it again
    faults: tuple[FaultWindow, ...]  # the two backends' rotations run side by side
    api_kill_at: float  # SIGKILL the API (requests between commit and publish die with it)
    orphans: int  # rows committed and never published, as a crash right after COMMIT leaves
    failure_rate: float
    drain_timeout: float

    @classmethod
    def full(cls, tasks: int = 2000) -> ChaosPlan:
        return cls(
            tasks=tasks,
            submit_seconds=60,
            concurrency=32,
            kill_worker_every=4,
            faults=(
                *rotation("database", start=3, seconds=4, gap=3),
                *rotation("broker", start=6, seconds=4, gap=4),
            ),
            api_kill_at=55,
            orphans=20,
            failure_rate=0.5,
            drain_timeout=180,
        )

    @classmethod
    def short(cls, tasks: int = 200) -> ChaosPlan:
        return cls(
            tasks=tasks,
            submit_seconds=16,
            concurrency=16,
            kill_worker_every=2.5,
            faults=(
                *rotation("database", start=1, seconds=1.2, gap=1),
                *rotation("broker", start=2, seconds=1.2, gap=1),
            ),
            api_kill_at=14.5,
            orphans=5,
            failure_rate=0.5,
            drain_timeout=90,
        )
