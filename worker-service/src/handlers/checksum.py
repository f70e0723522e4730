"""`checksum`: SHA-256 of a generated stream read chunk by chunk, the shape of work that
reads a large input (a download, an object from storage) without holding it in memory.

The stream is made from the payload's seed, so the same payload always has the same
checksum; each chunk is handed over as a read would be, letting the other tasks run between.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

from common.task_types import ChecksumPayload
from handlers.context import TaskContext


async def generated_stream(seed: int, size: int, chunk: int) -> AsyncIterator[bytes]:
    rng = random.Random(seed)
    left = size
    while left > 0:
        await asyncio.sleep(0)  # a read's await: the loop runs the others in between
        part = rng.randbytes(min(chunk, left))
        left -= len(part)
        yield part


async def handle(ctx: TaskContext[ChecksumPayload]) -> dict[str, object]:
    payload = ctx.payload
    digest = hashlib.sha256()
    read = chunks = 0
    async for part in generated_stream(payload.seed, payload.size_bytes, payload.chunk_bytes):
        digest.update(part)
        read += len(part)
        chunks += 1
        ctx.report_progress(read / payload.size_bytes, f"{read:,} of {payload.size_bytes:,} bytes")
    return {"sha256": digest.hexdigest(), "bytes": read, "chunks": chunks}
