"""The Celery peer's worker: `celery -A peer_tasks worker -c 2` (prefork), and how its API
(bench/peer_common/peer_api.py) and the drain measurement queue a task.

The task is the peers' shared work (peer_db.process): PENDING -> PROCESSING -> COMPLETED,
each committed on its own, with the simulated delay in between.
"""

# mypy: ignore-errors
# (celery, sqlalchemy and pymysql live in bench/.venv-celery, not in the repository's .venv)

from __future__ import annotations

import os
from collections.abc import Iterable

from celery import Celery
from peer_db import process

app = Celery("peer", broker=os.environ["PEER_BROKER_URL"])
app.conf.broker_connection_retry_on_startup = True


@app.task
def process_task(task_id: str) -> None:
    process(task_id)


def enqueue(task_id: str) -> None:
    process_task.delay(task_id)


def enqueue_all(ids: Iterable[str]) -> None:
    with app.producer_or_acquire() as producer:
        for task_id in ids:
            process_task.apply_async((task_id,), producer=producer)
