"""The outbox backlog the API's metrics read at each scrape, against the real database: due
undispatched tasks are counted with the age of the oldest; scheduled-for-later and
dispatched ones are not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.mysql import Database, MySQLTaskRepository
from common.mysql.outbox import outbox_backlog
from common.settings import Settings
from common.tasks import NewTask

pytestmark = pytest.mark.integration


@pytest.fixture
async def database(direct: Settings) -> AsyncIterator[Database]:
    database = Database(direct)
    await database.start()
    yield database
    await database.close()


def new_task(**fields: object) -> NewTask:
    return NewTask(str(uuid.uuid4()), "t", "d", None, **fields)  # type: ignore[arg-type]


async def test_due_undispatched_tasks_are_counted_with_the_oldest_age(database: Database) -> None:
    repository = MySQLTaskRepository(database)
    assert (await outbox_backlog(database)).tasks == 0

    first = await repository.create(new_task())
    await asyncio.sleep(0.3)
    await repository.create(new_task())
    await repository.create(new_task(run_at=datetime.now(UTC) - timedelta(seconds=0.1)))
    await repository.create(new_task(run_at=datetime.now(UTC) + timedelta(hours=1)))
    sent = await repository.create(new_task())
    await repository.mark_dispatched([sent.task_id])

    backlog = await outbox_backlog(database)
    assert backlog.tasks == 3
    assert 0.3 <= backlog.oldest_age_seconds < 10

    await repository.mark_dispatched([first.task_id])
    assert (await outbox_backlog(database)).tasks == 2
