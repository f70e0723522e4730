"""What the API talks to, in one typed object: `create_app(settings, backends)` takes it
whole. main.py builds the real one (MySQL, RabbitMQ, the outbox dispatcher); the unit tests
hand in fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from common.metrics import OutboxBacklog, no_backlog
from common.ports import TaskPublisher, TaskRepository
from services.backpressure import NONE, Backpressure
from services.events import EventHub


@asynccontextmanager
async def _nothing_to_run() -> AsyncIterator[None]:
    yield


def _nobody_listens(task_ids: Sequence[str]) -> None:
    pass


async def _schema_as_expected() -> None:
    pass


@dataclass(frozen=True, slots=True)
class Backends:
    repository: TaskRepository
    publisher: TaskPublisher
    # Tells every worker to stop these tasks' work (they were cancelled while PROCESSING).
    broadcast_cancel: Callable[[Sequence[str]], None] = _nobody_listens
    # This process's event streams, woken by every transition's broadcast.
    events: EventHub = field(default_factory=EventHub)
    # Raises SchemaOutdated unless the database is at the revision this code needs
    # (DependencyUnavailable when it does not answer): part of /health/ready. Fakes have none.
    require_schema: Callable[[], Awaitable[None]] = _schema_as_expected
    # Due tasks whose message is not yet confirmed, for the metrics (one indexed read).
    outbox_backlog: Callable[[], Awaitable[OutboxBacklog]] = no_backlog
    # Whether new submissions are refused for what waits already (MAX_BACKLOG).
    pressure: Backpressure = NONE
    # Opens the connections and starts the background work for the life of the app (its
    # lifespan); fakes need none.
    running: Callable[[], AbstractAsyncContextManager[None]] = _nothing_to_run
