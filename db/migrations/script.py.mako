"""${message}

Plain SQL through op.execute (no models). The same change goes into db/init.sql (the schema at
head, with its alembic_version row) and SCHEMA_REVISION in common/mysql/revision.py; a test
holds the three together (tests/test_migrations.py).

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from __future__ import annotations

from alembic import op

revision = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    op.execute("")


def downgrade() -> None:
    op.execute("")
