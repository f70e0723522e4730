"""What the use cases need from the outside world, as `typing.Protocol`s.

The real adapters are `common.mysql` and `common.amqp`; the fakes for unit tests are in
`testkit.fakes`. Every method raises only our own errors (`common.errors`): an unavailable
backend is `DatabaseUnavailable` or `BrokerUnavailable`, never a driver's exception.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from common.messages import TaskMessage
from common.tasks import (
    CallbackState,
    Cancellation,
    Claim,
    DueDelivery,
    EventRow,
    IdempotencyKey,
    MinuteThroughput,
    NewTask,
    TaskEvent,
    TaskQuery,
    TaskRecord,
    TaskStatus,
)

PublishOne = Callable[[TaskRecord], Awaitable[bool]]


class TaskRepository(Protocol):
    """Storage for tasks. Every state change is one conditional UPDATE (common.tasks.TRANSITIONS)
    and writes the task's event (common.tasks.EventKind) in the same transaction."""

    async def create(self, task: NewTask) -> TaskRecord:
        """Insert the task as PENDING and not yet dispatched."""
        ...

    async def create_idempotent(
        self, task: NewTask, key: IdempotencyKey
    ) -> tuple[TaskRecord, bool]:
        """Create the task with `key`, or return the task the key already names and True.
        Raises IdempotencyKeyReused when the key was stored with another fingerprint."""
        ...

    async def purge_idempotency_keys(self, *, limit: int) -> int:
        """Delete up to `limit` expired idempotency keys; how many went."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        """The broker confirmed these tasks' messages: the dispatcher can leave them alone."""
        ...

    async def dispatch_undispatched(
        self, *, publish: PublishOne, limit: int, min_age_seconds: float
    ) -> int:
        """Lock up to `limit` PENDING tasks never confirmed as dispatched and due (older than
        `min_age_seconds` unless scheduled, skipping rows another dispatcher holds), call `publish` on each
        (concurrently) and mark those it confirmed. Returns how many were dispatched."""
        ...

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest scheduled task that is not due yet (None: none waits)."""
        ...

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        """PENDING -> PROCESSING and one more attempt. A PROCESSING task is taken over when
        its lease has expired, or at once when `steal` is set (the message was redelivered)."""
        ...

    async def complete(self, task_id: str, result: str | None = None) -> bool:
        """PROCESSING -> COMPLETED with completed_at and `result` (JSON text, or None);
        False when it was not PROCESSING."""
        ...

    async def report_progress(
        self, task_id: str, *, attempt: int, progress: float, note: str | None
    ) -> bool:
        """The running attempt's progress (0.0-1.0) and note, with a `progress` event; False
        when the task is no longer PROCESSING in that attempt."""
        ...

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        """PROCESSING -> PENDING with last_error, after a failed attempt that will be retried."""
        ...

    async def fail(self, task_id: str, error: str) -> bool:
        """PROCESSING -> FAILED with last_error, after the last attempt failed."""
        ...

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        """FAILED -> PENDING with a fresh attempt budget, not yet dispatched (a re-drive).
        None when the task is not FAILED."""
        ...

    async def cancel(self, task_id: str) -> Cancellation | None:
        """PENDING or PROCESSING -> CANCELLED; None for an unknown task."""
        ...

    async def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], bool]:
        """A page of the query's tenant's tasks, newest first, and whether more follow."""
        ...

    async def count_by_status(self, tenant: str = "") -> dict[TaskStatus, int]:
        """How many of `tenant`'s tasks have each status."""
        ...

    async def throughput(self, tenant: str = "", *, minutes: int = 60) -> list[MinuteThroughput]:
        """How many of `tenant`'s tasks were submitted and completed in each of the last
        `minutes` UTC minutes (1-1440), oldest first, the current minute last, 0 included."""
        ...

    async def purge_throughput(self, *, limit: int) -> int:
        """Delete up to `limit` stored throughput minutes older than a day; how many went."""
        ...

    async def events_after(self, task_id: str, after_id: int, *, limit: int) -> list[TaskEvent]:
        """The task's events with an id above `after_id`, oldest first."""
        ...

    async def latest_event(self, task_id: str) -> TaskEvent | None: ...

    async def tenant_events_after(
        self, tenant: str, after_id: int, *, limit: int
    ) -> list[EventRow]:
        """Every event with an id above `after_id`, oldest first, `limit` at most: the
        tenant's with their event, the others' as their id alone."""
        ...

    async def newest_event_id(self) -> int:
        """The highest event id there is (0 for none): where a stream of "from now" starts."""
        ...

    async def ping(self) -> None: ...


class WebhookOutbox(Protocol):
    """The completion webhooks waiting to be sent (common.mysql.webhooks)."""

    async def take_due(self, *, limit: int, lease_seconds: float) -> list[DueDelivery]:
        """Up to `limit` due deliveries, each held for `lease_seconds`, its attempt counted."""
        ...

    async def fix_body(self, delivery_id: int, body: str) -> None:
        """The JSON every attempt of the delivery sends."""
        ...

    async def record(
        self,
        delivery_id: int,
        *,
        state: CallbackState,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None = None,
        attempted: bool = True,
    ) -> None:
        """An attempt's outcome: delivered, failed, or pending until `next_attempt_at`
        (`attempted` False: the attempt counted when it was taken was not made)."""
        ...


class TaskPublisher(Protocol):
    """The one way a task message reaches the broker: the API's first publish, the outbox
    dispatcher, the worker's retries and the re-drive all call `publish`."""

    @property
    def is_open(self) -> bool:
        """Whether a broker connection is up; a publish while it is not fails at once."""
        ...

    async def publish(
        self,
        message: TaskMessage,
        *,
        attempts: int = 0,
        lookups: int = 0,
        delay_seconds: float = 0.0,
    ) -> None:
        """Queue `message` for a worker, after `delay_seconds` (a retry's backoff) or at once,
        carrying how many attempts were made and how often its row was looked for in vain.
        Returns once the broker confirmed it; raises BrokerUnavailable otherwise, within
        PUBLISH_TIMEOUT_SECONDS."""
        ...

    async def ping(self) -> None:
        """Raises BrokerUnavailable unless the broker answers, within PUBLISH_TIMEOUT_SECONDS."""
        ...


class Delivery(Protocol):
    """One task message handed to a worker. Settling it raises only BrokerUnavailable (the
    connection is gone: the broker will deliver the message again)."""

    @property
    def body(self) -> bytes: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def redelivered(self) -> bool:
        """The broker delivered it before, to a consumer that did not settle it."""
        ...

    @property
    def attempts(self) -> int:
        """Attempts already made, as the publisher recorded them."""
        ...

    @property
    def lookups(self) -> int:
        """Times a worker looked for the task's row and did not find it."""
        ...

    async def ack(self) -> None: ...

    async def requeue(self) -> None: ...

    async def dead_letter(self) -> None: ...


class DeadLetters(Protocol):
    """The dead-letter queue, read one message at a time. Messages neither acked nor
    dead-lettered again go back to the queue when the reader is closed."""

    async def take(self) -> Delivery | None:
        """The next message, or None when the queue is empty."""
        ...
