"""docs/benchmarks.md: the latest full run's table, the machine and the command."""

from __future__ import annotations

from pathlib import Path

from bench import cpu_bound, dashboard, listing, scheduled, store, streams, webhooks
from bench.peers import CELERY, DRAMATIQ, PEERS
from bench.plan import ROOT, Plan
from bench.results import Check

DOC = ROOT / "docs" / "benchmarks.md"
HISTORY = ROOT / "bench" / "history.md"  # written by hand: what each change bought
COMMAND = "make bench"

METHOD = """\
## How each number is measured

Everything runs on the one machine described above: the services, MariaDB, RabbitMQ and the
load generators share its cores. The suite makes a database (loaded from `db/init.sql`) and a
RabbitMQ vhost of its own, starts every service itself with the same settings a user would
give it (defaults, except the database, the vhost, the port, JSON logs and what each
measurement sets below), and drops both at the end. Every measurement has a warm-up
({warmup:g} s, or as stated) that is not counted, then runs for {measure:g} s.

- **Services.** "API x1" is `python main.py` in `api-service/src`, exactly as `make api` runs
  it; "API x2" is the same with `API_WORKERS=2` (uvicorn's supervisor and two processes, each
  with its own pools). Both use uvloop and httptools, as do the baselines.
- **Submit, {connections} conn.** `wrk -t1 -c{connections}` with `bench/lua/submit.lua`
  (one small JSON task per POST). Throughput counts 2xx answers only; p50 and p99 are wrk's.
  No worker runs: the tasks stay queued, so the queue can be counted.
- **Submit, {rate} req/s.** wrk cannot pace requests (and `wrk2` is not packaged in Debian), so
  `bench/paced.py` sends POSTs on a fixed schedule (open loop: a late answer does not delay the
  next request; a request that finds no idle connection opens one). Latency counts from when
  each request went out on schedule (any wait for a connection included, the event loop's
  timer slack of under 1 ms not), so a server that falls behind shows it instead of slowing
  the load. A server more than 2 s of requests behind cannot keep the rate: the run stops
  there and the table says "fell behind".
- **Read by id.** {rows:,} rows loaded in bulk (multi-row INSERTs of 5,000 rows in sorted id
  order, on two connections; nothing is cached between runs): a month of tasks, created one
  after the other in id order (so the load appends to every index: in a random order it takes
  six times as long); the newest {moving:.1%} PENDING or PROCESSING, the rest {mix} at random
  (seeded: the same rows every run), each with the columns the services leave for its status.
  Then `wrk -c{connections}` with `bench/lua/read.lua`, which GETs ids drawn at random from
  {sample:,} of them. The ratio is against the hello-world POST, the framework's ceiling for a
  stock FastAPI route. Our routes are served by `LeanRoute`, without the per-request
  dependency machinery that the hello-world route goes through (README, Design decisions), so
  the ratio can pass 100%.
- **Drain.** {drain:,} PENDING rows and their messages are queued before one worker process
  starts (delay 0, `WORKER_CONCURRENCY={concurrency}`); the rate is the completions per second
  between the first and the last row's `completed_at`, so start-up is left out.
  Each peer's worker drains its own {peer_drain:,} tasks the same way, queued by its own
  library before it starts (their task sets `completed_at` from Python's clock). Celery's
  `-c 2` (prefork, Celery's defaults otherwise): "per process" divides its rate by its 2 pool
  processes. Dramatiq's `{dramatiq_flags}`: one worker process, so its rate is the
  per-process figure. Peak memory sums each worker's processes, its supervisor included.
- **CPU-bound tasks (`hash_chain`).** {hash_tasks:,} tasks of the type `hash_chain` with
  `rounds={rounds:,}` (SHA-256 applied that many times, about 30 ms a task here), each with a
  seed of its own. First the baseline, with nothing else running: the worker's own function,
  `chain(rounds, seed)` of `worker-service/src/handlers/hash_chain.py`, for the same seeds in
  a plain loop in one process (`bench/chain_loop.py`; its imports not timed). Then the rows
  (PENDING, with their type and payload) and their messages are queued as for the drain, and
  one worker starts with `CPU_POOL_SIZE` = the machine's cores and `WORKER_CONCURRENCY` four
  times that. Its pool starts on the first CPU-bound task, so the first tasks, {warmup:g} s of
  every core at the loop's speed, are a warm-up that is not counted; the rate is the others'
  completions over the time from the warm-up's last `completed_at` to the last one. The ideal
  is the loop's rate times the cores; what the ratio misses of it is the pool's cost (pickling,
  a pipe per process, the chains' progress messages) and the worker's own claims and
  completions, with MariaDB and RabbitMQ, on the same cores. Honesty: every task COMPLETED
  once with the loop's digest for its seed (the warm-up repeats the measured seeds), and the
  loop's first digest equal to the suite's own SHA-256 chain.
- **End-to-end overhead.** The API x1 and one worker with a simulated delay of exactly 0, so
  nothing needs subtracting; POSTs at {e2e_rate} req/s from the paced generator. For each task:
  the row's `completed_at` (MariaDB's clock) minus when the client sent the request (the same
  machine's clock); `completed_at` is set when the completing UPDATE starts, so its commit
  (well under a millisecond here) is not counted. "created_at -> completed_at" is the part
  inside the services.
- **In flight.** {in_flight_tasks:,} tasks queued, one worker with
  `WORKER_CONCURRENCY={in_flight}` and the delay at {low:g}-{high:g} s. After a
  {in_flight_warmup:g} s warm-up (all slots start together, so completions bunch up at first),
  completions are counted for {measure:g} s while the PROCESSING rows are sampled every 0.5 s.
  Peak memory is the worker's VmHWM from /proc.
- **List pages and stats.** Over the same {rows:,} rows, on the API x1: `GET /api/tasks` with
  `limit={page}` (the largest page), alone and with `status={status}`, and the page
  {deep:,} rows deep of each: its cursor is reached once by following `next_cursor` through
  {deep_pages} pages (the rows on those pages and on the deep one must be the table's newest
  {walked:,} of that filter, in order, each once: an honesty check), then that cursor's page is
  asked for again and again. Each URL is timed by `wrk -c{list_connections}` with
  `bench/lua/get.lua` (warm-up, then {measure:g} s): a few connections, enough to keep the API
  busy, few enough that the latency is mostly the answer's own rather than a queue's. The same
  page asked for again finds its rows in MariaDB's buffer pool: these are the figures of a page
  that is read often. `GET /api/tasks/stats` is timed the same way (it sums the 80 rows of
  `task_counts`, which the transitions keep); its counts must equal a `COUNT(*)` of the table's
  rows.
- **Dashboard page load.** Over the same {rows:,} rows, on the API x1 (`task_counts` is
  recounted after the bulk load, so the counts are the rows'; `task_throughput` is not filled
  by it: the chart shows what the submit measurement left in the last hour, and its call reads
  at most an hour of per-minute rows whatever the table holds). Debian's Chromium, headless,
  driven through Playwright from the suite's process, loads `/dashboard` once as a warm-up
  (the fresh browser's first page, reported beside the figure, not in it), then
  {dashboard_loads} first visits, each in a new browser context (nothing cached: the page, its
  script, stylesheet and icon are fetched), and {dashboard_loads} loads in new tabs of one
  context that has loaded it before, as a user opens it again (the files, named by a hash of
  their content and sent as `immutable`, come from the cache; the target is these loads' p50).
  Each load makes the script's calls
  (`GET /api/tasks/stats`, `GET {dashboard_list}`, `GET /api/tasks/throughput?minutes=60`,
  `GET /api/queue`, the four it waits for, and the `/api/events` stream it keeps open). The
  figure is `performance.getEntriesByName("dashboard-ready")[0].startTime`: from the
  navigation's start to the mark the script makes once the counts, the table, the chart and
  the backlog are drawn. The four calls' durations come from the page's Resource Timing
  entries: each load's slowest, each call's p50, and the load cut into the time before the
  first call starts (the page and its script), the calls (first start to last end) and the
  time after them (the answers parsed and drawn, and whatever else holds the page's main thread).
  The browser shares the cores with the API, MariaDB and RabbitMQ.
  Honesty, on every load: ready (not an error) with all four calls made, the table's
  {dashboard_rows} rows the ids of `GET {dashboard_list}` in order (the table's newest
  {dashboard_rows}), and each `[data-count]` figure and the total equal to
  `GET /api/tasks/stats` (whose counts equal a `COUNT(*)` of the rows).
- **Event streams.** The API x1 and {streams:,} tasks submitted through it, with no worker yet;
  one `GET /api/tasks/{{id}}/events` stream is opened on each ({opening} at a time; a stream
  counts as open once its first frame, the task's `created` event, is in). The API's resident
  memory is read just before they open and with all of them open. Then one worker starts, with
  `WORKER_CONCURRENCY={stream_concurrency}` and a delay of {stream_low:g}-{stream_high:g} s,
  and each stream gets `started`, then `completed`, then ends. For each of those frames: when
  the client had it whole (`time.time()`) minus the `updated_at` in its `data:` JSON. That is
  the task row's time at the transition, which MariaDB takes when the transition's UPDATE
  starts, slightly before its commit, so the figure runs from the statement to the frame: the
  commit, the worker's broadcast through RabbitMQ's fanout exchange, the API's read of the new
  `task_events` row and its write to the socket. Both clocks are this machine's. The clients
  are plain sockets in the suite's own process (a coroutine each, no HTTP library), on the same
  two cores as the API, the worker, MariaDB and RabbitMQ. Honesty: each stream's events are
  exactly its task's `task_events` rows, each once and in order, and every stream ended after
  COMPLETED.
- **Scheduled tasks.** {scheduled_rows:,} PENDING tasks scheduled for later (run_at from an
  hour ahead, 2 s apart) are loaded in bulk (`INSERT ... SELECT` from a generated sequence,
  then `task_counts` recounted), and a second scratch database of the same schema stays
  empty. The dispatcher's pass, as the API's dispatcher makes it (its two `FOR UPDATE SKIP
  LOCKED` SELECTs of `idx_tasks_undispatched`, the outbox marks of what it published, its
  commit, then the read of the next run_at), is timed {scheduled_passes:,} times on each
  database by turns, after {warmup_passes} untimed ones: first with nothing due, then with
  {due} tasks fallen due before each pass (stored through the repository as the API stores
  them; their publish is recorded in memory, so the figure is the database's share). The
  baseline is the same pass on the empty database. Then, with the rows still waiting, one
  worker (delay 0) and the API x1 with its defaults (`DISPATCH_INTERVAL_SECONDS` included):
  {scheduled_tasks:,} POSTs spread evenly over {spread:g} s, each with a `run_at` {lead:g} s
  after it is sent; for each task `started_at - run_at` (MariaDB's clock and the API's, both
  this machine's). Honesty: every due task published once, none started before its run_at,
  and the rows waiting for later all still PENDING and undispatched.
- **Webhooks.** {webhook_deliveries:,} COMPLETED tasks, each with its `callback_url` and its
  delivery due now (the `webhook_deliveries` row its final transition would write), are
  loaded straight into the tables; then one webhook sender (`python sender.py` in
  `api-service/src`, as `make webhook-sender` runs it, `WEBHOOK_CONCURRENCY` at its default)
  sends them to the suite's own HTTP receiver (`testkit/receiver.py`, in the suite's process,
  on 127.0.0.1), once answering each POST with a 204 at once and once after
  {webhook_slow_ms:g} ms. The rate counts from the first request's arrival to the last
  delivery's record (its row's `updated_at`; both this machine's clock), so the sender's
  start-up is left out. One attempt at a time, the slow receiver would allow
  {webhook_serial:g} deliveries a second: the ratio is against that. Honesty: every delivery
  received exactly once, with its own webhook-id and a signature that `standardwebhooks`
  verifies, and recorded delivered after one attempt.
- **Memory.** Resident memory (VmRSS) one second after start-up, before any load; for
  uvicorn `--workers 2` and the peers, summed over the process and its children. 1 MB = 10^6 bytes.
- **Honesty.** After each load: the 2xx answers, the rows in the table and the messages on the
  queue must agree. wrk drops the requests still in flight when it stops, so those (at most one
  per connection per run) may add rows, but each row must have its message. After each drain:
  every task COMPLETED once (attempts = completions), no message left. A disagreement fails the
  run.
- **Peers**, yardsticks, not part of the product: each in `bench/<name>_peer/` with its own
  fully pinned requirements and venv (`bench/.venv-<name>`, made by the suite), FastAPI
  {fastapi}, SQLAlchemy {sqlalchemy} and PyMySQL {pymysql} in both, so that only the
  task-queue library differs. Both run `bench/peer_common/`: a FastAPI `def` route with a
  SQLAlchemy ORM session per request (insert, commit), then the library's enqueue; the task
  updates the row through the ORM to PROCESSING (commit), sleeps the delay, then to COMPLETED
  (commit). Their APIs run under uvicorn with the same flags as ours.
  - **Celery peer**: Celery {celery} (kombu {kombu}). The route calls
    `process_task.delay(task_id)`, which by Celery's default does not wait for the broker's
    publisher confirm. Worker: `{celery_worker}`.
  - **Dramatiq peer**: Dramatiq {dramatiq} (pika {pika}), `RabbitmqBroker(confirm_delivery=True)`:
    each `process_task.send(task_id)` waits for RabbitMQ's publisher confirm, as our API's
    publishes do. Worker: `{dramatiq_worker}`: one process, so
    that its rate is its per-process figure, with Dramatiq's default of 8 threads (they share
    one GIL: they overlap the task's MySQL round trips, not its Python; in a trial on this
    machine 8 drained faster than 2, 16 or 32) and its defaults otherwise (its middleware,
    20 retries, a prefetch of 2 messages per thread).

## Profiling

`PYTHONPATH=. .venv/bin/python -m bench.hotspots [--read] [--seconds 10]` (as root: py-spy
attaches to the process) starts the API x1 in a scratch database and vhost, drives it like the
submit (or read) measurement, records it with py-spy (installed into .venv when missing) and
prints the cores the API, MariaDB, RabbitMQ and wrk used, and where the API's Python time goes.
"""


