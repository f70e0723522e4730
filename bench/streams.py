"""8: one API process holding many `GET /api/tasks/{id}/events` streams while a worker runs
their tasks: the time from each transition's commit to its frame at the client, and the
API's memory with every stream open.

The clients are plain sockets in this process (one coroutine a stream, no HTTP library), so
the load generator stays cheap: it shares the machine's two cores with the API, the worker,
MariaDB and RabbitMQ.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import orjson

from bench import services
from bench.environment import BenchEnvironment
from bench.honesty import check_completed, reset
from bench.plan import Plan
from bench.results import Check, Streams, percentile
from bench.submit import BODY

OPENING_AT_ONCE = 50
_SUBMITTING_AT_ONCE = 32
_TIMEOUT_SECONDS = 120.0
# What each stream must show, in this order: its backlog (the latest event when it opened),
# then the worker's two transitions.
EXPECTED_KINDS = ["created", "started", "completed"]


@dataclass(frozen=True, slots=True)
class Frame:
    event_id: int
    kind: str
    updated_at: float  # the event's row time, seconds since the epoch
    arrived: float  # when the client had the whole frame, seconds since the epoch


@dataclass
class Stream:
    """One client: what it was sent, and whether the server ended it."""

    task_id: str
    frames: list[Frame] = field(default_factory=list)
    keep_alives: int = 0
    ended: bool = False  # the server sent the body's last chunk
    error: str | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # first frame in (or failed)

    def take(self, block: bytes, arrived: float) -> None:
        """One Server-Sent Events block (the text between blank lines)."""
        fields: dict[bytes, bytes] = {}
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                self.keep_alives += 1
                continue
            name, _, value = line.partition(b":")
            fields[name] = value.removeprefix(b" ")
        if b"data" not in fields:
            return  # the `retry:` advice
        data = orjson.loads(fields[b"data"])
        updated = datetime.fromisoformat(data["updated_at"]).timestamp()
        self.frames.append(Frame(int(fields[b"id"]), data["kind"], updated, arrived))
        self.opened.set()


async def follow(host: str, port: int, stream: Stream) -> None:
    """Read the task's event stream until the server ends it."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        stream.error = f"connect: {exc}"
        stream.opened.set()
        return
    try:
        writer.write(
            f"GET /api/tasks/{stream.task_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if head[9:12] != b"200" or b"transfer-encoding: chunked" not in head.lower():
            raise ValueError(f"answered {head[:12]!r}")
        await _read_chunks(reader, stream)
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    finally:
        stream.opened.set()
        writer.close()


async def _read_chunks(reader: asyncio.StreamReader, stream: Stream) -> None:
    pending = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            stream.ended = True
            return
        chunk = await reader.readexactly(size + 2)
        arrived = time.time()
        *blocks, pending = (pending + chunk[:-2]).split(b"\n\n")
        for block in blocks:
            stream.take(block, arrived)


async def _submit(url: str, count: int) -> list[str]:
    """`count` tasks through the API (their rows, `created` events and messages)."""
    gate = asyncio.Semaphore(_SUBMITTING_AT_ONCE)
    limits = httpx.Limits(max_connections=_SUBMITTING_AT_ONCE)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one() -> str:
            async with gate:
                answer = await client.post(
                    "/api/tasks", content=BODY, headers={"Content-Type": "application/json"}
                )
            answer.raise_for_status()
            task_id: str = orjson.loads(answer.content)["task_id"]
            return task_id

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def _open(port: int, streams: list[Stream]) -> list[asyncio.Task[None]]:
    """Open every stream, a few at a time, each once its first frame is in."""
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    followers: list[asyncio.Task[None]] = []

    async def one(stream: Stream) -> None:
        async with gate:
            followers.append(asyncio.create_task(follow("127.0.0.1", port, stream)))
            await stream.opened.wait()

    await asyncio.gather(*(one(stream) for stream in streams))
    return followers


def _stream_check(streams: list[Stream], table: dict[str, list[tuple[int, str]]]) -> Check:
    """Each stream: its task's events as the table holds them, each once, in order, then the
    end of the stream."""
    wrong = [
        s
        for s in streams
        if s.error is not None
        or not s.ended
        or [(f.event_id, f.kind) for f in s.frames] != table.get(s.task_id)
        or [f.kind for f in s.frames] != EXPECTED_KINDS
    ]
    frames = sum(len(s.frames) for s in streams)
    detail = f"{len(streams):,} streams, {frames:,} events, all ended after COMPLETED"
    if wrong:
        first = wrong[0]
        detail = (
            f"{len(wrong):,} of {len(streams):,} streams differ from task_events, e.g."
            f" {[f.kind for f in first.frames]} ended={first.ended} error={first.error}"
        )
    keep_alives = sum(s.keep_alives for s in streams)
    return Check(
        "event streams = task_events",
        f"{detail}; {keep_alives:,} keep-alive comments",
        not wrong,
    )


async def measure_streams(bench: BenchEnvironment, plan: Plan) -> tuple[Streams, list[Check]]:
    """Submit the tasks (no worker yet), open a stream on each, read the API's memory, then
    start a worker that runs them: each stream gets `started`, then `completed`, then ends."""
    low, high = plan.stream_delay
    # One tenant holds every stream here: the per-tenant bound (issue 15) is raised to fit.
    async with services.api(bench, processes=1, max_streams_per_tenant=plan.streams) as api:
        assert api.port is not None
        streams = [Stream(task_id) for task_id in await _submit(api.url, plan.streams)]
        await asyncio.sleep(plan.settle_seconds)
        idle = api.rss_bytes()
        started = time.monotonic()
        followers = await _open(api.port, streams)
        open_seconds = time.monotonic() - started
        await asyncio.sleep(plan.settle_seconds)
        open_rss = api.rss_bytes()
        async with services.worker(
            bench,
            processing_delay_min_seconds=low,
            processing_delay_max_seconds=high,
            worker_concurrency=plan.stream_concurrency,
        ):
            async with asyncio.timeout(_TIMEOUT_SECONDS):
                await asyncio.gather(*followers)
        api.check_alive()
        peak = api.peak_bytes()
    moved = [frame for stream in streams for frame in stream.frames[1:]]
    latencies = [(frame.arrived - frame.updated_at) * 1000 for frame in moved]
    queue = bench.queues.task_queue
    checks = [
        _stream_check(streams, await bench.table.events()),
        await check_completed(bench, what="event streams' tasks", queue=queue, tasks=len(streams)),
    ]
    await reset(bench, queue)
    numbers = Streams(
        streams=len(streams),
        events=len(moved),
        seconds=max(f.arrived for f in moved) - min(f.updated_at for f in moved) if moved else 0,
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
        open_seconds=open_seconds,
        idle_rss=idle,
        open_rss=open_rss,
        peak_rss=peak,
    )
    return numbers, checks
