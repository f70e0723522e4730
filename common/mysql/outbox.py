"""The outbox backlog for the API's metrics: one read of idx_tasks_undispatched."""

from __future__ import annotations

from common.metrics import OutboxBacklog
from common.mysql.connection import Database

# Every column it reads is in idx_tasks_undispatched (dispatched_at, run_at, updated_at): a
# range of the index, no row read. Due: not scheduled (due since it was stored or re-driven,
# its updated_at), or scheduled at a run_at that has passed. A cancelled task carries the
# outbox mark, so what is left unmarked is PENDING.
BACKLOG_SELECT = (
    "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(COALESCE(run_at, updated_at)),"
    " UTC_TIMESTAMP(6)) FROM tasks WHERE dispatched_at IS NULL"
    " AND (run_at IS NULL OR run_at <= UTC_TIMESTAMP(6))"
)


async def outbox_backlog(database: Database) -> OutboxBacklog:
    """How many due tasks await their publish, and the age of the oldest (DatabaseUnavailable
    when the database does not answer)."""
    async with database.cursor() as cursor:
        await cursor.execute(BACKLOG_SELECT)
        [(count, micros)] = await cursor.fetchall()
    return OutboxBacklog(int(count), 0.0 if micros is None else max(0.0, int(micros) / 1_000_000))
