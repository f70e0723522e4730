"""Scheduled tasks (`run_at`) and completion webhooks (`callback_url`, `webhook_deliveries`).

The outbox index gains `run_at`, so that the dispatcher reads the tasks due now (and those
sent at once) from one index range each, however many tasks wait for a later time.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None

ALTER_TASKS = """
ALTER TABLE tasks
    ADD COLUMN run_at DATETIME(6) NULL DEFAULT NULL AFTER timeout_seconds,
    ADD COLUMN callback_url VARCHAR(2048) NULL DEFAULT NULL AFTER run_at,
    DROP INDEX idx_tasks_undispatched,
    ADD KEY idx_tasks_undispatched (dispatched_at, run_at, updated_at)
"""

CREATE_DELIVERIES = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    webhook_id       VARCHAR(40)  NOT NULL,
    task_id          VARCHAR(36)  NOT NULL,
    url              VARCHAR(2048) NOT NULL,
    status           ENUM('COMPLETED', 'FAILED', 'CANCELLED') NOT NULL,
    state            ENUM('pending', 'delivered', 'failed') NOT NULL DEFAULT 'pending',
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    next_attempt_at  DATETIME(6)  NOT NULL,
    last_status_code SMALLINT UNSIGNED NULL DEFAULT NULL,
    last_error       VARCHAR(500) NULL DEFAULT NULL,
    body             MEDIUMTEXT   NULL,
    created_at       DATETIME(6)  NOT NULL,
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    UNIQUE KEY uq_webhook_deliveries_webhook_id (webhook_id),
    KEY idx_webhook_deliveries_due (state, next_attempt_at),
    KEY idx_webhook_deliveries_task (task_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
"""


def upgrade() -> None:
    op.execute(ALTER_TASKS)
    op.execute(CREATE_DELIVERIES)


def downgrade() -> None:
    op.execute("DROP TABLE webhook_deliveries")
    op.execute(
        "ALTER TABLE tasks DROP INDEX idx_tasks_undispatched, DROP COLUMN callback_url,"
        " DROP COLUMN run_at, ADD KEY idx_tasks_undispatched (dispatched_at, updated_at)"
    )
