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
from common.mysql.repository import ClaimRequest, MySQLTaskRepository
from common.ports import PublishOne
from common.tasks import (
    Cancellation,
    Claim,
    IdempotencyKey,
    NewTask,
    TaskEvent,
    TaskQuery,
    TaskRecord,
    TaskStatus,
)


class GroupedTaskRepository:
    def __init__(self, inner: MySQLTaskRepository, *, timeout: float, max_batch: int = 500) -> None:
        self.inner = inner
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
            claims = await self.inner.claim_many(
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

    async def dispatch_undispatched(
        self, *, publish: PublishOne, limit: int, min_age_seconds: float
    ) -> int:
        return await self.inner.dispatch_undispatched(
            publish=publish, limit=limit, min_age_seconds=min_age_seconds
        )

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        return await self._claims.submit((ClaimRequest(task_id, steal), lease_seconds))

    async def complete(self, task_id: str) -> bool:
        return await self._completions.submit(task_id)

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        return await self.inner.release_for_retry(task_id, error)

    async def fail(self, task_id: str, error: str) -> bool:
        return await self.inner.fail(task_id, error)

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        return await self.inner.reset_failed(task_id)

    async def create_idempotent(
        self, task: NewTask, key: IdempotencyKey
    ) -> tuple[TaskRecord, bool]:
        return await self.inner.create_idempotent(task, key)

    async def purge_idempotency_keys(self, *, limit: int) -> int:
        return await self.inner.purge_idempotency_keys(limit=limit)

    async def cancel(self, task_id: str) -> Cancellation | None:
        return await self.inner.cancel(task_id)

    async def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], bool]:
        return await self.inner.list_tasks(query)

    async def count_by_status(self) -> dict[TaskStatus, int]:
        return await self.inner.count_by_status()

    async def events_after(self, task_id: str, after_id: int, *, limit: int) -> list[TaskEvent]:
        return await self.inner.events_after(task_id, after_id, limit=limit)

    async def latest_event(self, task_id: str) -> TaskEvent | None:
        return await self.inner.latest_event(task_id)

    async def ping(self) -> None:
        await self.inner.ping()
