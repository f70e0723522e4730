"""task_events: each transition's row, written inside the transition's own transaction.

An event is copied from the task row the transition just wrote (INSERT ... SELECT in the same
transaction), so its status, attempts and time are the row's, and a rolled-back transition
leaves no event behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from common.mysql.connection import Transaction
from common.tasks import EventKind, TaskEvent, TaskStatus

EVENT_COLUMNS = "id, task_id, kind, status, attempts, error, created_at"
# The kinds that carry the attempt's error.
_WITH_ERROR = frozenset({EventKind.RETRY_SCHEDULED, EventKind.FAILED})


def in_clause(count: int) -> str:
    return ", ".join(["%s"] * count)


async def record_events(
    transaction: Transaction,
    kind: EventKind,
    task_ids: Sequence[str],
    *,
    token: str | None = None,
) -> int:
    """One event of `kind` for each of the tasks (those whose row carries `token`, if given),
    as their rows read now, inside `transaction`. Returns how many were written."""
    if not task_ids:
        return 0
    error = "last_error" if kind in _WITH_ERROR else "NULL"
    owned = " AND claim_token = %s" if token is not None else ""
    args: list[object] = [kind.value, *task_ids]
    if token is not None:
        args.append(token)
    return await transaction.execute(
        "INSERT INTO task_events (task_id, kind, status, attempts, error, created_at)"
        f" SELECT id, %s, status, attempts, {error}, updated_at FROM tasks"
        f" WHERE id IN ({in_clause(len(task_ids))}){owned} ORDER BY id",
        args,
    )


def event_of(row: tuple[Any, ...]) -> TaskEvent:
    event_id, task_id, kind, status, attempts, error, created_at = row
    return TaskEvent(
        event_id=int(event_id),
        task_id=task_id,
        kind=EventKind(kind),
        status=TaskStatus(status),
        attempts=int(attempts),
        error=error,
        created_at=created_at.replace(tzinfo=UTC),
    )
