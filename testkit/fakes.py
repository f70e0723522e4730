"""In-memory stand-ins for the ports (common.ports), for unit tests that need no services."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from common.errors import BrokerUnavailable, DatabaseUnavailable, IdempotencyKeyReused
from common.messages import TaskMessage
from common.ports import PublishOne
from common.tasks import (
    CANCELLABLE_STATUSES,
    FINAL_STATUSES,
    Cancellation,
    Claim,
    ClaimResult,
    EventKind,
    EventRow,
    IdempotencyKey,
    MinuteThroughput,
    NewTask,
    TaskEvent,
    TaskQuery,
    TaskRecord,
    TaskStatus,
    may_move,
)


class InMemoryTaskRepository:
    """Follows the same transition rules as the MySQL repository."""

    def __init__(self) -> None:
        self.rows: dict[str, TaskRecord] = {}
        self.leases: dict[str, datetime] = {}
        self.dispatched: set[str] = set()
        self.calls: list[str] = []
        self.failure: Exception | None = None  # raised by every call while set
        self.events: list[TaskEvent] = []
        self.keys: dict[tuple[str, str], tuple[bytes, str]] = {}

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.failure is not None:
            raise self.failure

    def fail_with_unavailable(self) -> None:
        self.failure = DatabaseUnavailable("database is down (fake)")

    async def create(self, task: NewTask) -> TaskRecord:
        self._enter("create")
        now = datetime.now(UTC)
        record = TaskRecord.pending(task, now)
        self.rows[task.task_id] = record
        self._event(task.task_id, EventKind.CREATED)
        return record

    async def create_idempotent(
        self, task: NewTask, key: IdempotencyKey
    ) -> tuple[TaskRecord, bool]:
        stored = self.keys.get((key.client, key.key))
        if stored is None:
            self.keys[(key.client, key.key)] = (key.fingerprint, task.task_id)
            return await self.create(task), False
        fingerprint, task_id = stored
        if fingerprint != key.fingerprint:
            raise IdempotencyKeyReused(key.key)
        return self.rows[task_id], True

    async def purge_idempotency_keys(self, *, limit: int) -> int:
        self._enter("purge_idempotency_keys")
        return 0

    def _event(self, task_id: str, kind: EventKind) -> None:
        row = self.rows[task_id]
        error = row.last_error if kind in (EventKind.RETRY_SCHEDULED, EventKind.FAILED) else None
        self.events.append(
            TaskEvent(
                len(self.events) + 1,
                task_id,
                kind,
                row.status,
                row.attempts,
                error,
                row.updated_at,
                progress=row.progress,
                note=row.progress_note,
            )
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        self._enter("get")
        return self.rows.get(task_id)

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        self._enter("mark_dispatched")
        self.dispatched.update(task_ids)

    async def dispatch_undispatched(
        self, *, publish: PublishOne, limit: int, min_age_seconds: float
    ) -> int:
        self._enter("dispatch_undispatched")
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=min_age_seconds)
        waiting = [
            row
            for row in self.rows.values()
            if row.task_id not in self.dispatched
            and row.status is TaskStatus.PENDING
            and (
                (row.run_at is None and row.updated_at <= cutoff)
                or (
                    row.run_at is not None
                    and row.run_at <= now
                    and (row.run_at > row.updated_at or row.updated_at <= cutoff)
                )
            )
        ]
        chosen = waiting[:limit]
        published = await asyncio.gather(*(publish(row) for row in chosen))
        sent = [row.task_id for row, ok in zip(chosen, published, strict=True) if ok]
        self.dispatched.update(sent)
        return len(sent)

    async def next_due_in(self) -> float | None:
        self._enter("next_due_in")
        now = datetime.now(UTC)
        later = [
            row.run_at
            for row in self.rows.values()
            if row.task_id not in self.dispatched and row.run_at is not None and row.run_at > now
        ]
        return min(later).timestamp() - now.timestamp() if later else None

    def _update(self, task_id: str, **changes: object) -> None:
        changes.setdefault("updated_at", datetime.now(UTC))
        self.rows[task_id] = dataclasses.replace(self.rows[task_id], **changes)  # type: ignore[arg-type]

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        self._enter("claim")
        row = self.rows.get(task_id)
        now = datetime.now(UTC)
        if row is None:
            return Claim(ClaimResult.NOT_FOUND)
        if row.status in FINAL_STATUSES:
            return Claim(ClaimResult.ALREADY_FINAL)
        lease_live = row.status is TaskStatus.PROCESSING and self.leases[task_id] > now
        if lease_live and not steal:
            return Claim(ClaimResult.HELD_ELSEWHERE)
        self.leases[task_id] = now + timedelta(seconds=lease_seconds)
        self.dispatched.add(task_id)
        self._update(
            task_id,
            status=TaskStatus.PROCESSING,
            attempts=row.attempts + 1,
            started_at=row.started_at or now,
        )
        self._event(task_id, EventKind.STARTED)
        return Claim(ClaimResult.CLAIMED, attempts=row.attempts + 1)

    async def complete(self, task_id: str, result: str | None = None) -> bool:
        self._enter("complete")
        now = datetime.now(UTC)
        return self._transition(
            task_id,
            TaskStatus.PROCESSING,
            EventKind.COMPLETED,
            status=TaskStatus.COMPLETED,
            completed_at=now,
            updated_at=now,
            result=None if result is None else orjson.loads(result),
            progress=1.0,
            progress_note=None,
        )

    async def report_progress(
        self, task_id: str, *, attempt: int, progress: float, note: str | None
    ) -> bool:
        self._enter("report_progress")
        row = self.rows.get(task_id)
        if row is None or row.status is not TaskStatus.PROCESSING or row.attempts != attempt:
            return False
        self._update(task_id, progress=progress, progress_note=note)
        self._event(task_id, EventKind.PROGRESS)
        return True

    def _transition(
        self, task_id: str, source: TaskStatus, kind: EventKind, **changes: object
    ) -> bool:
        row = self.rows.get(task_id)
        if row is None or row.status is not source:
            return False
        target = changes.get("status")
        assert isinstance(target, TaskStatus)
        assert may_move(source, target), (source, target)
        self._update(task_id, **changes)
        self._event(task_id, kind)
        return True

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        self._enter("release_for_retry")
        return self._transition(
            task_id,
            TaskStatus.PROCESSING,
            EventKind.RETRY_SCHEDULED,
            status=TaskStatus.PENDING,
            last_error=error[:500],
        )

    async def fail(self, task_id: str, error: str) -> bool:
        self._enter("fail")
        return self._transition(
            task_id,
            TaskStatus.PROCESSING,
            EventKind.FAILED,
            status=TaskStatus.FAILED,
            last_error=error[:500],
        )

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        self._enter("reset_failed")
        changed = self._transition(
            task_id,
            TaskStatus.FAILED,
            EventKind.REDRIVEN,
            status=TaskStatus.PENDING,
            attempts=0,
            last_error=None,
        )
        self.dispatched.discard(task_id)
        return self.rows[task_id] if changed else None

    async def cancel(self, task_id: str) -> Cancellation | None:
        self._enter("cancel")
        row = self.rows.get(task_id)
        if row is None:
            return None
        cancelled = row.status in CANCELLABLE_STATUSES and self._transition(
            task_id, row.status, EventKind.CANCELLED, status=TaskStatus.CANCELLED
        )
        return Cancellation(self.rows[task_id], row.status, cancelled=cancelled)

    async def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], bool]:
        self._enter("list_tasks")
        rows = sorted(self.rows.values(), key=lambda r: (r.created_at, r.task_id), reverse=True)
        chosen = [
            row
            for row in rows
            if row.tenant == query.tenant
            and (not query.statuses or row.status in query.statuses)
            and (query.type is None or row.type == query.type)
            and (query.created_after is None or row.created_at >= query.created_after)
            and (query.created_before is None or row.created_at < query.created_before)
            and (query.after is None or (row.created_at, row.task_id) < query.after)
        ]
        return chosen[: query.limit], len(chosen) > query.limit

    async def count_by_status(self, tenant: str = "") -> dict[TaskStatus, int]:
        self._enter("count_by_status")
        rows = [r for r in self.rows.values() if r.tenant == tenant]
        return {status: sum(r.status is status for r in rows) for status in TaskStatus}

    async def throughput(self, tenant: str = "", *, minutes: int = 60) -> list[MinuteThroughput]:
        """From the rows: each task in its created_at minute, and each COMPLETED one in its
        completed_at minute as well."""
        self._enter("throughput")

        def minute_of(moment: datetime) -> datetime:
            return moment.astimezone(UTC).replace(second=0, microsecond=0)

        rows = [r for r in self.rows.values() if r.tenant == tenant]
        submitted = [minute_of(r.created_at) for r in rows]
        completed = [
            minute_of(r.completed_at)
            for r in rows
            if r.status is TaskStatus.COMPLETED and r.completed_at is not None
        ]
        now = minute_of(datetime.now(UTC))
        window = [now - timedelta(minutes=back) for back in range(minutes - 1, -1, -1)]
        return [MinuteThroughput(m, submitted.count(m), completed.count(m)) for m in window]

    async def purge_throughput(self, *, limit: int) -> int:
        self._enter("purge_throughput")
        return 0

    async def events_after(self, task_id: str, after_id: int, *, limit: int) -> list[TaskEvent]:
        self._enter("events_after")
        found = [e for e in self.events if e.task_id == task_id and e.event_id > after_id]
        return found[:limit]

    async def latest_event(self, task_id: str) -> TaskEvent | None:
        self._enter("latest_event")
        return next((e for e in reversed(self.events) if e.task_id == task_id), None)

    async def tenant_events_after(
        self, tenant: str, after_id: int, *, limit: int
    ) -> list[EventRow]:
        self._enter("tenant_events_after")
        now = datetime.now(UTC)
        return [
            EventRow(
                e.event_id,
                (now - e.created_at).total_seconds(),
                e if self.rows[e.task_id].tenant == tenant else None,
            )
            for e in self.events
            if e.event_id > after_id
        ][:limit]

    async def newest_event_id(self) -> int:
        self._enter("newest_event_id")
        return self.events[-1].event_id if self.events else 0

    async def ping(self) -> None:
        self._enter("ping")


@dataclass(frozen=True)
class Published:
    message: TaskMessage
    attempts: int
    lookups: int
    delay_seconds: float


class RecordingPublisher:
    """The TaskPublisher port: keeps what it was asked to publish; can be told to fail like
    an unreachable broker."""

    def __init__(self) -> None:
        self.sent: list[Published] = []
        self.fail = False
        self.is_open = True

    @property
    def published(self) -> list[TaskMessage]:
        return [entry.message for entry in self.sent]

    async def publish(
        self,
        message: TaskMessage,
        *,
        attempts: int = 0,
        lookups: int = 0,
        delay_seconds: float = 0.0,
    ) -> None:
        if self.fail:
            raise BrokerUnavailable("broker is down (fake)")
        self.sent.append(Published(message, attempts, lookups, delay_seconds))

    async def ping(self) -> None:
        if self.fail or not self.is_open:
            raise BrokerUnavailable("broker is down (fake)")
