"""The webhook sender: takes due deliveries from the outbox, sends them, records each attempt.

At least once: a delivery is recorded with the final transition of its task, taken by one
sender at a time under a lease, and marked only after the receiver's answer; a sender that
dies between that answer and the mark leaves the delivery to be sent again (the same
webhook-id, so a receiver can tell), never zero times. Attempts run concurrently, up to
WEBHOOK_CONCURRENCY, so a slow receiver holds one slot, not the others' deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn, Protocol

from common.errors import DependencyUnavailable
from common.ports import TaskRepository, WebhookOutbox
from common.supervision import backoff_seconds
from common.tasks import CallbackState, DueDelivery
from models.tasks import TaskPublic
from services.webhooks.delivery import Attempt, Verdict
from services.webhooks.signing import Signer

logger = logging.getLogger(__name__)

# A delivery taken is held this long past the attempt's timeout before another sender may
# take it (the sender that holds it died, or lost the database before recording it).
LEASE_MARGIN_SECONDS = 5.0


class Poster(Protocol):
    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    max_attempts: int

    def delay(self, attempt: int, retry_after: float | None, *, jitter: float) -> float:
        """The pause after failed attempt number `attempt`: the receiver's Retry-After if it
        gave one, else BASE * 2^(attempt-1) plus `jitter` (0-1) of 20%, within the cap."""
        if retry_after is not None:
            return min(retry_after, self.max_seconds)
        nominal = min(self.base_seconds * 2.0 ** min(attempt - 1, 60), self.max_seconds)
        return nominal * (1 + 0.2 * jitter)


class WebhookSender:
    def __init__(
        self,
        *,
        outbox: WebhookOutbox,
        tasks: TaskRepository,
        poster: Poster,
        signer: Signer,
        policy: RetryPolicy,
        timeout_seconds: float,
        concurrency: int,
        poll_interval_seconds: float,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        self._outbox = outbox
        self._tasks = tasks
        self._poster = poster
        self._signer = signer
        self._policy = policy
        self._lease_seconds = timeout_seconds + LEASE_MARGIN_SECONDS
        self._concurrency = concurrency
        self._poll_interval = poll_interval_seconds
        self._random = random_fraction
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self) -> NoReturn:
        """Forever: take what is due into the free slots, then wait for a slot or the next
        poll. A failed pass (the database is down, or anything else) is logged, and the loop
        goes on, backing off."""
        failures = 0
        while True:
            free = self._concurrency - len(self._in_flight)
            taken: list[DueDelivery] = []
            try:
                if free > 0:
                    taken = await self._outbox.take_due(
                        limit=free, lease_seconds=self._lease_seconds
                    )
            except DependencyUnavailable as exc:
                failures += 1
                logger.warning("webhook outbox unavailable", extra={"error": str(exc)})
            except Exception:
                failures += 1
                logger.exception("webhook pass failed unexpectedly")
            else:
                failures = 0
            for delivery in taken:
                task = asyncio.get_running_loop().create_task(self._deliver(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if taken and len(taken) == free:
                await self._slot_freed()  # more may be due: take them as slots free up
            elif not taken:
                pause = backoff_seconds(failures, cap=30.0) if failures else self._poll_interval
                await self._slot_freed(within=pause)

    async def _slot_freed(self, within: float | None = None) -> None:
        """Until an attempt in flight ends, or `within` seconds have passed."""
        if not self._in_flight:
            await asyncio.sleep(within or 0)
            return
        await asyncio.wait(self._in_flight, timeout=within, return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        """Let the attempts in flight end (each within its timeout) and record them."""
        if self._in_flight:
            await asyncio.wait(self._in_flight)

    async def _deliver(self, delivery: DueDelivery) -> None:
        context = {
            "task_id": delivery.task_id,
            "webhook_id": delivery.webhook_id,
            "attempt": delivery.attempt,
        }
        try:
            await self._attempt(delivery, context)
        except DependencyUnavailable as exc:
            # Not recorded: the lease runs out and it is sent again (the same webhook-id).
            logger.warning("webhook attempt not recorded", extra={**context, "error": str(exc)})
        except Exception:
            logger.exception("webhook attempt failed unexpectedly", extra=context)

    async def _attempt(self, delivery: DueDelivery, context: dict[str, object]) -> None:
        if delivery.attempt > self._policy.max_attempts:
            # The sender that made the last attempt died before it recorded the answer.
            await self._outbox.record(
                delivery.delivery_id,
                state=CallbackState.FAILED,
                status_code=None,
                error=f"no answer recorded for attempt {self._policy.max_attempts}"
                " (WEBHOOK_MAX_ATTEMPTS)",
                attempted=False,
            )
            return
        body = delivery.body or await self._fix_body(delivery)
        headers = self._signer.headers(delivery.webhook_id, body, datetime.now(UTC))
        attempt = await self._poster.post(delivery.url, headers, body.encode())
        state, next_at, error = self._outcome(delivery.attempt, attempt)
        await self._outbox.record(
            delivery.delivery_id,
            state=state,
            status_code=attempt.status_code,
            error=error,
            next_attempt_at=next_at,
        )
        logger.info(
            "webhook attempt",
            extra={
                **context,
                "outcome": state.value if state is not CallbackState.PENDING else "retry",
                "status_code": attempt.status_code,
                "error": error,
            },
        )

    def _outcome(
        self, number: int, attempt: Attempt
    ) -> tuple[CallbackState, datetime | None, str | None]:
        if attempt.verdict is Verdict.DELIVERED:
            return CallbackState.DELIVERED, None, None
        if attempt.verdict is Verdict.FAILED:
            return CallbackState.FAILED, None, attempt.error
        if number >= self._policy.max_attempts:
            return (
                CallbackState.FAILED,
                None,
                f"{attempt.error}; gave up after {number} attempts (WEBHOOK_MAX_ATTEMPTS)",
            )
        pause = self._policy.delay(number, attempt.retry_after, jitter=self._random())
        return CallbackState.PENDING, datetime.now(UTC) + timedelta(seconds=pause), attempt.error

    async def _fix_body(self, delivery: DueDelivery) -> str:
        """The task as GET shows it now, fixed as the body of every attempt of the delivery."""
        record = await self._tasks.get(delivery.task_id)
        if record is None:  # tasks are never deleted
            raise DependencyUnavailable(f"the task {delivery.task_id} of a delivery is missing")
        body = TaskPublic.json_of(record).decode()
        await self._outbox.fix_body(delivery.delivery_id, body)
        return body
