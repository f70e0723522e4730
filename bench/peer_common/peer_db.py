"""The peers' table mapping and their task's work: the same `tasks` table, through the
SQLAlchemy ORM, and the same transitions as our worker, for the Celery and the Dramatiq peer.

This is the yardstick the benchmark compares against, written the way the FastAPI, Celery and
Dramatiq tutorials teach it. It is not part of the product.
"""

# mypy: ignore-errors
# (sqlalchemy and pymysql live in the peers' venvs, not in the repository's .venv)

from __future__ import annotations

import os
import random
import time
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

engine = create_engine(os.environ["PEER_DATABASE_URL"])
SessionLocal = sessionmaker(engine)

DELAY_MIN = float(os.environ.get("PEER_DELAY_MIN_SECONDS", "0"))
DELAY_MAX = float(os.environ.get("PEER_DELAY_MAX_SECONDS", "0"))


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


def process(task_id: str) -> None:
    """The peers' task: PENDING -> PROCESSING, the simulated delay, COMPLETED, each
    transition committed on its own, as our worker does."""
    with SessionLocal() as session:
        task = session.get(Task, task_id)
        task.status = "PROCESSING"
        task.attempts += 1
        session.commit()
        time.sleep(random.uniform(DELAY_MIN, DELAY_MAX))
        task.status = "COMPLETED"
        task.completed_at = datetime.utcnow()
        session.commit()
