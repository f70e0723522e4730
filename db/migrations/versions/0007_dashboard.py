"""The dashboard's reads: a tenant's tasks of one type, newest first, as one index range; and
task_throughput, how many tasks each tenant submitted and completed in each minute.

task_throughput is kept by the transitions themselves, as task_counts is (common/mysql/counts.py):
a submit adds to `submitted` and a completion to `completed` of the current UTC minute, on the
shard of its connection, in its own transaction. The API deletes minutes older than a day.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None

CREATE_THROUGHPUT = """
CREATE TABLE IF NOT EXISTS task_throughput (
    tenant    VARCHAR(64)      NOT NULL DEFAULT '',
    minute    DATETIME         NOT NULL,
    shard     TINYINT UNSIGNED NOT NULL,
    submitted INT UNSIGNED     NOT NULL DEFAULT 0,
    completed INT UNSIGNED     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, minute, shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
"""


def upgrade() -> None:
    op.execute(
        "ALTER TABLE tasks ADD KEY idx_tasks_tenant_type_created (tenant, type, created_at, id)"
    )
    op.execute(CREATE_THROUGHPUT)


def downgrade() -> None:
    op.execute("DROP TABLE task_throughput")
    op.execute("ALTER TABLE tasks DROP INDEX idx_tasks_tenant_type_created")
