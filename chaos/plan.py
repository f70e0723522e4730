"""What a chaos run does and when."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChaosPlan:
    tasks: int  # submitted through the API
    submit_seconds: float  # spread over this long, while the faults happen
    concurrency: int  # client requests in flight
    kill_worker_every: float  # SIGKILL one of the two workers, then start it again
    broker_cut_at: float
    broker_cut_for: float
    database_cut_at: float
    database_cut_for: float
    api_kill_at: float  # SIGKILL the API (requests between commit and publish die with it)
    orphans: int  # rows committed and never published, as a crash right after COMMIT leaves
    failure_rate: float
    drain_timeout: float

    @classmethod
    def full(cls, tasks: int = 2000) -> ChaosPlan:
        return cls(
            tasks=tasks,
            submit_seconds=40,
            concurrency=32,
            kill_worker_every=4,
            broker_cut_at=6,
            broker_cut_for=10,
            database_cut_at=20,
            database_cut_for=10,
            api_kill_at=33,
            orphans=20,
            failure_rate=0.5,
            drain_timeout=180,
        )

    @classmethod
    def short(cls, tasks: int = 200) -> ChaosPlan:
        return cls(
            tasks=tasks,
            submit_seconds=8,
            concurrency=16,
            kill_worker_every=2,
            broker_cut_at=1.5,
            broker_cut_for=2,
            database_cut_at=4,
            database_cut_for=2,
            api_kill_at=6.5,
            orphans=5,
            failure_rate=0.5,
            drain_timeout=90,
        )
