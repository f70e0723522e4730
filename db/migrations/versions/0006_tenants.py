"""Tenants: each task belongs to the API key (its name) that created it, and task_counts
counts each tenant's tasks apart.

The list's indexes lead with the tenant, so that a tenant's page is one index range of its own
rows however many other tenants have. Rows from before keys existed, and every row written
while the API runs without keys, belong to the tenant '' (no key).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

ALTER_TASKS = """
ALTER TABLE tasks
    ADD COLUMN tenant VARCHAR(64) NOT NULL DEFAULT '' AFTER id,
    DROP INDEX idx_tasks_created,
    DROP INDEX idx_tasks_status_created,
    ADD KEY idx_tasks_tenant_created (tenant, created_at, id),
    ADD KEY idx_tasks_tenant_status_created (tenant, status, created_at, id)
"""

ALTER_COUNTS = """
ALTER TABLE task_counts
    ADD COLUMN tenant VARCHAR(64) NOT NULL DEFAULT '' FIRST,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (tenant, status, shard)
"""


def upgrade() -> None:
    op.execute(ALTER_TASKS)
    op.execute(ALTER_COUNTS)  # the rows counted so far become tenant '' rows, as all tasks do


def downgrade() -> None:
    # Every tenant's counts fold back into the one set of rows there was.
    op.execute(
        "UPDATE task_counts AS c JOIN (SELECT status, shard, SUM(n) AS n FROM task_counts"
        " WHERE tenant <> '' GROUP BY status, shard) AS o ON o.status = c.status AND"
        " o.shard = c.shard SET c.n = c.n + o.n WHERE c.tenant = ''"
    )
    op.execute("DELETE FROM task_counts WHERE tenant <> ''")
    op.execute(
        "ALTER TABLE task_counts DROP PRIMARY KEY, DROP COLUMN tenant,"
        " ADD PRIMARY KEY (status, shard)"
    )
    op.execute(
        "ALTER TABLE tasks DROP INDEX idx_tasks_tenant_status_created,"
        " DROP INDEX idx_tasks_tenant_created, DROP COLUMN tenant,"
        " ADD KEY idx_tasks_created (created_at, id),"
        " ADD KEY idx_tasks_status_created (status, created_at, id)"
    )
