"""webhook_deliveries: the completion webhooks' outbox.

Each final transition of a task that has a callback_url inserts its delivery in the
transition's own transaction (`deliveries_statement`, copied from the rows that carry the
transition's token, as task_events are), so a delivery can be neither lost nor invented. The
webhook sender takes due deliveries with `MySQLWebhookOutbox.take_due` (SKIP LOCKED, and a
lease in `next_attempt_at`, so several senders never send one at the same moment and one that
dies gives its deliveries back when the lease runs out), then records each attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from common.mysql.connection import Database, Statement
from common.mysql.events import in_clause
from common.tasks import Callback, CallbackState, DueDelivery, TaskStatus


def deliveries_statement(task_ids: Sequence[str], *, token: str) -> Statement:
    """The INSERT of one delivery for each of the tasks whose row carries `token` and has a
    callback_url: the final status the transition before it wrote, due at once."""
    return (
        "INSERT INTO webhook_deliveries"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        " (webhook_id, task_id, url, status, next_attempt_at, created_at)"
        " SELECT CONCAT('msg_', REPLACE(UUID(), '-', '')), id, callback_url, status,"
        " updated_at, updated_at FROM tasks"
        f" WHERE id IN ({in_clause(len(task_ids))}) AND claim_token = %s"
        " AND callback_url IS NOT NULL ORDER BY id",
        [*task_ids, token],
    )


def latest_statement(task_ids: Sequence[str]) -> Statement:
    """Each task's latest delivery: task_id, state, attempts, last_status_code, last_error."""
    ids = in_clause(len(task_ids))
    return (
        "SELECT task_id, state, attempts, last_status_code, last_error FROM webhook_deliveries"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        " WHERE id IN (SELECT MAX(id) FROM webhook_deliveries"
        f" WHERE task_id IN ({ids}) GROUP BY task_id)",
        list(task_ids),
    )


def callback_of(url: str, row: tuple[Any, ...] | None) -> Callback:
    if row is None:
        return Callback(url)
    _, state, attempts, status_code, error = row
    return Callback(url, CallbackState(state), attempts, status_code, error)


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


class MySQLWebhookOutbox:
    """The WebhookOutbox port: the webhook sender's statements on webhook_deliveries."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def take_due(self, *, limit: int, lease_seconds: float) -> list[DueDelivery]:
        """Up to `limit` pending deliveries that are due, oldest first, each held for
        `lease_seconds` and its attempt counted."""
        async with self._database.transaction(isolation="READ COMMITTED") as transaction:
            await transaction.execute(
                "SELECT id, webhook_id, task_id, url, status, attempts, body"
                " FROM webhook_deliveries WHERE state = 'pending'"
                " AND next_attempt_at <= UTC_TIMESTAMP(6)"
                " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            )
            rows = await transaction.fetchall()
            if not rows:
                return []
            await transaction.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1,"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                " next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND"
                f" WHERE id IN ({in_clause(len(rows))})",
                [int(lease_seconds * 1_000_000), *(row[0] for row in rows)],
            )
        return [
            DueDelivery(row[0], row[1], row[2], row[3], TaskStatus(row[4]), row[5] + 1, row[6])
            for row in rows
        ]

    async def fix_body(self, delivery_id: int, body: str) -> None:
        """The JSON every attempt of the delivery sends (its signature covers it)."""
        async with self._database.cursor() as cursor:
            await cursor.execute(
                "UPDATE webhook_deliveries SET body = %s WHERE id = %s AND body IS NULL",
                (body, delivery_id),
            )

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
        """An attempt's outcome: delivered, failed, or pending again until `next_attempt_at`
        (`attempted` False: no attempt was made after all, so it is not counted). A delivery
        that is over keeps its outcome but not its body (only a retry needs it)."""
        due = None if next_attempt_at is None else _naive(next_attempt_at)
        uncount = "" if attempted else " attempts = attempts - 1,"
        async with self._database.cursor() as cursor:
            await cursor.execute(
                f"UPDATE webhook_deliveries SET{uncount} state = %s, last_status_code = %s,"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                " last_error = %s, next_attempt_at = COALESCE(%s, next_attempt_at),"
                " body = IF(%s = 'pending', body, NULL)"
                " WHERE id = %s AND state = 'pending'",
                (
                    state.value,
                    status_code,
                    None if error is None else error[:500],
                    due,
                    state.value,
                    delivery_id,
                ),
            )

    async def pending(self) -> int:
        """How many deliveries are not delivered or failed yet."""
        async with self._database.cursor() as cursor:
            await cursor.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'")
            [(count,)] = await cursor.fetchall()
        return int(count)
