"""Completion webhooks end to end: the API, the worker and the webhook sender as real
processes on the real MariaDB and RabbitMQ, sending to a real HTTP receiver on 127.0.0.1
(testkit.receiver). Signatures are checked with the `standardwebhooks` package, as a
receiver would check them."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import secrets
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from test_end_to_end import Stack, processes, stack, status_of

from common.messages import TaskMessage
from common.mysql import MySQLTaskRepository
from common.settings import Settings, load_settings
from common.tasks import NewTask
from testkit import fixtures
from testkit.broker import publish_task
from testkit.polling import wait_until
from testkit.processes import free_port, service_process
from testkit.receiver import Answer, Received, Receiver, receiving
from testkit.scratch import service_environment
from testkit.sql import query

pytestmark = pytest.mark.integration

__all__ = ["processes", "stack"]  # the stack of test_end_to_end, with this module's settings
repository = fixtures.repository

TASK = {"title": "Resize images", "description": "thumbnails"}
TIMEOUT_SECONDS = 2.0  # WEBHOOK_TIMEOUT_SECONDS
LEASE_SECONDS = TIMEOUT_SECONDS + 5  # the sender's lease: the timeout and LEASE_MARGIN_SECONDS
BASE_SECONDS = 0.2  # WEBHOOK_RETRY_BASE_SECONDS
CAP_SECONDS = 3.0  # WEBHOOK_RETRY_MAX_SECONDS (a Retry-After is kept within it too)
MAX_ATTEMPTS = 5
WEBHOOK_ID = re.compile(r"^msg_[0-9a-f]{32}$")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "processing_delay_min_seconds": 0,
        "processing_delay_max_seconds": 0,
        "log_format": "json",
        "webhook_secret": new_secret(),
        "webhook_allowed_hosts": "127.0.0.1",
        "webhook_timeout_seconds": TIMEOUT_SECONDS,
        "webhook_retry_base_seconds": BASE_SECONDS,
        "webhook_retry_max_seconds": CAP_SECONDS,
        "webhook_max_attempts": MAX_ATTEMPTS,
        "webhook_poll_interval_seconds": 0.05,
    }


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


class Sender:
    """The webhook sender as a real process (`python sender.py`, as `make webhook-sender`
    runs it), which a test may kill, or restart with other settings."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self._stack = ExitStack()
        self._starts = 0

    def start(self, **overrides: object) -> None:
        assert self.process is None
        self._starts += 1
        settings = load_settings(**{**self.settings.model_dump(), **overrides})
        log = self.logs / f"sender-{self._starts}.log"
        self.process = self._stack.enter_context(
            service_process("api-service", service_environment(settings), log, script="sender.py")
        )

    def stop(self) -> None:
        """SIGTERM and wait (service_process's exit)."""
        self._stack.close()
        self.process = None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.stop()

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            logs = "\n".join(path.read_text() for path in sorted(self.logs.glob("*.log")))
            raise AssertionError(f"the sender exited with {self.process.returncode}:\n{logs}")


@pytest.fixture(scope="module")
def sender(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sender]:
    process = Sender(settings, tmp_path_factory.mktemp("sender"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as receiver:
        yield receiver


@pytest.fixture
def secret(settings: Settings) -> str:
    assert settings.webhook_secret is not None
    return settings.webhook_secret.get_secret_value()


async def submit(client: httpx.AsyncClient, url: str, **fields: Any) -> str:
    response = await client.post("/api/tasks", json={**TASK, "callback_url": url, **fields})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def wait_callback(
    stack: Stack, sender: Sender, task_id: str, state: str, timeout: float = 30
) -> dict[str, Any]:
    """The task as GET shows it, once its callback is no longer pending: AssertionError
    unless it is `state` then."""

    async def probe() -> dict[str, Any] | None:
        sender.check_alive()
        task = await status_of(stack.client, task_id)
        return task if task["callback"]["state"] != "pending" else None

    task = await wait_until(probe, timeout=timeout, interval=0.05, what=f"{task_id} {state}")
    assert task["callback"]["state"] == state, task["callback"]
    return task


def callback(
    url: str, state: str, attempts: int, status: int | None, error: str | None
) -> dict[str, Any]:
    return {
        "url": url,
        "state": state,
        "attempts": attempts,
        "last_status_code": status,
        "last_error": error,
    }


def verified(secret: str, request: Received) -> Any:
    """The request's JSON, once its signature is checked the way a receiver checks it."""
    return Webhook(secret).verify(request.body, request.headers)


def gaps(requests: list[Received]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]


async def test_a_completed_task_is_delivered_signed_with_the_task_as_get_shows_it(
    stack: Stack, sender: Sender, receiver: Receiver, secret: str
) -> None:
    released = asyncio.Event()
    receiver.script(Answer(200, hold=released))
    payload = {"size_bytes": 8192, "chunk_bytes": 4096, "seed": 5}
    task_id = await submit(stack.client, receiver.url, type="checksum", payload=payload)
    [request] = await receiver.wait_for(1, timeout=30)
    shown = await status_of(stack.client, task_id)  # while the attempt is in flight
    released.set()

    assert (request.method, request.path) == ("POST", "/hooks")
    assert verified(secret, request) == shown
    assert json.loads(request.body) == shown
    assert shown["status"] == "COMPLETED"
    assert shown["result"]["bytes"] == 8192
    assert shown["callback"] == callback(receiver.url, "pending", 1, None, None)
    headers = request.headers
    assert WEBHOOK_ID.match(headers["webhook-id"]), headers
    assert request.wall - 5 <= int(headers["webhook-timestamp"]) <= request.wall
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]+={0,2}", headers["webhook-signature"]), headers
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(request.body))
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body.replace(b"COMPLETED", b"CANCELLED"), headers)

    done = await wait_callback(stack, sender, task_id, "delivered")
    assert done["callback"] == callback(receiver.url, "delivered", 1, 200, None)
    assert len(receiver.requests) == 1


