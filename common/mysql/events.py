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
from common.tasks import EventKind, TaskEvent, TaskStatus

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
