"""Every run checks itself: 2xx answers, rows in MySQL and messages on the queue agree."""

from __future__ import annotations

import asyncio
import time

from bench.environment import BenchEnvironment
from bench.results import Check

_SETTLE_SECONDS = 15.0


async def settled_counts(bench: BenchEnvironment, queue: str) -> tuple[int, int]:
    """(rows, ready messages on `queue`) once both stop moving and agree, or at the deadline:
    an answer cut off when the load stopped may still be committing or publishing."""
    deadline = time.monotonic() + _SETTLE_SECONDS
    last: tuple[int, int] | None = None
    while True:
        counts = (await bench.table.count(), await bench.queues.depth(queue))
        if (counts == last and counts[0] == counts[1]) or time.monotonic() > deadline:
            return counts
        last = counts
        await asyncio.sleep(0.2)


async def check_accepted(
    bench: BenchEnvironment, *, what: str, queue: str, ok: int, unanswered: int
) -> Check:
    """Each 2xx has its row and its message. Requests that got no answer (cut off when the
    load stopped, or failed on the socket) may or may not have been taken: at most
    `unanswered` more rows, each with its message."""
    rows, messages = await settled_counts(bench, queue)
    cut = f" (+ up to {unanswered:,} cut off)" if unanswered else ""
    return Check(
        what,
        f"2xx {ok:,}{cut}, rows {rows:,}, messages {messages:,}",
        rows == messages and ok <= rows <= ok + unanswered,
    )


async def reset(bench: BenchEnvironment, *queues: str) -> None:
    """An empty table and empty queues for the next measurement."""
    await bench.table.truncate()
    for queue in queues:
        await bench.queues.purge(queue)


async def check_completed(
    bench: BenchEnvironment, *, what: str, queue: str, tasks: int, pending_ok: bool = False
) -> Check:
    """Every task COMPLETED exactly once (one attempt each); with `pending_ok`, the rest still
    PENDING with their messages back on the queue. Run once the worker has stopped."""
    counts = await bench.table.status_counts()
    attempts = await bench.table.attempts()
    depth = await bench.queues.depth(queue)
    completed, pending = counts.get("COMPLETED", 0), counts.get("PENDING", 0)
    others = {status: n for status, n in counts.items() if status not in ("COMPLETED", "PENDING")}
    ok = (
        completed + pending == tasks
        and not others
        and attempts == completed
        and depth == pending
        and (pending_ok or pending == 0)
    )
    detail = f"{tasks:,} queued, {completed:,} COMPLETED with {attempts:,} attempts"
    if pending_ok or pending:
        detail += f", {pending:,} PENDING"
    if others:
        detail += ", " + ", ".join(f"{n:,} {status}" for status, n in others.items())
    return Check(what, f"{detail}, {depth:,} messages left", ok)
