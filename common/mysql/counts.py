"""task_counts: how many tasks have each status, kept by the transitions themselves.

Counting a status index takes about 200 ms at a million tasks, so the stats read this table
instead: 16 rows (shards) per status, whose sum is the status's count. Each transition adds
its change in its own transaction, on the shard of its connection (`CONNECTION_ID()` modulo
16), so that transactions on different connections never queue on one row lock, and a
rolled-back transition changes no count.

A transition's UPDATE of `tasks` is followed by `SET @moved = ROW_COUNT()` and then
`moved(...)`: the rows it moved leave their old status and join the new one.
"""

from __future__ import annotations

from common.mysql.connection import Statement
from common.tasks import TaskStatus

SHARDS = 16  # as db/init.sql and migration 0003 seed them

_SHARD = f"shard = MOD(CONNECTION_ID(), {SHARDS})"

MOVED_ROWS: Statement = ("SET @moved = ROW_COUNT()", ())


def created(count: int) -> Statement:
    """`count` new PENDING tasks."""
    return (
        f"UPDATE task_counts SET n = n + %s WHERE {_SHARD} AND status = 'PENDING'",
        [count],
    )


def moved(source: TaskStatus, target: TaskStatus) -> Statement:
    """@moved tasks went from `source` to `target`."""
    return _moved("%s", [source.value], target)


def moved_from_variable(variable: str, target: TaskStatus) -> Statement:
    """@moved tasks went to `target` from the one status the script put in `variable` (an
    `@name` it set from the row it locked)."""
    return _moved(variable, [], target)


def _moved(source_sql: str, source_args: list[object], target: TaskStatus) -> Statement:
    return (
        "UPDATE task_counts SET n = n + IF(status = %s, @moved, -@moved)"
        f" WHERE {_SHARD} AND status IN (%s, {source_sql}) AND @moved > 0",
        [target.value, target.value, *source_args],
    )


# Counted again from the tasks, into shard 0: for rows written around the transitions (the
# benchmark's bulk loads). Lock the tables or stop the writers first: a transition committed
# while it counts is lost from the counts.
RECOUNT: tuple[str, ...] = (
    "UPDATE task_counts SET n = 0",
    "UPDATE task_counts AS c"
    " JOIN (SELECT status, COUNT(*) AS n FROM tasks GROUP BY status) AS t"
    " ON t.status = c.status SET c.n = t.n WHERE c.shard = 0",
)

TOTALS = "SELECT status, CAST(SUM(n) AS SIGNED) FROM task_counts GROUP BY status"
