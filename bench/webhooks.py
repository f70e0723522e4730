"""10: the webhook sender's throughput. `webhook_deliveries` final tasks, each with its
callback_url and its delivery due now, are loaded straight into the tables (as the final
transitions leave them) before the sender starts; then the sender (`python sender.py`, as
`make webhook-sender` runs it, WEBHOOK_CONCURRENCY at its default) sends them to the suite's
own receiver (testkit.receiver, in the suite's process, on 127.0.0.1), once answering each
request at once and once after WEBHOOK_SLOW_SECONDS.

The rate is the deliveries over the time from the first request's arrival to the last
delivery's record (its row's updated_at: both clocks this machine's), so start-up is left
out. One attempt at a time, the slow receiver would allow 1 / WEBHOOK_SLOW_SECONDS a second:
how far above that the sender lands shows that it sends concurrently. Honesty: every
delivery received exactly once, with its own webhook-id and a signature that verifies, and
recorded delivered after one attempt.

`python -m bench.webhooks [--smoke]` runs this measurement alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import secrets
import sys
import time
from collections.abc import Sequence

import uvloop
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.environment import BenchEnvironment, bench_environment
from bench.honesty import reset
from bench.plan import FULL, ROOT, SMOKE, Plan
from bench.processes import Service, launch
from bench.report import markdown_table, webhook_rows
from bench.results import Check, WebhookRun, Webhooks
from bench.store import epoch, new_ids
from common.settings import Settings
from testkit.receiver import Answer, Receiver, receiving
from testkit.sql import query

WEBHOOK_SLOW_SECONDS = 0.2
_POLL_SECONDS = 0.1
_TIMEOUT_SECONDS = 600.0


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def measure_webhooks(bench: BenchEnvironment, plan: Plan) -> tuple[Webhooks, list[Check]]:
    secret = _secret()
    runs: list[WebhookRun] = []
    checks: list[Check] = []
    for delay in (0.0, WEBHOOK_SLOW_SECONDS):
        run, check = await _measure(bench, plan.webhook_deliveries, delay, secret)
        runs.append(run)
        checks.append(check)
    instant, slow = runs
    concurrency = bench.settings.webhook_concurrency
    return Webhooks(plan.webhook_deliveries, concurrency, instant, slow), checks


async def _measure(
    bench: BenchEnvironment, deliveries: int, delay: float, secret: str
) -> tuple[WebhookRun, Check]:
    what = f"webhooks, receiver answering {'at once' if not delay else f'in {delay * 1000:g} ms'}"
    async with receiving(default=Answer(204, delay=delay)) as receiver:
        await _load(bench.settings, new_ids(deliveries), receiver.url)

        async def first_arrived(service: Service) -> bool:
            return bool(receiver.requests)

        env = bench.service_env(webhook_secret=secret, webhook_allowed_hosts="127.0.0.1")
        env["PYTHONPATH"] = str(ROOT)
        async with launch(
            "webhook sender",
            [sys.executable, "sender.py"],
            cwd=ROOT / "api-service" / "src",
            env=env,
            log=bench.workdir / "webhook-sender.log",
            ready=first_arrived,
        ) as sender:
            await _wait_sent(bench.settings, sender)
            peak = sender.peak_bytes()
        rate = deliveries / (await _last_recorded(bench.settings) - receiver.requests[0].wall)
        check = await _check(bench.settings, receiver, secret, what=what, deliveries=deliveries)
    await query(bench.settings.database, "DELETE FROM webhook_deliveries")
    await reset(bench)
    return WebhookRun(delay_seconds=delay, rate=rate, peak_rss=peak), check


async def _load(settings: Settings, ids: Sequence[str], url: str) -> None:
    """COMPLETED tasks with `url` as their callback_url, and each one's delivery as the
    transition inserts it (common.mysql.webhooks.deliveries_statement), due now."""
    now = "UTC_TIMESTAMP(6)"
    values = ", ".join(
        f"('{task_id}', 'bench task', 'a row loaded by the benchmark', 'COMPLETED', 1,"
        f" {now}, {now}, {now}, {now}, {now}, %s)"
        for task_id in ids
    )
    await query(
        settings.database,
        "INSERT INTO tasks (id, title, description, status, attempts, created_at, updated_at,"
        f" started_at, completed_at, dispatched_at, callback_url) VALUES {values}",
        *[url] * len(ids),
    )
    await query(
        settings.database,
        "INSERT INTO webhook_deliveries"
        " (webhook_id, task_id, url, status, next_attempt_at, created_at)"
        " SELECT CONCAT('msg_', REPLACE(UUID(), '-', '')), id, callback_url, status,"
        " updated_at, updated_at FROM tasks ORDER BY id",
    )


async def _pending(settings: Settings) -> int:
    rows = await query(
        settings.database, "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'"
    )
    return int(rows[0][0])


async def _wait_sent(settings: Settings, sender: Service) -> None:
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    while (pending := await _pending(settings)) > 0:
        sender.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sender.name}: {pending:,} deliveries still pending")
        await asyncio.sleep(_POLL_SECONDS)


async def _last_recorded(settings: Settings) -> float:
    [(last,)] = await query(settings.database, "SELECT MAX(updated_at) FROM webhook_deliveries")
    return epoch(last)


async def _check(
    settings: Settings, receiver: Receiver, secret: str, *, what: str, deliveries: int
) -> Check:
    """Each delivery received once, signed, and recorded delivered after one attempt."""
    rows = await query(
        settings.database, "SELECT webhook_id, state, attempts FROM webhook_deliveries"
    )
    ids = {str(webhook_id) for webhook_id, _, _ in rows}
    delivered = sum(state == "delivered" and attempts == 1 for _, state, attempts in rows)
    received = [request.headers.get("webhook-id") for request in receiver.requests]
    webhook = Webhook(secret)
    verified = 0
    for request in receiver.requests:
        try:
            webhook.verify(request.body, request.headers)
        except WebhookVerificationError:
            continue
        verified += 1
    detail = (
        f"{deliveries:,} loaded, {len(received):,} requests for {len(set(received)):,}"
        f" webhook-ids, {verified:,} verified, {delivered:,} delivered after 1 attempt"
    )
    ok = (
        len(rows) == deliveries
        and len(received) == len(set(received)) == deliveries
        and set(received) == ids
        and verified == deliveries
        and delivered == deliveries
    )
    return Check(what, detail, ok)


def main() -> int:
    """This measurement alone, in a scratch database and vhost of its own: its rows of the
    table and its honesty checks."""
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks")
    parser.add_argument("--smoke", action="store_true", help="the smoke run's sizes")
    plan = SMOKE if parser.parse_args().smoke else FULL
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def run() -> tuple[Webhooks, list[Check]]:
        async with bench_environment() as bench:
            return await measure_webhooks(bench, plan)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        numbers, checks = runner.run(run())
    sys.stdout.write(markdown_table(webhook_rows(plan, numbers)) + "\n")
    for check in checks:
        sys.stdout.write(check.line() + "\n")
    return 0 if all(check.ok for check in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
