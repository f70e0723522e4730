"""task_events: each transition's row, written inside the transition's own transaction.

An event is copied from the task row the transition just wrote (INSERT ... SELECT in the same
transaction), so its status, attempts and time are the row's, and a rolled-back transition
leaves no event behind. Each transition's UPDATE writes a token of its own into the row
(claim_token), and the INSERT copies the rows that carry it: exactly those it moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from common.mysql.connection import Statement
from common.tasks import EventKind, EventRow, TaskEvent, TaskStatus

EVENT_COLUMNS = "id, task_id, kind, status, attempts, error, progress, note, created_at"
# The kinds that carry the attempt's error.
_WITH_ERROR = frozenset({EventKind.RETRY_SCHEDULED, EventKind.FAILED})


def in_clause(count: int) -> str:
    return ", ".join(["%s"] * count)


def events_statement(kind: EventKind, task_ids: Sequence[str], *, token: str) -> Statement:
    """The INSERT of one event of `kind` for each of the tasks whose row carries `token` (the
    transition before it in the same transaction wrote it), as their rows read now."""
    error = "last_error" if kind in _WITH_ERROR else "NULL"
    return (
        "INSERT INTO task_events"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        " (task_id, kind, status, attempts, error, progress, note, created_at)"
        f" SELECT id, %s, status, attempts, {error}, progress, progress_note, updated_at"
        " FROM tasks"
        f" WHERE id IN ({in_clause(len(task_ids))}) AND claim_token = %s ORDER BY id",
        [kind.value, *task_ids, token],
    )


def event_of(row: tuple[Any, ...]) -> TaskEvent:
    event_id, task_id, kind, status, attempts, error, progress, note, created_at = row
    return TaskEvent(
        event_id=int(event_id),
        task_id=task_id,
        kind=EventKind(kind),
        status=TaskStatus(status),
        attempts=int(attempts),
        error=error,
        progress=progress,
        note=note,
        created_at=created_at.replace(tzinfo=UTC),
    )


# The tenant stream's read: the primary key's range after the last id, every tenant's rows
# (a hole in the ids is then a transition still committing, not another tenant's event),
# each joined to its task for the tenant and aged by the database's clock.
_TENANT_EVENTS = (
    "SELECT t.tenant <=> %s, TIMESTAMPDIFF(MICROSECOND, e.created_at, UTC_TIMESTAMP(6)), "  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
    + ", ".join(f"e.{column}" for column in EVENT_COLUMNS.split(", "))
    + " FROM task_events e LEFT JOIN tasks t ON t.id = e.task_id"
    " WHERE e.id > %s ORDER BY e.id LIMIT %s"
)


def tenant_events_statement(tenant: str, after_id: int, limit: int) -> Statement:
    return _TENANT_EVENTS, [tenant, after_id, limit]


def event_row_of(row: tuple[Any, ...]) -> EventRow:
    mine, age_microseconds, *columns = row
    event = event_of(tuple(columns)) if mine else None
    return EventRow(int(columns[0]), int(age_microseconds) / 1e6, event)
