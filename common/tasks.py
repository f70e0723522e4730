"""The task as both services see it: its record, its statuses and the moves between them.

Pure domain: no driver, no I/O. The ports that store and publish tasks are in `common.ports`,
the errors in `common.errors`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
# The statuses a cancel moves to CANCELLED.
CANCELLABLE_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING})

# Every status a task may move to from each status. Each write a repository makes is one of
# these moves, made by a conditional UPDATE on the source status.
TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset(
        {
            TaskStatus.PROCESSING,  # claimed by a worker
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.PROCESSING: frozenset(
        {
            TaskStatus.PROCESSING,  # taken over: the lease expired, or the message came back
            TaskStatus.COMPLETED,
            TaskStatus.PENDING,  # the attempt failed and will be retried
            TaskStatus.FAILED,  # the last attempt failed
            TaskStatus.CANCELLED,  # the worker that holds it stops its work
        }
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),  # re-driven
    TaskStatus.CANCELLED: frozenset(),
}


class EventKind(enum.StrEnum):
    """What a row of task_events records; each transition writes one."""

    CREATED = "created"
    STARTED = "started"  # claimed: an attempt begins
    PROGRESS = "progress"  # the running attempt's handler reported how far it is
    RETRY_SCHEDULED = "retry_scheduled"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REDRIVEN = "redriven"


def may_move(source: TaskStatus, target: TaskStatus) -> bool:
    return target in TRANSITIONS[source]


@dataclass(frozen=True, slots=True)
class NewTask:
    task_id: str
    title: str
    description: str
    metadata: dict[str, Any] | None
    type: str = "simulated"  # a name from common.task_types.CATALOGUE
    payload: dict[str, Any] | None = None  # valid for the type's payload model
    timeout_seconds: int | None = None  # None: the type's default
    run_at: datetime | None = None  # not to be published before then (None: at once)
    callback_url: str | None = None  # where its completion webhook goes
    tenant: str = ""  # the name of the API key that creates it ('' while keys are off)


class CallbackState(enum.StrEnum):
    PENDING = "pending"  # not final yet, or final and not delivered yet
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # refused (4xx), or every attempt failed


@dataclass(frozen=True, slots=True)
class Callback:
    """The task's completion webhook: its URL and how its latest delivery went."""

    url: str
    state: CallbackState = CallbackState.PENDING
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A completion webhook a sender took: `attempt` is the number of the attempt it makes."""

    delivery_id: int
    webhook_id: str  # the webhook-id header, the same on every attempt
    task_id: str
    url: str
    status: TaskStatus  # the final status it reports
    attempt: int
    body: str | None  # None until the first attempt fixes it


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of the tasks table; datetimes are timezone-aware UTC."""

    task_id: str
    title: str
    description: str | None
    status: TaskStatus
    metadata: dict[str, Any] | None
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    started_at: datetime | None = None
    type: str = "simulated"
    payload: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    result: Any = None  # the handler's return value (any JSON), once COMPLETED
    progress: float | None = None
    progress_note: str | None = None
    run_at: datetime | None = None
    callback: Callback | None = None
    tenant: str = ""  # whose task it is (see NewTask)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def pending(cls, task: NewTask, created_at: datetime) -> TaskRecord:
        """The row as `create` inserts it: PENDING, no attempts yet."""
        return cls(
            task_id=task.task_id,
            title=task.title,
            description=task.description,
            status=TaskStatus.PENDING,
            metadata=task.metadata,
            attempts=0,
            last_error=None,
            created_at=created_at,
            updated_at=created_at,
            completed_at=None,
            type=task.type,
            payload=task.payload,
            timeout_seconds=task.timeout_seconds,
            run_at=task.run_at,
            callback=None if task.callback_url is None else Callback(task.callback_url),
            tenant=task.tenant,
        )


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One row of task_events: the task just after one transition."""

    event_id: int
    task_id: str
    kind: EventKind
    status: TaskStatus
    attempts: int
    error: str | None
    created_at: datetime
    progress: float | None = None
    note: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of task_events as a tenant's stream reads them all in id order: every row
    counts, to tell a hole in the ids (a transition still committing) from another tenant's
    event, but only the tenant's own rows carry their event."""

    event_id: int
    age_seconds: float  # since the transition, by the database's clock
    event: TaskEvent | None  # None: another tenant's task


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """A page of the task list: newest first, optionally only some statuses, one type and a
    time range (`created_after` inclusive, `created_before` exclusive), after a cursor's
    position."""

    statuses: frozenset[TaskStatus] = frozenset()
    type: str | None = None  # only tasks of this type (a name from the catalogue)
    created_after: datetime | None = None
    created_before: datetime | None = None
    after: tuple[datetime, str] | None = None  # (created_at, task_id) of the last row seen
    limit: int = 20
    tenant: str = ""  # only this tenant's tasks (every query is one tenant's)


@dataclass(frozen=True, slots=True)
class MinuteThroughput:
    """How many of a tenant's tasks were submitted and completed in one UTC minute."""

    minute: datetime  # its start, in UTC
    submitted: int = 0
    completed: int = 0


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What a cancel did: the task as it is now, and the status it had before."""

    record: TaskRecord
    previous: TaskStatus
    cancelled: bool  # False: the task was final already, and is left as it was


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """An Idempotency-Key as stored: whose, the key, and the request body's fingerprint."""

    client: str
    key: str
    fingerprint: bytes  # SHA-256 of the body's canonical JSON
    ttl_seconds: float


class ClaimResult(enum.Enum):
    CLAIMED = "claimed"
    NOT_FOUND = "not_found"
    ALREADY_FINAL = "already_final"
    HELD_ELSEWHERE = "held_elsewhere"


@dataclass(frozen=True, slots=True)
class Claim:
    result: ClaimResult
    attempts: int = 0  # the task's attempt count after this claim (0 when not claimed)
