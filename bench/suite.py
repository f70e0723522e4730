"""The whole run, in order: each measurement starts what it needs and stops it again."""

from __future__ import annotations

import logging

from bench.cpu_bound import ROUNDS, measure_hash_chain
from bench.dashboard import measure_dashboard
from bench.drain import drain_ours, drain_peer
from bench.end_to_end import measure_end_to_end
from bench.environment import BenchEnvironment, bench_environment
from bench.in_flight import measure_in_flight
from bench.listing import measure_listing
from bench.peers import PEERS
from bench.plan import Plan
from bench.read import clear_rows, load_rows, measure_read
from bench.results import Check, Results
from bench.scheduled import measure_scheduled
from bench.streams import measure_streams
from bench.submit import measure_submit, targets
from bench.webhooks import measure_webhooks

logger = logging.getLogger("bench")


def _record(results: Results, *checks: Check) -> None:
    for check in checks:
        results.checks.append(check)
        log = logger.info if check.ok else logger.error
        log("honesty: %s", check.line())


async def _submit(bench: BenchEnvironment, plan: Plan, results: Results) -> None:
    for target in targets(bench):
        logger.info("submit: %s", target.label)
        results.submit[target.key], checks = await measure_submit(bench, plan, target)
        _record(results, *checks)


async def _read(bench: BenchEnvironment, plan: Plan, results: Results) -> None:
    logger.info("read: loading %s rows", f"{plan.read_rows:,}")
    ids, results.read_load_seconds = await load_rows(bench, plan)
    logger.info("read: loaded in %.1f s", results.read_load_seconds)
    for processes in (1, 2):
        logger.info("read: API x%d", processes)
        results.read[f"api{processes}"], check = await measure_read(
            bench, plan, ids, processes=processes
        )
        _record(results, check)
    logger.info("list and stats: API x1, %s rows", f"{plan.read_rows:,}")
    results.listing, checks = await measure_listing(bench, plan)
    _record(results, *checks)
    logger.info("dashboard: %d page loads in Chromium, API x1", plan.dashboard_loads + 1)
    results.dashboard, checks = await measure_dashboard(bench, plan)
    _record(results, *checks)
    await clear_rows(bench)


async def _work(bench: BenchEnvironment, plan: Plan, results: Results) -> None:
    logger.info("end-to-end: %d req/s", plan.end_to_end_rate)
    results.end_to_end, checks = await measure_end_to_end(bench, plan)
    _record(results, *checks)
    logger.info("drain: our worker, %s tasks", f"{plan.drain_tasks:,}")
    results.drain["ours"], check = await drain_ours(bench, plan)
    _record(results, check)
    for peer in PEERS:
        logger.info("drain: %s worker, %s tasks", peer.label, f"{plan.peer_drain_tasks:,}")
        results.drain[peer.key], check = await drain_peer(bench, plan, peer)
        _record(results, check)
    logger.info("hash_chain: %s tasks of %s rounds", f"{plan.hash_chain_tasks:,}", f"{ROUNDS:,}")
    results.hash_chain, check = await measure_hash_chain(bench, plan)
    _record(results, check)
    logger.info(
        "in flight: %s tasks, %s queued", f"{plan.in_flight:,}", f"{plan.in_flight_tasks:,}"
    )
    results.in_flight, check = await measure_in_flight(bench, plan)
    _record(results, check)
    logger.info("event streams: %s on API x1", f"{plan.streams:,}")
    results.streams, checks = await measure_streams(bench, plan)
    _record(results, *checks)
    logger.info("scheduled: dispatcher passes at %s waiting, due tasks", f"{plan.scheduled_rows:,}")
    results.scheduled, checks = await measure_scheduled(bench, plan)
    _record(results, *checks)
    logger.info("webhooks: %s deliveries, one sender", f"{plan.webhook_deliveries:,}")
    results.webhooks, checks = await measure_webhooks(bench, plan)
    _record(results, *checks)


async def run_suite(plan: Plan) -> tuple[Results, dict[str, str]]:
    """Every measurement, in a scratch database and vhost; returns the results and the
    servers' versions."""
    async with bench_environment() as bench:
        versions = {
            "mariadb": await bench.table.server_version(),
            "rabbitmq": bench.queues.broker_version,
        }
        results = Results()
        # Submit first: starting the API also declares the queues the later phases publish to.
        await _submit(bench, plan, results)
        await _read(bench, plan, results)
        await _work(bench, plan, results)
    return results, versions
