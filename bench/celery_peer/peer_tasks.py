"""The Celery peer's worker: `celery -A peer_tasks worker -c 2` (prefork).

The task does the same transitions as our worker, PENDING -> PROCESSING -> COMPLETED, each
committed on its own, with the simulated delay in between.
"""

# mypy: ignore-errors
# (celery, sqlalchemy and pymysql live in bench/.venv-celery, not in the repository's .venv)

from __future__ import annotations

import os
import random
import time
from datetime import datetime

from celery import Celery
from peer_db import SessionLocal, Task

app = Celery("peer", broker=os.environ["PEER_BROKER_URL"])
app.conf.broker_connection_retry_on_startup = True

DELAY_MIN = float(os.environ.get("PEER_DELAY_MIN_SECONDS", "0"))
DELAY_MAX = float(os.environ.get("PEER_DELAY_MAX_SECONDS", "0"))


@app.task
def process_task(task_id: str) -> None:
    with SessionLocal() as session:
        task = session.get(Task, task_id)
        task.status = "PROCESSING"
        task.attempts += 1
        session.commit()
        time.sleep(random.uniform(DELAY_MIN, DELAY_MAX))
        task.status = "COMPLETED"
        task.completed_at = datetime.utcnow()
        session.commit()
