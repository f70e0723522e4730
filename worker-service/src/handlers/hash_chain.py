"""`hash_chain`: SHA-256 applied `rounds` times to the seed, in a pool process.

CPU-bound: run on the worker's event loop, a few million rounds would stall every other
task and the broker's heartbeats for seconds. `chain` runs in a pool process instead
(services.cpu_pool), which a cancel or the deadline terminates.
"""

from __future__ import annotations

import hashlib

from common.task_types import HashChainPayload
from handlers.context import TaskContext
from services.cpu_pool import report_progress

_REPORTS = 100  # progress reports over a chain, at most


def chain(rounds: int, seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    step = max(rounds // _REPORTS, 1)
    done = 0
    while done < rounds:
        for _ in range(min(step, rounds - done)):
            digest = hashlib.sha256(digest).digest()
        done += min(step, rounds - done)
        report_progress(done / rounds, f"{done:,} of {rounds:,} rounds")
    return digest.hex()


async def handle(ctx: TaskContext[HashChainPayload]) -> dict[str, object]:
    payload = ctx.payload
    digest = await ctx.run_in_process(chain, payload.rounds, payload.seed)
    return {"digest": digest, "rounds": payload.rounds}
