"""Task types: what a task runs (`type`, `payload`, `timeout_seconds`), what it returned
(`result`) and how far it is (`progress`, `progress_note`, also on each event).

Existing tasks become `simulated` tasks without a payload, which is what they were.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

ALTER_TASKS = """
ALTER TABLE tasks
    ADD COLUMN type VARCHAR(64) NOT NULL DEFAULT 'simulated' AFTER metadata,
    ADD COLUMN payload JSON NULL AFTER type,
    ADD COLUMN timeout_seconds INT UNSIGNED NULL DEFAULT NULL AFTER payload,
    ADD COLUMN result JSON NULL AFTER last_error,
    ADD COLUMN progress DOUBLE NULL DEFAULT NULL AFTER result,
    ADD COLUMN progress_note VARCHAR(255) NULL DEFAULT NULL AFTER progress
"""

ALTER_TASK_EVENTS = """
ALTER TABLE task_events
    ADD COLUMN progress DOUBLE NULL DEFAULT NULL AFTER error,
    ADD COLUMN note VARCHAR(255) NULL DEFAULT NULL AFTER progress
"""


def upgrade() -> None:
    op.execute(ALTER_TASKS)
    op.execute(ALTER_TASK_EVENTS)


def downgrade() -> None:
    op.execute("ALTER TABLE task_events DROP COLUMN note, DROP COLUMN progress")
    op.execute(
        "ALTER TABLE tasks DROP COLUMN progress_note, DROP COLUMN progress, DROP COLUMN result,"
        " DROP COLUMN timeout_seconds, DROP COLUMN payload, DROP COLUMN type"
    )
