"""task_counts: how many tasks each tenant has in each status, kept by the transitions themselves.

Counting a status index takes about 200 ms at a million tasks, so the stats read this table
instead: 16 rows (shards) per tenant and status, whose sum is the count. Each transition adds
its change in its own transaction, on the shard of its connection (`CONNECTION_ID()` modulo
16), so that transactions on different connections never queue on one row lock, and a
rolled-back transition changes no count. A tenant's rows are made by its first transitions
(an upsert), so nothing has to know the tenants beforehand.

A transition's UPDATE of `tasks` writes a token of its own into the rows it moves; `moved(...)`,
right after it, counts the rows that carry the token by tenant: they leave their old status
and join the new one. (One batch of a worker may hold several tenants' tasks.)

`VALUES(n)` in the upserts is MariaDB's and MySQL's common form (MySQL 8.0.20+ prefers a row
alias, which MariaDB does not have, and warns about it without refusing it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from common.mysql.connection import Statement
from common.mysql.events import in_clause
from common.tasks import TaskStatus

SHARDS = 16  # as db/init.sql and migration 0003 seed them (for the tenant '')

# The shard a transition writes: its connection's (task_throughput shards the same way).
SHARD = f"MOD(CONNECTION_ID(), {SHARDS})"
_ADD = " ON DUPLICATE KEY UPDATE n = n + VALUES(n)"


def created(tenants: Sequence[str]) -> Statement:
    """New PENDING tasks, one for each entry of `tenants` (each task's tenant)."""
    per_tenant = Counter(tenants)
    rows = ", ".join([f"(%s, 'PENDING', {SHARD}, %s)"] * len(per_tenant))
    return (
        f"INSERT INTO task_counts (tenant, status, shard, n) VALUES {rows}{_ADD}",  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        [part for tenant, count in per_tenant.items() for part in (tenant, count)],
    )


def moved(ids: Sequence[str], token: str, source: TaskStatus, target: TaskStatus) -> Statement:
    """Those of `ids` whose row carries `token` went from `source` to `target`."""
    return _moved(ids, token, "%s", [source.value], target)


def moved_from_variable(
    ids: Sequence[str], token: str, variable: str, target: TaskStatus
) -> Statement:
    """The same, from the one status the script put in `variable` (an `@name` it set from
    the row it locked)."""
    return _moved(ids, token, variable, [], target)


def _moved(
    ids: Sequence[str],
    token: str,
    source_sql: str,
    source_args: list[object],
    target: TaskStatus,
) -> Statement:
    return (
        "INSERT INTO task_counts (tenant, status, shard, n)"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        f" SELECT t.tenant, s.status, {SHARD}, IF(s.status = %s, COUNT(*), -COUNT(*))"
        f" FROM tasks AS t CROSS JOIN (SELECT %s AS status UNION ALL SELECT {source_sql}) AS s"
        f" WHERE t.id IN ({in_clause(len(ids))}) AND t.claim_token = %s"
        f" GROUP BY t.tenant, s.status{_ADD}",
        [target.value, target.value, *source_args, *ids, token],
    )


# Counted again from the tasks, into shard 0: for rows written around the transitions (the
# benchmark's bulk loads). Lock the tables or stop the writers first: a transition committed
# while it counts is lost from the counts.
RECOUNT: tuple[str, ...] = (
    "DELETE FROM task_counts WHERE tenant <> ''",
    "UPDATE task_counts SET n = 0",
    "INSERT INTO task_counts (tenant, status, shard, n)"
    " SELECT tenant, status, 0, COUNT(*) FROM tasks GROUP BY tenant, status"
    " ON DUPLICATE KEY UPDATE n = VALUES(n)",
)

# A tenant's totals: at most 80 rows, a range of the primary key.
TOTALS = "SELECT status, CAST(SUM(n) AS SIGNED) FROM task_counts WHERE tenant = %s GROUP BY status"
