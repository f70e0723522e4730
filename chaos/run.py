"""The chaos run: real API and workers, real MySQL/MariaDB and RabbitMQ behind TCP proxies,
while workers are SIGKILLed, the broker and the database fail in every fault shape in turn,
and the API is killed. Every answer a client gets is counted and timed."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chaos.plan import ChaosPlan, FaultWindow
from chaos.report import LogTally, Verdict
from common.mysql import Database, MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask
from testkit.polling import api_healthy, wait_until
from testkit.processes import ROOT, api_client, free_port
from testkit.proxy import TcpProxy, tcp_proxy
from testkit.scratch import scratch_environment, service_environment, through_proxies
from testkit.sql import query

logger = logging.getLogger("chaos")

FAILURE = "SimulatedFailure: simulated failure (PROCESSING_FAILURE_RATE)"


@dataclass
class Service:
    """One service process that can be killed and started again; each start logs to a file
    of its own, so that nothing a killed process wrote is lost."""

    name: str
    directory: str
    env: dict[str, str]
    logs: Path
    starts: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_files: list[Path] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        log = self.logs / f"{self.name}.{self.starts}.log"
        self.log_files.append(log)
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "main.py"],
                cwd=ROOT / self.directory / "src",
                env={**self.env, "PYTHONPATH": str(ROOT)},
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Run:
    plan: ChaosPlan
    direct: Settings
    api: Service
    workers: list[Service]
    db_proxy: TcpProxy
    broker_proxy: TcpProxy
    client: httpx.AsyncClient
    answer_bound: float  # no answer may take longer: both timeouts and a margin
    accepted: set[str] = field(default_factory=set)
    orphans: set[str] = field(default_factory=set)
    worker_kills: int = 0
    refusals: int = 0  # 503 answers and connections to a dead API, each retried by the client
    answers: Counter[str] = field(default_factory=Counter)  # "POST 202", "GET 503", ...
    late: int = 0  # answers that took longer than answer_bound
    hung: int = 0  # requests with no answer at all within the client's 30 s
    submitting: bool = True

    async def submit_all(self) -> None:
        """Submit plan.tasks tasks at an even pace; a client retries on 503 or a dead API,
        and a task counts as accepted only once it got its 202."""
        gate = asyncio.Semaphore(self.plan.concurrency)
        interval = self.plan.submit_seconds / self.plan.tasks
        started = time.monotonic()

        async def one(n: int) -> None:
            await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
            async with gate:
                await self._submit({"title": f"chaos {n}", "description": "d"})

        try:
            await asyncio.gather(*(one(n) for n in range(self.plan.tasks)))
        finally:
            self.submitting = False

    async def _submit(self, body: dict[str, str]) -> None:
        for _ in range(600):
            response = await self._request("POST", "/api/tasks", json=body)
            if response is not None and response.status_code == 202:
                self.accepted.add(response.json()["task_id"])
                return
            self.refusals += 1
            await asyncio.sleep(0.1)
        raise RuntimeError("a submission was refused for a minute")

    async def read_while_submitting(self) -> None:
        """Reads of accepted tasks alongside, so that GET meets every fault too."""
        while self.submitting:
            if self.accepted:
                task_id = random.choice(tuple(self.accepted))
                await self._request("GET", f"/api/tasks/{task_id}")
            await asyncio.sleep(0.02)

    async def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await self.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            self.hung += 1
            return None
        except httpx.TransportError:
            return None  # the API is down (killed and starting again)
        if time.monotonic() - started > self.answer_bound:
            self.late += 1
        self.answers[f"{method} {response.status_code}"] += 1
        if response.status_code >= 500 and response.status_code != 503:
            logger.error("%s %s answered %s: %s", method, path, response.status_code, response.text)
        return response

    async def faults(self) -> None:
        plan = self.plan
        await asyncio.gather(
            self._kill_workers(),
            *(self._fault(window) for window in plan.faults),
            self._kill_api(plan.api_kill_at),
            self._commit_orphans(),
        )

    async def _kill_workers(self) -> None:
        deadline = time.monotonic() + self.plan.submit_seconds
        while time.monotonic() + self.plan.kill_worker_every < deadline:
            await asyncio.sleep(self.plan.kill_worker_every)
            victim = random.choice(self.workers)
            victim.kill()
            self.worker_kills += 1
            victim.start()

    async def _fault(self, window: FaultWindow) -> None:
        proxy = self.db_proxy if window.backend == "database" else self.broker_proxy
        await asyncio.sleep(window.at)
        logger.info("%s: %s for %.1f s", window.backend, window.shape, window.seconds)
        proxy.fault(window.shape)
        await asyncio.sleep(window.seconds)
        proxy.restore()

    async def _kill_api(self, at: float) -> None:
        await asyncio.sleep(at)
        self.api.kill()
        self.api.start()

    async def _commit_orphans(self) -> None:
        """Rows committed and never published: what a crash right after COMMIT leaves."""
        database = Database(self.direct)
        await database.start()
        try:
            repository = MySQLTaskRepository(database)
            for n in range(self.plan.orphans):
                task_id = str(uuid.uuid4())
                await repository.create(NewTask(task_id, f"orphan {n}", "d", None))
                self.orphans.add(task_id)
        finally:
            await database.close()


async def _drain(run: Run) -> float:
    started = time.monotonic()

    async def drained() -> bool:
        sql = "SELECT COUNT(*) FROM tasks WHERE status IN ('PENDING', 'PROCESSING')"
        [(unfinished,)] = await query(run.direct.database, sql)
        return not unfinished

    try:
        await wait_until(drained, timeout=run.plan.drain_timeout, interval=0.5, what="drain")
    except AssertionError:
        logger.error("not drained within %ss", run.plan.drain_timeout)
    return time.monotonic() - started


async def _verdict(run: Run, drain_seconds: float) -> Verdict:
    rows = await query(run.direct.database, "SELECT id, status, attempts, last_error FROM tasks")
    statuses = {task_id: status for task_id, status, _, _ in rows}
    failed = [(attempts, error) for _, status, attempts, error in rows if status == "FAILED"]
    tally = LogTally.read(path for worker in run.workers for path in worker.log_files)
    api_tally = LogTally.read(run.api.log_files)
    claims = sum(tally.claims.values())
    return Verdict(
        accepted=len(run.accepted),
        orphans=len(run.orphans),
        rows=len(rows),
        completed=sum(status == "COMPLETED" for status in statuses.values()),
        failed=len(failed),
        lost=len((run.accepted | run.orphans) - statuses.keys()),
        stuck=sum(status not in ("COMPLETED", "FAILED") for status in statuses.values()),
        duplicate_completions=sum(count - 1 for count in tally.completions.values() if count > 1),
        unexplained_failures=sum(
            error != FAILURE or attempts < run.direct.max_attempts for attempts, error in failed
        ),
        redeliveries=max(0, claims - len(tally.claims) - tally.retries),
        retries=tally.retries,
        dead_lettered=tally.dead_lettered,
        drain_seconds=drain_seconds,
        worker_kills=run.worker_kills,
        client_refusals=run.refusals,
        answers=run.answers,
        late_answers=run.late,
        hung_requests=run.hung,
        faults=len(run.plan.faults),
        submitted=run.plan.tasks,
        answer_bound=run.answer_bound,
        publishes_deferred=api_tally.deferred,
        duplicates_postponed=tally.postponed,
        published_by_dispatcher=api_tally.dispatched_late,
    )


@asynccontextmanager
async def _stack(plan: ChaosPlan, logs: Path) -> AsyncIterator[Run]:
    overrides = {
        "api_port": free_port(),
        "processing_delay_min_seconds": 0.05,
        "processing_delay_max_seconds": 0.2,
        "processing_failure_rate": plan.failure_rate,
        "retry_backoff_base_seconds": 0.1,
        "retry_backoff_factor": 2.0,
        "dispatch_interval_seconds": 0.5,
        # The work takes at most 0.2 s: a claim left behind by a killed worker, or one that
        # reached the database late, is taken over within seconds instead of a minute.
        "task_lease_seconds": 5.0,
        "log_format": "json",
    }
    async with scratch_environment(**overrides) as direct:
        with (
            tcp_proxy(direct.database.host, direct.database.port) as db_proxy,
            tcp_proxy(direct.rabbitmq_host, direct.rabbitmq_port) as broker_proxy,
        ):
            proxied = through_proxies(
                direct, database_port=db_proxy.port, broker_port=broker_proxy.port
            )
            env = service_environment(proxied)
            api = Service("api", "api-service", env, logs)
            # Each worker on a free health port of its own (the scratch settings' default).
            workers = [
                Service(name, "worker-service", env, logs) for name in ("worker-a", "worker-b")
            ]
            for service in (api, *workers):
                service.start()
            base_url = f"http://127.0.0.1:{direct.api_port}"
            bound = proxied.database_timeout_seconds + proxied.publish_timeout_seconds + 1.0
            try:
                async with api_client(base_url) as client:
                    yield Run(plan, direct, api, workers, db_proxy, broker_proxy, client, bound)
            finally:
                for service in (api, *workers):
                    service.stop()


async def run_chaos(plan: ChaosPlan, logs: Path) -> Verdict:
    """Run the plan start to finish and judge what it left behind."""
    async with _stack(plan, logs) as run:
        await wait_until(lambda: api_healthy(run.client), timeout=30, what="API /health")
        await asyncio.gather(run.submit_all(), run.read_while_submitting(), run.faults())
        return await _verdict(run, await _drain(run))