async def test_a_cancelled_task_is_delivered(
    stack: Stack, sender: Sender, receiver: Receiver, secret: str
) -> None:
    task_id = await submit(stack.client, receiver.url, delay_seconds=600)  # stays PENDING
    cancel = await stack.client.post(f"/api/tasks/{task_id}/cancel")
    assert cancel.status_code == 200, cancel.text
    [request] = await receiver.wait_for(1, timeout=30)
    body = verified(secret, request)
    assert (body["task_id"], body["status"]) == (task_id, "CANCELLED")
    done = await wait_callback(stack, sender, task_id, "delivered")
    assert done["callback"] == callback(receiver.url, "delivered", 1, 204, None)
    assert {key: value for key, value in body.items() if key != "callback"} == {
        key: value for key, value in done.items() if key != "callback"
    }


async def test_a_failed_task_is_delivered(
    stack: Stack,
    sender: Sender,
    receiver: Receiver,
    secret: str,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
) -> None:
    # A payload no handler can take fails at once; only a message that did not come through
    # the API can carry one.
    task = NewTask(
        str(uuid.uuid4()), "t", "d", None, "hash_chain", {"rounds": -1}, callback_url=receiver.url
    )
    await publish_task(
        channel, stack.settings, TaskMessage.from_record(await repository.create(task))
    )
    [request] = await receiver.wait_for(1, timeout=30)
    body = verified(secret, request)
    assert (body["task_id"], body["status"]) == (task.task_id, "FAILED")
    assert body["last_error"].startswith("ValidationError: 1 validation error for hash_chain")
    done = await wait_callback(stack, sender, task.task_id, "delivered")
    assert done["status"] == "FAILED"
    assert done["callback"] == callback(receiver.url, "delivered", 1, 204, None)


async def retried_once(
    stack: Stack,
    sender: Sender,
    receiver: Receiver,
    secret: str,
    first: Answer,
    *,
    error: str,
    status: int | None,
) -> list[Received]:
    """A delivery whose first attempt gets `first` and whose second succeeds: while the
    second is in flight, GET shows the first's outcome (`error`, `status`) and 2 attempts."""
    released = asyncio.Event()
    receiver.script(first, Answer(204, hold=released))
    task_id = await submit(stack.client, receiver.url)
    requests = await receiver.wait_for(2, timeout=30)
    during = await status_of(stack.client, task_id)
    released.set()
    assert during["callback"] == callback(receiver.url, "pending", 2, status, error)
    done = await wait_callback(stack, sender, task_id, "delivered")
    assert done["callback"] == callback(receiver.url, "delivered", 2, 204, None)
    assert len(receiver.requests) == 2
    one, two = requests
    assert one.webhook_id == two.webhook_id
    assert one.body == two.body  # fixed at the first attempt, signed again at each
    assert verified(secret, one) == verified(secret, two)
    return requests


async def test_a_500_is_retried_after_the_backoff_then_delivered(
    stack: Stack, sender: Sender, receiver: Receiver, secret: str
) -> None:
    requests = await retried_once(
        stack, sender, receiver, secret, Answer(500), error="the receiver answered 500", status=500
    )
    assert BASE_SECONDS <= gaps(requests)[0] < BASE_SECONDS * 1.2 + 2


async def test_a_429_is_retried_after_its_retry_after(
    stack: Stack, sender: Sender, receiver: Receiver, secret: str
) -> None:
    first = Answer(429, headers={"retry-after": "2"})
    requests = await retried_once(
        stack, sender, receiver, secret, first, error="the receiver answered 429", status=429
    )
    assert 2.0 <= gaps(requests)[0] < 2.0 + 2, gaps(requests)


