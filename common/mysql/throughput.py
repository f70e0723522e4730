"""task_throughput: how many tasks each tenant submitted and completed in each UTC minute,
kept by the transitions themselves, as task_counts is (common/mysql/counts.py).

A create adds its tasks to `submitted`, and a completion the rows it completed (those that
carry its token, by tenant) to `completed`, in the transition's own script: no round trip
more, and a rolled-back transition counts nothing. Each adds to the row of the current
minute on the shard of its connection, so that concurrent transactions rarely queue on one
row lock; a read sums the shards. Only a completion counts as completed: a task that failed
or was cancelled ended, but was not done.

The minute is the server's clock, UTC_TIMESTAMP() with its seconds taken off: the same on
every connection whatever its time_zone (FROM_UNIXTIME would follow the session's). The API
deletes minutes older than RETENTION_MINUTES, in bounded batches (services/housekeeping.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from common.mysql.connection import Statement
from common.mysql.counts import SHARD
from common.mysql.events import in_clause
from common.tasks import MinuteThroughput

RETENTION_MINUTES = 24 * 60  # a day: the longest window a read may ask for

# The start of the current UTC minute (both calls read the statement's one clock).
_MINUTE = "UTC_TIMESTAMP() - INTERVAL SECOND(UTC_TIMESTAMP()) SECOND"


def submitted(tenants: Sequence[str]) -> Statement:
    """New tasks, one for each entry of `tenants` (each task's tenant), in this minute."""
    per_tenant = Counter(tenants)
    rows = ", ".join([f"(%s, {_MINUTE}, {SHARD}, %s)"] * len(per_tenant))
    return (
        f"INSERT INTO task_throughput (tenant, minute, shard, submitted) VALUES {rows}"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        " ON DUPLICATE KEY UPDATE submitted = submitted + VALUES(submitted)",
        [part for tenant, count in per_tenant.items() for part in (tenant, count)],
    )


def completed(ids: Sequence[str], token: str) -> Statement:
    """Those of `ids` whose row carries `token` were completed in this minute (counted by
    tenant: one batch of a worker may hold several tenants' tasks)."""
    return (
        "INSERT INTO task_throughput (tenant, minute, shard, completed)"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        f" SELECT tenant, {_MINUTE}, {SHARD}, COUNT(*) FROM tasks"
        f" WHERE id IN ({in_clause(len(ids))}) AND claim_token = %s AND status = 'COMPLETED'"
        " GROUP BY tenant ON DUPLICATE KEY UPDATE completed = completed + VALUES(completed)",
        [*ids, token],
    )


def window_statement(tenant: str, minutes: int) -> Statement:
    """A tenant's last `minutes` minutes, the current one included: a range of the primary
    key (at most SHARDS rows a minute), summed by minute. Each row also carries the current
    minute, and the one-row table it comes from makes a row even when none is stored."""
    return (
        "SELECT MAX(c.now), t.minute, CAST(COALESCE(SUM(t.submitted), 0) AS SIGNED),"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        " CAST(COALESCE(SUM(t.completed), 0) AS SIGNED)"
        f" FROM (SELECT {_MINUTE} AS now) AS c LEFT JOIN task_throughput AS t"
        " ON t.tenant = %s AND t.minute > c.now - INTERVAL %s MINUTE AND t.minute <= c.now"
        " GROUP BY t.minute",
        [tenant, minutes],
    )


def minutes_of(rows: Sequence[tuple[Any, ...]], minutes: int) -> list[MinuteThroughput]:
    """`window_statement`'s rows as one entry per minute, oldest first, 0 where none was
    stored, the current minute last."""
    now: datetime = rows[0][0]
    found = {minute: (int(s), int(c)) for _, minute, s, c in rows if minute is not None}
    entries = []
    for back in range(minutes - 1, -1, -1):
        minute = now - timedelta(minutes=back)
        counted_submitted, counted_completed = found.get(minute, (0, 0))
        entries.append(
            MinuteThroughput(minute.replace(tzinfo=UTC), counted_submitted, counted_completed)
        )
    return entries


# The tenants with a minute to delete: a loose scan of the primary key (a MIN per tenant).
STALE_TENANTS = (
    "SELECT tenant FROM task_throughput GROUP BY tenant"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
    f" HAVING MIN(minute) < UTC_TIMESTAMP() - INTERVAL {RETENTION_MINUTES} MINUTE"
)

# Up to `limit` of a tenant's minutes past the retention, oldest first: a range of the primary
# key that ends a day back, so its locks stay clear of the minutes the transitions write.
PURGE = (
    "DELETE FROM task_throughput WHERE tenant = %s"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
    f" AND minute < UTC_TIMESTAMP() - INTERVAL {RETENTION_MINUTES} MINUTE"
    " ORDER BY minute LIMIT %s"
)
