"""How long and how much each measurement runs: the full suite and the smoke run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

# Not resolved: a checkout reached through a symlink benchmarks its own services.
ROOT = Path(__file__).absolute().parents[1]
BENCH = ROOT / "bench"


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    warmup_seconds: float
    measure_seconds: float
    settle_seconds: float  # after a service starts, before its idle memory is read
    connections: int
    fixed_rate: int  # requests per second, for the paced submit runs
    end_to_end_rate: int  # requests per second, for the end-to-end run
    read_rows: int
    read_sample_ids: int
    drain_tasks: int
    peer_drain_tasks: int  # each peer's: they drain a few hundred a second, the smoke run fewer
    drain_concurrency: int
    hash_chain_tasks: int  # measured `hash_chain` tasks (bench.cpu_bound), ~30 ms each
    in_flight: int
    in_flight_delay: tuple[float, float]
    in_flight_warmup_seconds: float
    list_connections: int  # wrk's connections for the list pages and the stats
    dashboard_loads: int  # measured loads of /dashboard in Chromium, after one warm-up
    streams: int  # event streams held open on one API process
    stream_concurrency: int  # WORKER_CONCURRENCY while the streamed tasks run
    stream_delay: tuple[float, float]  # their simulated delay
    scheduled_rows: int  # tasks waiting for later while the dispatcher's passes are timed
    scheduled_passes: int
    scheduled_tasks: int  # due tasks run through the API and a worker (bench.scheduled)
    scheduled_spread_seconds: float  # their run_ats spread over this
    webhook_deliveries: int  # due at once, sent by one webhook sender (bench.webhooks)
    check_targets: bool

    @property
    def in_flight_tasks(self) -> int:
        """Enough queued tasks to keep `in_flight` busy until the window closes."""
        mean_delay = sum(self.in_flight_delay) / 2
        rate = self.in_flight / mean_delay
        busy = self.in_flight_warmup_seconds + self.measure_seconds
        return self.in_flight + math.ceil(rate * busy * 1.3)


FULL = Plan(
    name="full",
    warmup_seconds=3.0,
    measure_seconds=15.0,
    settle_seconds=1.0,
    connections=64,
    fixed_rate=500,
    end_to_end_rate=200,
    read_rows=1_000_000,
    read_sample_ids=100_000,
    drain_tasks=20_000,
    peer_drain_tasks=20_000,
    drain_concurrency=128,
    hash_chain_tasks=600,
    in_flight=1_000,
    in_flight_delay=(5.0, 10.0),
    in_flight_warmup_seconds=10.0,
    list_connections=4,
    dashboard_loads=20,
    streams=1_000,
    stream_concurrency=100,
    stream_delay=(0.5, 1.5),
    scheduled_rows=1_000_000,
    scheduled_passes=1_000,
    scheduled_tasks=500,
    scheduled_spread_seconds=5.0,
    webhook_deliveries=2_000,
    check_targets=True,
)

SMOKE = Plan(
    name="smoke",
    warmup_seconds=1.0,
    measure_seconds=2.0,
    settle_seconds=0.5,
    connections=64,
    fixed_rate=200,
    end_to_end_rate=100,
    read_rows=20_000,
    read_sample_ids=5_000,
    drain_tasks=2_000,
    peer_drain_tasks=500,
    drain_concurrency=128,
    hash_chain_tasks=16,
    in_flight=200,
    in_flight_delay=(0.5, 1.0),
    in_flight_warmup_seconds=1.0,
    list_connections=4,
    dashboard_loads=3,
    streams=50,
    stream_concurrency=10,
    stream_delay=(0.1, 0.3),
    scheduled_rows=20_000,
    scheduled_passes=100,
    scheduled_tasks=100,
    scheduled_spread_seconds=2.0,
    webhook_deliveries=200,
    check_targets=False,
)
