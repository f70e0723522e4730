"""A work queue declared before MAX_QUEUE_LENGTH (without x-max-length, as every deployment
before it made it) cannot take new arguments: the API keeps it as it is, says so, and works
on it, instead of failing every connection with PRECONDITION_FAILED."""

from __future__ import annotations

import logging

import httpx
import pytest
from test_submit import VALID

from common.amqp.link import connect
from common.amqp.topology import Topology
from common.settings import Settings
from main import create_app
from testkit.broker import take_all
from testkit.polling import wait_until

pytestmark = pytest.mark.integration


async def test_an_older_work_queue_is_kept_and_used(
    direct: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topology = Topology.from_settings(direct)
    older = {
        key: value
        for key, value in topology.work_queue_arguments().items()
        if key not in ("x-max-length", "x-overflow")
    }
    connection = await connect(direct, name="tests")
    try:
        channel = await connection.channel()
        await channel.declare_queue(direct.task_queue, durable=True, arguments=older)
        caplog.set_level(logging.WARNING)
        app = create_app(direct)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
                assert (await api.get("/health/ready")).status_code == 200
                task_id = (await api.post("/api/tasks", json=VALID)).json()["task_id"]

                async def queued() -> bool:
                    return task_id in {
                        m.message_id for m in await take_all(channel, direct.task_queue)
                    }

                await wait_until(queued, timeout=10, interval=0.05, what="the task's message")
        kept = [
            r for r in caplog.records if r.getMessage() == "work queue kept with its own arguments"
        ]
        assert kept
        assert "x-max-length" in kept[0].reason or "PRECONDITION" in kept[0].reason  # type: ignore[attr-defined]
    finally:
        await connection.close()
