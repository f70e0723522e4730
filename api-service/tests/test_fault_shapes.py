"""Every fault shape of each backend, staged by the proxy in front of the real MySQL/MariaDB
and RabbitMQ, against the API as a real process (uvicorn on uvloop, as `make api` and the image
run it: some driver failures show only there). While the fault lasts, a database fault
is a 503 problem with Retry-After and a broker fault still a 202 (the outbox sends the task
later); no answer is a 500 or comes later than its timeout allows; /health names the failing
part; and within 5 s of the fault ending, the API answers 202/200 again, with no restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from test_submit import VALID

from common.settings import Settings
from testkit.broker import take_all
from testkit.polling import api_healthy, wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.proxy import Fault, TcpProxy
from testkit.scratch import service_environment

pytestmark = pytest.mark.integration

# What an answer may take beyond the timeout that bounds it (a busy CI machine included).
MARGIN_SECONDS = 1.0
RECOVERY_SECONDS = 5.0
# Shapes where every request waits out its timeout.
SLOW_TO_FAIL = (Fault.BLACKHOLE, Fault.SLOW)


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "dispatch_interval_seconds": 0.1,
        "dispatch_min_age_seconds": 0.5,
        "log_format": "json",
    }


@pytest.fixture(scope="module")
def settings(proxied: Settings) -> Settings:
    """What the app gets: the same database and vhost, through the proxies."""
    return proxied


@pytest.fixture(scope="module")
def api_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "api.log"


@pytest.fixture(scope="module")
async def client(settings: Settings, api_log: Path) -> AsyncIterator[httpx.AsyncClient]:
    log = api_log
    with service_process("api-service", service_environment(settings), log) as api:
        base_url = f"http://127.0.0.1:{settings.api_port}"
        async with api_client(base_url) as client:
            await wait_until(lambda: api_healthy(client), timeout=30, what="the API healthy")
            yield client
        assert api.poll() is None, "the API died"
    _assert_no_unhandled_errors(log)


def _assert_no_unhandled_errors(log: Path) -> None:
    text = log.read_text()
    assert "unhandled error" not in text, text[-5000:]


Timed = tuple[httpx.Response, float]


async def timed(request: Awaitable[httpx.Response]) -> Timed:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


def assert_bounded(answers: list[Timed], bound: float) -> None:
    for response, seconds in answers:
        assert response.status_code != 500, response.text
        assert seconds <= bound + MARGIN_SECONDS, f"{response.request.url}: {seconds:.2f} s"


def assert_unavailable(response: httpx.Response, component: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"].isdigit()
    assert component in response.json()["detail"]


async def _healthy(client: httpx.AsyncClient) -> bool:
    return (await client.get("/health")).status_code == 200


async def _answers_again(client: httpx.AsyncClient, task_id: str) -> bool:
    posted = await client.post("/api/tasks", json=VALID)
    read = await client.get(f"/api/tasks/{task_id}")
    return posted.status_code == 202 and read.status_code == 200


async def _recovers(client: httpx.AsyncClient, task_id: str) -> float:
    """Seconds from now until the API accepts and reads again; fails after RECOVERY_SECONDS."""
    restored = time.monotonic()
    await wait_until(
        lambda: _answers_again(client, task_id), timeout=RECOVERY_SECONDS, what="recovery"
    )
    await wait_until(lambda: _healthy(client), timeout=RECOVERY_SECONDS, what="/health ok")
    return time.monotonic() - restored


@pytest.mark.parametrize("shape", list(Fault), ids=lambda shape: shape.name.lower())
async def test_a_database_fault_is_a_503_with_retry_after_and_ends_by_itself(
    shape: Fault, client: httpx.AsyncClient, db_proxy: TcpProxy, settings: Settings
) -> None:
    known = (await client.post("/api/tasks", json=VALID)).json()["task_id"]
    db_proxy.fault(shape)
    try:
        answers = await asyncio.gather(
            *(timed(client.post("/api/tasks", json=VALID)) for _ in range(5)),
            *(timed(client.get(f"/api/tasks/{known}")) for _ in range(3)),
            timed(client.get("/health")),
        )
        if shape not in SLOW_TO_FAIL:
            # One after another, each meets the fault on a connection of its own: the driver
            # fails in more than one way on those (some only now and then).
            for n in range(30):
                request = (
                    client.post("/api/tasks", json=VALID)
                    if n % 2
                    else client.get(f"/api/tasks/{known}")
                )
                answers.append(await timed(request))
    finally:
        db_proxy.restore()
    assert_bounded(answers, settings.database_timeout_seconds)
    (health, _) = answers[8]
    posts, reads = answers[:5] + answers[10::2], answers[5:8] + answers[9::2]
    if shape is Fault.RESET:
        # Connections fail one by one, at their next reply: some requests still get through,
        # every other one is a clean 503.
        for response, _ in [*posts, *reads]:
            if response.status_code == 503:
                assert_unavailable(response, "database")
            else:
                assert response.status_code in (200, 202), response.text
        assert any(response.status_code == 503 for response, _ in answers)
    else:
        for response, _ in [*posts, *reads]:
            assert_unavailable(response, "database")
        assert health.status_code == 503
        assert health.json()["checks"] == {
            "database": "unavailable",
            "broker": "ok",
            "schema": "unknown",
        }
    await _recovers(client, known)


@pytest.mark.parametrize("shape", list(Fault), ids=lambda shape: shape.name.lower())
async def test_a_broker_fault_still_accepts_every_task_and_the_outbox_sends_them_after(
    shape: Fault,
    client: httpx.AsyncClient,
    api_log: Path,
    broker_proxy: TcpProxy,
    settings: Settings,
    direct: Settings,
    channel: AbstractChannel,
) -> None:
    known = (await client.post("/api/tasks", json=VALID)).json()["task_id"]
    await take_all(channel, direct.task_queue)
    attempts_before = connect_attempts(api_log)
    broker_proxy.fault(shape)
    try:
        first = await timed(client.post("/api/tasks", json=VALID))
        answers = [
            first,
            *await asyncio.gather(
                *(timed(client.post("/api/tasks", json=VALID)) for _ in range(5)),
                timed(client.get(f"/api/tasks/{known}")),
            ),
        ]
        health = await wait_until(
            lambda: _broker_named_unavailable(client), timeout=5, what="/health naming the broker"
        )
        if shape in (Fault.REFUSE, Fault.CLOSE, Fault.HANDSHAKE):
            # Enough reconnects to meet each way the client fails on this shape (a handshake
            # cut short fails in several ways, some only now and then).

            async def reconnected_often() -> bool:
                return connect_attempts(api_log) >= attempts_before + 12

            await wait_until(reconnected_often, timeout=20, what="reconnect attempts")
    finally:
        broker_proxy.restore()
    assert_bounded([*answers, health], settings.publish_timeout_seconds)
    *posts, (read, _) = answers
    assert [response.status_code for response, _ in posts] == [202] * 6
    assert read.status_code == 200
    await _recovers(client, known)

    accepted = {response.json()["task_id"] for response, _ in posts}
    found: set[str] = set()

    async def all_queued() -> bool:
        found.update(m.message_id or "" for m in await take_all(channel, direct.task_queue))
        return accepted <= found

    await wait_until(all_queued, timeout=15, what="the outbox to publish what was accepted")


def connect_attempts(log: Path) -> int:
    """Connects the API's broker link made so far, by its log: those that failed and those
    that got through."""
    lines = log.read_text().splitlines()
    return sum('"broker link task-api"' in line or '"broker connected"' in line for line in lines)


async def _broker_named_unavailable(client: httpx.AsyncClient) -> Timed | None:
    answer = await timed(client.get("/health"))
    response = answer[0]
    if response.status_code == 503 and response.json()["checks"]["broker"] == "unavailable":
        return answer
    assert response.status_code == 200, response.text
    return None
