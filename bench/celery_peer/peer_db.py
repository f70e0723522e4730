"""The Celery peer's table mapping: the same `tasks` table, through the SQLAlchemy ORM.

This is the yardstick the benchmark compares against, written the way the FastAPI and Celery
tutorials teach it. It is not part of the product.
"""

# mypy: ignore-errors
# (celery, sqlalchemy and pymysql live in bench/.venv-celery, not in the repository's .venv)

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

engine = create_engine(os.environ["PEER_DATABASE_URL"])
SessionLocal = sessionmaker(engine)


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    task_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=datetime.utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=datetime.utcnow, onupdate=datetime.utcnow)
    completed_at: Mapped[datetime | None]
