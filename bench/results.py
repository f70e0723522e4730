"""What each measurement found, and the honesty checks that vouch for it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Check:
    """One honesty check: what the clients were told agrees with the table and the queue."""

    what: str
    detail: str
    ok: bool

    def line(self) -> str:
        return f"{'agree' if self.ok else 'DISAGREE'}: {self.what}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Load:
    """Throughput and latency of one run under load."""

    rate: float  # 2xx answers per second
    p50_ms: float
    p99_ms: float
    answers: int
    fell_behind_after: float | None = None  # a paced run that stopped early: when, in seconds


@dataclass(frozen=True, slots=True)
class Submit:
    closed: Load  # wrk, `connections` connections
    paced: Load  # the fixed rate
    idle_rss: int
    peak_rss: int


@dataclass(frozen=True, slots=True)
class Drain:
    rate: float  # tasks per second from PENDING to COMPLETED
    processes: int  # worker processes doing the work
    peak_rss: int
    peak_processes: int = 1  # the processes peak_rss sums over (a supervisor included)


@dataclass(frozen=True, slots=True)
class HashChain:
    """`hash_chain` tasks through our worker, and the same chains in a plain loop."""

    tasks: int
    rounds: int
    pool_size: int  # CPU_POOL_SIZE: the machine's cores
    rate: float  # tasks per second after the warm-up, by their completed_at
    loop_rate: float  # tasks per second of `chain(rounds, seed)` in a loop, one process
    peak_rss: int  # the worker and its pool processes


@dataclass(frozen=True, slots=True)
class EndToEnd:
    overhead_p50_ms: float
    overhead_p99_ms: float
    server_p50_ms: float  # completed_at - created_at, inside the services
    server_p99_ms: float
    tasks: int
    worker_idle_rss: int


@dataclass(frozen=True, slots=True)
class InFlight:
    rate: float
    in_flight_min: int
    in_flight_mean: float
    peak_rss: int


@dataclass(frozen=True, slots=True)
class Listing:
    pages: dict[str, Load]  # by bench.listing.PAGES' keys
    stats: Load


@dataclass(frozen=True, slots=True)
class DashboardLoads:
    """/dashboard in Chromium (bench.dashboard): navigation start to the script's
    `dashboard-ready` mark, each load in a new tab of a browser that has loaded it before;
    first visits (a new browser context each) apart."""

    rows: int  # in the table
    loads: int  # measured, after the warm-up
    warmup_ms: float  # the first load in the fresh browser, not counted
    p50_ms: float
    p95_ms: float
    max_ms: float
    first_visit_p50_ms: float  # a new context each: nothing cached
    first_visit_p95_ms: float
    slowest_call_p50_ms: float  # each load's slowest API call (its Resource Timing duration)
    slowest_call_max_ms: float
    slowest_call: str  # the call most often the slowest, by bench.dashboard.CALLS' names
    slowest_call_loads: int  # in how many of the loads
    calls_p50_ms: dict[str, float]  # each call's duration, p50 over the loads
    # Where the time went, p50s: navigation start to the first call's start (the page, its
    # script and stylesheet), the first call's start to the last one's end, then the drawing.
    before_calls_p50_ms: float
    calls_span_p50_ms: float
    after_calls_p50_ms: float


@dataclass(frozen=True, slots=True)
class Streams:
    streams: int
    events: int  # transitions delivered while the streams were open (not the first frames)
    seconds: float  # from the first of those transitions to the last frame
    latency_p50_ms: float  # the event's updated_at (its row's time) to the frame's arrival
    latency_p99_ms: float
    open_seconds: float  # to open every stream and read each one's first frame
    idle_rss: int  # the API once the tasks are submitted, before the streams open
    open_rss: int  # with every stream open
    peak_rss: int


@dataclass(frozen=True, slots=True)
class PassTime:
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class Scheduled:
    """The dispatcher's pass with `rows` tasks waiting for later and on an empty table (with
    nothing due, and with `due_per_pass` due), and how late due tasks started through the
    API and a worker."""

    rows: int
    load_seconds: float
    passes: int
    due_per_pass: int
    idle_empty: PassTime
    idle_loaded: PassTime
    due_empty: PassTime
    due_loaded: PassTime
    tasks: int
    stored_late: int  # of them, answered only after their run_at (published at once)
    spread_seconds: float  # their run_ats spread over this
    late_p50_ms: float  # started_at - run_at
    late_p99_ms: float
    late_max_ms: float
    interval_seconds: float  # DISPATCH_INTERVAL_SECONDS


@dataclass(frozen=True, slots=True)
class WebhookRun:
    delay_seconds: float  # the receiver's, before each answer
    rate: float  # deliveries per second, from the first request to the last record
    peak_rss: int  # the sender's


@dataclass(frozen=True, slots=True)
class Webhooks:
    """The webhook sender's throughput against a receiver that answers at once and one that
    answers in `slow.delay_seconds` (bench.webhooks)."""

    deliveries: int
    concurrency: int  # WEBHOOK_CONCURRENCY
    instant: WebhookRun
    slow: WebhookRun


@dataclass
class Results:
    submit: dict[str, Submit] = field(default_factory=dict)
    read: dict[str, Load] = field(default_factory=dict)
    read_load_seconds: float = 0.0
    drain: dict[str, Drain] = field(default_factory=dict)
    hash_chain: HashChain | None = None
    end_to_end: EndToEnd | None = None
    in_flight: InFlight | None = None
    listing: Listing | None = None
    dashboard: DashboardLoads | None = None
    streams: Streams | None = None
    scheduled: Scheduled | None = None
    webhooks: Webhooks | None = None
    checks: list[Check] = field(default_factory=list)