async def test_a_timeout_is_retried(
    stack: Stack, sender: Sender, receiver: Receiver, secret: str
) -> None:
    requests = await retried_once(
        stack,
        sender,
        receiver,
        secret,
        Answer(hang=True),
        error=f"timed out after {TIMEOUT_SECONDS:g} s",
        status=None,
    )
    # The attempt started just before the request arrived (a connect and a write earlier).
    assert gaps(requests)[0] >= TIMEOUT_SECONDS + BASE_SECONDS - 0.05, gaps(requests)


async def test_a_connection_closed_without_an_answer_is_retried(
    stack: Stack, sender: Sender, receiver: Receiver, secret: str
) -> None:
    await retried_once(
        stack,
        sender,
        receiver,
        secret,
        Answer(close=True),
        error="connection failed: RemoteProtocolError: Server disconnected without sending a"
        " response.",
        status=None,
    )


async def test_a_refused_connection_is_retried_until_the_receiver_listens(
    stack: Stack, sender: Sender, secret: str
) -> None:
    port = free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}/hooks"
    task_id = await submit(stack.client, url)

    async def refused() -> bool:
        shown = (await status_of(stack.client, task_id))["callback"]
        return shown["attempts"] >= 1 and (shown["last_error"] or "").startswith(
            "connection failed: ConnectError"
        )

    await wait_until(refused, timeout=30, interval=0.02, what="a refused attempt recorded")
    released = asyncio.Event()
    async with receiving(port, default=Answer(204, hold=released)) as late:
        [request] = await late.wait_for(1, timeout=10)
        during = (await status_of(stack.client, task_id))["callback"]
        released.set()
        done = await wait_callback(stack, sender, task_id, "delivered")
        assert len(late.requests) == 1
    assert 2 <= during["attempts"] <= MAX_ATTEMPTS
    assert during["last_error"].startswith("connection failed: ConnectError"), during
    assert done["callback"] == callback(url, "delivered", during["attempts"], 204, None)
    assert verified(secret, request)["task_id"] == task_id


async def test_a_delivery_fails_after_the_maximum_of_attempts(
    stack: Stack, sender: Sender, secret: str
) -> None:
    async with receiving(default=Answer(500)) as receiver:
        task_id = await submit(stack.client, receiver.url)
        done = await wait_callback(stack, sender, task_id, "failed")
        requests = list(receiver.requests)
    error = (
        f"the receiver answered 500; gave up after {MAX_ATTEMPTS} attempts (WEBHOOK_MAX_ATTEMPTS)"
    )
    assert done["callback"] == callback(receiver.url, "failed", MAX_ATTEMPTS, 500, error)
    assert len(requests) == MAX_ATTEMPTS
    assert len({request.webhook_id for request in requests}) == 1
    for number, gap in enumerate(gaps(requests), start=1):
        # BASE * 2^(n-1) within the cap; the jitter only adds to it.
        assert gap >= min(BASE_SECONDS * 2 ** (number - 1), CAP_SECONDS) - 0.01, gaps(requests)
    assert all(verified(secret, request)["task_id"] == task_id for request in requests)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Answer(410), "the receiver answered 410"),
        (Answer(400, body=b"bad"), "the receiver answered 400"),
        (
            Answer(302, headers={"location": "/elsewhere"}),
            "the receiver answered 302 (redirects are not followed)",
        ),
        (
            Answer(307, headers={"location": "http://169.254.169.254/"}),
            "the receiver answered 307 (redirects are not followed)",
        ),
    ],
)
async def test_a_4xx_or_a_redirect_fails_at_once(
    stack: Stack, sender: Sender, receiver: Receiver, answer: Answer, error: str
) -> None:
    receiver.default = answer
    task_id = await submit(stack.client, receiver.url)
    done = await wait_callback(stack, sender, task_id, "failed")
    assert done["callback"] == callback(receiver.url, "failed", 1, answer.status, error)
    assert [request.path for request in receiver.requests] == ["/hooks"]  # nothing followed


async def test_an_answer_is_read_only_up_to_its_bound(
    stack: Stack, sender: Sender, receiver: Receiver
) -> None:
    # 64 KiB of a body announced as 64 MB: the sender stops reading there and drops the
    # connection. Reading on would outlast the attempt's timeout.
    receiver.default = Answer(200, body=b"x" * 65_536, stall=True)
    task_id = await submit(stack.client, receiver.url)
    done = await wait_callback(stack, sender, task_id, "delivered")
    assert done["callback"] == callback(receiver.url, "delivered", 1, 200, None)
    assert len(receiver.requests) == 1


