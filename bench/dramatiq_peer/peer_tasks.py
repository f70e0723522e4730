"""The Dramatiq peer's worker: `dramatiq peer_tasks --processes 1 --threads 8`, and how its
API (bench/peer_common/peer_api.py) and the drain measurement queue a task.

`confirm_delivery=True`: each send waits for RabbitMQ's publisher confirm, as our API's
publishes do (Celery's default does not wait). The actor is the peers' shared work
(peer_db.process): PENDING -> PROCESSING -> COMPLETED, each committed on its own, with the
simulated delay in between. Dramatiq's defaults otherwise (its middleware, 20 retries).
"""

# mypy: ignore-errors
# (dramatiq, pika, sqlalchemy and pymysql live in bench/.venv-dramatiq, not in the
# repository's .venv)

from __future__ import annotations

import os
from collections.abc import Iterable

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from peer_db import process

broker = RabbitmqBroker(url=os.environ["PEER_BROKER_URL"], confirm_delivery=True)
dramatiq.set_broker(broker)


@dramatiq.actor
def process_task(task_id: str) -> None:
    process(task_id)


def enqueue(task_id: str) -> None:
    process_task.send(task_id)


def enqueue_all(ids: Iterable[str]) -> None:
    for task_id in ids:
        process_task.send(task_id)
