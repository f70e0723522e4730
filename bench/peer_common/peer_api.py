"""A peer's API: `uvicorn peer_api:app`, run in the peer's directory. An ORM insert, then the
peer's `enqueue(task_id)` (Celery's `process_task.delay`, Dramatiq's `process_task.send`).

A plain `def` route (FastAPI runs it in its thread pool) with a session per request, as in
FastAPI's SQL tutorial.
"""

# mypy: ignore-errors
# (sqlalchemy, pymysql and the queue libraries live in the peers' venvs, not in the
# repository's .venv)

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from peer_db import SessionLocal, Task
from peer_tasks import enqueue
from pydantic import BaseModel
from sqlalchemy.orm import Session

app = FastAPI()


class TaskCreate(BaseModel):
    title: str
    description: str
    metadata: dict[str, Any] | None = None


def get_session() -> Iterator[Session]:
    with SessionLocal() as session:
        yield session


@app.post("/api/tasks", status_code=202)
def create_task(body: TaskCreate, session: Annotated[Session, Depends(get_session)]) -> Any:
    task_id = str(uuid.uuid4())
    session.add(
        Task(
            id=task_id,
            title=body.title,
            description=body.description,
            status="PENDING",
            task_metadata=body.metadata,
        )
    )
    session.commit()
    enqueue(task_id)
    return {"task_id": task_id, "status": "PENDING"}