def _versions() -> dict[str, str]:
    """The peers' pinned versions and worker commands, for the method's text (a shared
    package's versions as "a / b" if the two pins ever differ)."""
    shared = {
        name: " / ".join(sorted({peer.pinned(name) for peer in PEERS}))
        for name in ("fastapi", "sqlalchemy", "pymysql")
    }
    return {
        "celery": CELERY.pinned("celery"),
        "kombu": CELERY.pinned("kombu"),
        "dramatiq": DRAMATIQ.pinned("dramatiq"),
        "pika": DRAMATIQ.pinned("pika"),
        "celery_worker": " ".join(CELERY.worker),
        "dramatiq_worker": " ".join(DRAMATIQ.worker),
        "dramatiq_flags": DRAMATIQ.worker_flags,
        **shared,
    }


def write_doc(
    *,
    plan: Plan,
    table: str,
    checks: list[Check],
    machine: list[str],
    when: str,
    commit: str,
    minutes: float,
) -> Path:
    low, high = plan.in_flight_delay
    method = METHOD.format(
        warmup=plan.warmup_seconds,
        measure=plan.measure_seconds,
        connections=plan.connections,
        rate=plan.fixed_rate,
        rows=plan.read_rows,
        sample=plan.read_sample_ids,
        drain=plan.drain_tasks,
        peer_drain=plan.peer_drain_tasks,
        hash_tasks=plan.hash_chain_tasks,
        rounds=cpu_bound.ROUNDS,
        concurrency=plan.drain_concurrency,
        e2e_rate=plan.end_to_end_rate,
        in_flight_tasks=plan.in_flight_tasks,
        in_flight=plan.in_flight,
        low=low,
        high=high,
        in_flight_warmup=plan.in_flight_warmup_seconds,
        moving=store.MOVING_SHARE,
        mix=", ".join(f"{share}% {status}" for status, share in store.FINISHED_MIX.items()),
        page=listing.PAGE_SIZE,
        status=listing.FILTER,
        deep=listing.DEEP_PAGES * listing.PAGE_SIZE,
        deep_pages=listing.DEEP_PAGES,
        walked=(listing.DEEP_PAGES + 1) * listing.PAGE_SIZE,
        list_connections=plan.list_connections,
        dashboard_loads=plan.dashboard_loads,
        dashboard_list=dashboard.LIST_CALL,
        dashboard_rows=dashboard.PAGE_ROWS,
        streams=plan.streams,
        opening=streams.OPENING_AT_ONCE,
        stream_concurrency=plan.stream_concurrency,
        stream_low=plan.stream_delay[0],
        stream_high=plan.stream_delay[1],
        scheduled_rows=plan.scheduled_rows,
        scheduled_passes=plan.scheduled_passes,
        due=scheduled.DUE_PER_PASS,
        warmup_passes=scheduled.WARMUP_PASSES,
        scheduled_tasks=plan.scheduled_tasks,
        spread=plan.scheduled_spread_seconds,
        lead=scheduled.LEAD_SECONDS,
        webhook_deliveries=plan.webhook_deliveries,
        webhook_slow_ms=webhooks.WEBHOOK_SLOW_SECONDS * 1000,
        webhook_serial=1 / webhooks.WEBHOOK_SLOW_SECONDS,
        **_versions(),
    )
    lines = [
        "# Benchmarks",
        "",
        "`make bench` starts the API (one and two uvicorn processes), the worker, a hello-world"
        " FastAPI app, a Celery and a Dramatiq peer against the local MariaDB and RabbitMQ,"
        " drives them (and loads the dashboard in Debian's Chromium, `/usr/bin/chromium` or"
        " `CHROMIUM`), stops them, prints the table below and rewrites this file. It installs"
        " wrk (Debian) when run as root, and makes the peers' venvs on first use. `make bench-smoke`"
        " runs the same code for a few seconds per measurement (CI runs it after `make test`): it checks"
        " that every measurement yields a number and that the honesty checks pass, not the"
        " targets.",
        "",
        "## Latest run",
        "",
        f"`{COMMAND}` on {when}, commit {commit}, {minutes:.1f} minutes.",
        "",
        *(f"- {line}" for line in machine),
        "",
        table,
        "",
        "Honesty checks of this run:",
        "",
        *(f"- {check.line()}" for check in checks),
        "",
        method,
        HISTORY.read_text().rstrip(),
        "",
    ]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines))
    return DOC
