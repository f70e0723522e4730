"""What the API talks to, in one typed object: `create_app(settings, backends)` takes it
whole. main.py builds the real one (MySQL, RabbitMQ, the outbox dispatcher); the unit tests
hand in fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from common.ports import TaskPublisher, TaskRepository


@asynccontextmanager
async def _nothing_to_run() -> AsyncIterator[None]:
    yield


@dataclass(frozen=True, slots=True)
class Backends:
    repository: TaskRepository
    publisher: TaskPublisher
    # Opens the connections and starts the background work for the life of the app (its
    # lifespan); fakes need none.
    running: Callable[[], AbstractAsyncContextManager[None]] = _nothing_to_run
