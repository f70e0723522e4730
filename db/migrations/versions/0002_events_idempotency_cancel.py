"""Cancelling, task events and idempotency keys.

tasks: status CANCELLED (appended to the ENUM, so stored values keep their meaning),
started_at (NULL on existing rows: their first claim was never recorded), the list's index
idx_tasks_created, and idx_tasks_status_created extended by id for keyset paging. All of it in
one ALTER TABLE, so a large table is rebuilt once. New tables task_events (with one event per
existing task: its state now) and idempotency_keys.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

ALTER_TASKS = """
ALTER TABLE tasks
    MODIFY COLUMN status ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')
        NOT NULL DEFAULT 'PENDING',
    ADD COLUMN started_at DATETIME(6) NULL DEFAULT NULL AFTER updated_at,
    ADD KEY idx_tasks_created (created_at, id),
    DROP KEY idx_tasks_status_created,
    ADD KEY idx_tasks_status_created (status, created_at, id)
"""

CREATE_TASK_EVENTS = """
CREATE TABLE task_events (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    task_id    VARCHAR(36)  NOT NULL,
    kind       VARCHAR(32)  NOT NULL,
    status     ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED') NOT NULL,
    attempts   INT UNSIGNED NOT NULL,
    error      VARCHAR(500) NULL DEFAULT NULL,
    created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    KEY idx_task_events_task (task_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
"""

# Every existing task gets one event, its state now, so that its event stream has something
# to start from (and a final task's stream ends at once), as a task made later has.
BACKFILL_EVENTS = """
INSERT INTO task_events (task_id, kind, status, attempts, error, created_at)
SELECT id,
       CASE status WHEN 'PENDING' THEN 'created' WHEN 'PROCESSING' THEN 'started'
                   WHEN 'COMPLETED' THEN 'completed' ELSE 'failed' END,
       status, attempts, CASE status WHEN 'FAILED' THEN last_error END, updated_at
FROM tasks ORDER BY created_at, id
"""

CREATE_IDEMPOTENCY_KEYS = """
CREATE TABLE idempotency_keys (
    client      VARCHAR(64)  NOT NULL,
    idem_key    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fingerprint BINARY(32)   NOT NULL,
    task_id     VARCHAR(36)  NOT NULL,
    created_at  DATETIME(6)  NOT NULL,
    expires_at  DATETIME(6)  NOT NULL,
    PRIMARY KEY (client, idem_key),
    KEY idx_idempotency_keys_expires (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
"""

RESTORE_TASKS = """
ALTER TABLE tasks
    DROP KEY idx_tasks_created,
    DROP KEY idx_tasks_status_created,
    ADD KEY idx_tasks_status_created (status, created_at),
    DROP COLUMN started_at,
    MODIFY COLUMN status ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')
        NOT NULL DEFAULT 'PENDING'
"""


def upgrade() -> None:
    op.execute(ALTER_TASKS)
    op.execute(CREATE_TASK_EVENTS)
    op.execute(BACKFILL_EVENTS)
    op.execute(CREATE_IDEMPOTENCY_KEYS)


def downgrade() -> None:
    """Drops the events, the keys and started_at; refuses while a task is CANCELLED, a status
    revision 0001 cannot store."""
    cancelled = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM tasks WHERE status = 'CANCELLED'")
    )
    count = int(cancelled.scalar_one())
    if count:
        raise CommandError(
            f"{count} tasks are CANCELLED, which revision 0001 cannot store:"
            " delete them or change their status first"
        )
    op.execute("DROP TABLE IF EXISTS idempotency_keys")
    op.execute("DROP TABLE IF EXISTS task_events")
    op.execute(RESTORE_TASKS)
