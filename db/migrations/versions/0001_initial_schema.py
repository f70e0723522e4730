"""The schema before migrations: the tasks table exactly as db/init.sql made it then.

It also adopts a database made from that file, which has no alembic_version yet: the CREATE
is IF NOT EXISTS, as it was in the file, and an existing tasks table must have every column
the file had. An older one (made before the outbox or the grouped writes) is not a schema any
migration knows how to bring forward, so this stops and says what to do instead.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

# Every column of the tasks table at this revision.
COLUMNS = (
    "id",
    "title",
    "description",
    "status",
    "metadata",
    "attempts",
    "last_error",
    "dispatched_at",
    "lease_expires_at",
    "claim_token",
    "created_at",
    "updated_at",
    "completed_at",
)

CREATE_TASKS = """
CREATE TABLE IF NOT EXISTS tasks (
    id               VARCHAR(36)  NOT NULL,
    title            VARCHAR(255) NOT NULL,
    description      MEDIUMTEXT,
    status           ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED') NOT NULL DEFAULT 'PENDING',
    metadata         JSON         NULL,
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    last_error       VARCHAR(500) NULL DEFAULT NULL,
    dispatched_at    DATETIME(6)  NULL DEFAULT NULL,
    lease_expires_at DATETIME(6)  NULL DEFAULT NULL,
    claim_token      CHAR(32)     NULL DEFAULT NULL,
    created_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    completed_at     DATETIME(6)  NULL DEFAULT NULL,
    PRIMARY KEY (id),
    KEY idx_tasks_status_created (status, created_at),
    KEY idx_tasks_undispatched (dispatched_at, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
"""


def upgrade() -> None:
    _refuse_an_older_tasks_table()
    op.execute(CREATE_TASKS)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS tasks")


def _refuse_an_older_tasks_table() -> None:
    found = {
        str(name).lower()
        for name in op.get_bind()
        .execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = 'tasks'"
            )
        )
        .scalars()
    }
    missing = [name for name in COLUMNS if name not in found]
    if found and missing:
        raise CommandError(
            f"the tasks table is older than the first migration (it has no {', '.join(missing)}):"
            " recreate the database, which deletes its tasks (Compose: docker compose down -v;"
            " locally: DROP DATABASE, then make db); see README Troubleshooting item 7"
        )
