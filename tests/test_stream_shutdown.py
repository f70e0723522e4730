"""A stopping API ends its event streams cleanly and at once, instead of holding its
shutdown for API_SHUTDOWN_GRACE_SECONDS and then cutting them with an error."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import pytest

from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask
from testkit import fixtures
from testkit.polling import wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.scratch import service_environment

pytestmark = pytest.mark.integration

repository = fixtures.repository


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"api_port": free_port(), "api_shutdown_grace_seconds": 20, "log_format": "json"}


async def test_sigterm_ends_open_streams_and_the_api_exits_soon(
    direct: Settings, repository: MySQLTaskRepository, tmp_path: Any
) -> None:
    task = NewTask(str(uuid.uuid4()), "waits", "d", None)
    await repository.create(task)  # stays PENDING: its stream would stay open for good
    log = tmp_path / "api.log"
    with service_process("api-service", service_environment(direct), log) as api:
        async with api_client(f"http://127.0.0.1:{direct.api_port}") as client:

            async def healthy() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except Exception:
                    return False

            await wait_until(healthy, timeout=30, what="API /health")
            received: list[str] = []

            async def follow() -> None:
                async with client.stream("GET", f"/api/tasks/{task.task_id}/events") as response:
                    async for line in response.aiter_lines():
                        received.append(line)

            following = asyncio.create_task(follow())
            await wait_until(
                lambda: _async(any(line.startswith("data:") for line in received)),
                timeout=10,
                what="the first event",
            )
            stopped = time.monotonic()
            api.send_signal(signal.SIGTERM)
            await asyncio.wait_for(following, timeout=10)  # ends without an error
            # uvicorn re-raises the signal once it has shut down, to exit as the signal says.
            assert await asyncio.to_thread(api.wait, 10) in (0, -signal.SIGTERM)
            took = time.monotonic() - stopped
    assert took < 5, f"the API took {took:.1f} s to stop"
    output = log.read_text()
    assert "Exception in ASGI application" not in output
    assert "timeout graceful shutdown exceeded" not in output


async def _async(value: bool) -> bool:
    return value