async def test_a_url_the_guard_refuses_at_send_time_is_failed_unsent(
    stack: Stack,
    sender: Sender,
    receiver: Receiver,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
) -> None:
    # As if the name had resolved to a public address at submit (the API checks it there):
    # the row is written directly, and the sender checks again when it connects.
    url = f"http://localhost:{receiver.port}/hooks"
    task = NewTask(str(uuid.uuid4()), "t", "d", None, callback_url=url)
    await publish_task(
        channel, stack.settings, TaskMessage.from_record(await repository.create(task))
    )
    done = await wait_callback(stack, sender, task.task_id, "failed")
    shown = done["callback"]
    assert (shown["attempts"], shown["last_status_code"]) == (1, None)
    assert re.fullmatch(
        r"refused: the URL resolves to (127\.0\.0\.1|::1), a loopback address", shown["last_error"]
    ), shown
    assert receiver.requests == []


async def test_a_last_attempt_left_unrecorded_is_failed_unsent(
    stack: Stack,
    sender: Sender,
    receiver: Receiver,
    repository: MySQLTaskRepository,
    settings: Settings,
) -> None:
    # The sender that made attempt WEBHOOK_MAX_ATTEMPTS died before it recorded the answer:
    # the sender that takes the delivery next gives up on it without sending it again.
    task = NewTask(str(uuid.uuid4()), "t", "d", None, callback_url=receiver.url)
    await repository.create(task)
    await repository.mark_dispatched([task.task_id])  # no message: the task stays PENDING
    await query(
        settings.database,
        "INSERT INTO webhook_deliveries"
        " (webhook_id, task_id, url, status, attempts, next_attempt_at, created_at)"
        " VALUES (%s, %s, %s, 'COMPLETED', %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
        f"msg_{uuid.uuid4().hex}",
        task.task_id,
        receiver.url,
        MAX_ATTEMPTS,
    )
    done = await wait_callback(stack, sender, task.task_id, "failed")
    shown = done["callback"]
    assert shown["last_error"] == (
        f"no answer recorded for attempt {MAX_ATTEMPTS} (WEBHOOK_MAX_ATTEMPTS)"
    )
    assert shown["last_status_code"] is None
    assert shown["attempts"] == MAX_ATTEMPTS  # the one it gave up on is not counted
    assert receiver.requests == []


async def test_rotation_signs_with_both_secrets(
    stack: Stack, sender: Sender, receiver: Receiver, secret: str
) -> None:
    rotated = new_secret()
    sender.stop()
    sender.start(webhook_secret=rotated, webhook_secret_previous=secret)
    try:
        task_id = await submit(stack.client, receiver.url)
        await wait_callback(stack, sender, task_id, "delivered")
    finally:
        sender.stop()
        sender.start()
    [request] = receiver.requests
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(signature.startswith("v1,") for signature in signatures)
    # A receiver that has either secret verifies it; one with another secret does not.
    for known in (rotated, secret):
        assert verified(known, request)["task_id"] == task_id
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)


async def test_a_sender_killed_mid_delivery_loses_nothing(
    stack: Stack, sender: Sender, receiver: Receiver, settings: Settings, secret: str
) -> None:
    tasks = 5
    receiver.script(*[Answer(hang=True)] * tasks)  # held open until their sender dies
    ids = [await submit(stack.client, receiver.url) for _ in range(tasks)]
    first = await receiver.wait_for(tasks, timeout=30)
    sender.kill()
    # Killed mid-attempt: each attempt counted when taken, no answer recorded.
    rows = await query(
        settings.database,
        "SELECT task_id, state, attempts, last_error FROM webhook_deliveries"
        f" WHERE task_id IN ({', '.join(['%s'] * tasks)})",
        *ids,
    )
    assert sorted(rows) == sorted((task_id, "pending", 1, None) for task_id in ids)

    sender.start()
    for task_id in ids:
        done = await wait_callback(stack, sender, task_id, "delivered", timeout=LEASE_SECONDS + 30)
        assert done["callback"] == callback(receiver.url, "delivered", 2, 204, None)
    requests = receiver.requests
    assert len(requests) == 2 * tasks
    again = requests[tasks:]
    # Each delivery sent again, with its webhook-id and body, once its lease ran out.
    assert sorted((r.webhook_id, r.body) for r in again) == sorted(
        (r.webhook_id, r.body) for r in first
    )
    assert {verified(secret, request)["task_id"] for request in again} == set(ids)
    # Not before the lease ran out (it was taken a little before it arrived: its body
    # fixed, the connection made).
    sent_at = {request.webhook_id: request.at for request in first}
    for request in again:
        assert request.at - sent_at[request.webhook_id] >= LEASE_SECONDS - 0.5
