"""The TaskRepository port with its hot statements grouped (see common.batching).

Creating, reading, claiming and completing tasks are what every request and every delivery
does; here concurrent callers share one statement instead of each taking a connection and a
round trip. Each caller still waits at most DATABASE_TIMEOUT_SECONDS, however long the batch
ahead of its own takes. The outbox mark is written in the background: nobody waits for it,
and a lost mark only means the dispatcher sends a duplicate that the worker's claim turns away.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Any

from common.batching import BackgroundBatcher, Batcher
from common.errors import DatabaseRefused, DatabaseUnavailable
from common.forwarding import ForwardingTaskRepository
from common.mysql.repository import ClaimRequest, MySQLTaskRepository
from common.tasks import Claim, NewTask, TaskRecord


class GroupedTaskRepository(ForwardingTaskRepository):
    """The other calls go straight to the MySQL repository."""

    def __init__(self, inner: MySQLTaskRepository, *, timeout: float, max_batch: int = 500) -> None:
        super().__init__(inner)
        self._mysql = inner
        self._timeout = timeout
        bounded: dict[str, Any] = {
            "max_batch": max_batch,
            "timeout": timeout,
            "expired": self._expired,
        }
        # A row the database refuses (it passed validation, so a gap in it) fails its own
        # request only, not the others that shared its INSERT.
        self._creates = Batcher(inner.create_many, split_on=(DatabaseRefused,), **bounded)
        self._reads = Batcher(inner.get_many, **bounded)
        self._claims = Batcher(self._claim_batch, **bounded)
        self._completions = Batcher(inner.complete_many, **bounded)
        # Marks wait up to 50 ms to share a statement (and a commit) with more: the dispatcher
        # leaves rows alone for DISPATCH_MIN_AGE_SECONDS anyway.
        self._marks = BackgroundBatcher(
            inner.mark_dispatched, max_batch=max_batch, name="dispatch marks", linger_seconds=0.05
        )

    def _expired(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"MySQL did not answer within {self._timeout:g} s")

    async def _claim_batch(self, batch: list[tuple[ClaimRequest, float]]) -> list[Claim]:
        # One statement per lease length; a worker uses one, so in practice one statement.
        results: dict[int, Claim] = {}
        indexed = sorted(enumerate(batch), key=lambda entry: entry[1][1])
        for lease, group in groupby(indexed, key=lambda entry: entry[1][1]):
            members = list(group)
            claims = await self._mysql.claim_many(
                [request for _, (request, _) in members], lease_seconds=lease
            )
            results.update(
                (index, claim) for (index, _), claim in zip(members, claims, strict=True)
            )
        return [results[index] for index in range(len(batch))]

    async def create(self, task: NewTask) -> TaskRecord:
        return await self._creates.submit(task)

    async def get(self, task_id: str) -> TaskRecord | None:
        return await self._reads.submit(task_id)

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            self._marks.add(task_id)

    async def flush_marks(self) -> None:
        await self._marks.flush()

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        return await self._claims.submit((ClaimRequest(task_id, steal), lease_seconds))

    async def complete(self, task_id: str, result: str | None = None) -> bool:
        return await self._completions.submit((task_id, result))
