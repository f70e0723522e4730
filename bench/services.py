"""What the suite starts: our API (one or two uvicorn processes) and worker, the hello-world
app, and the Celery peer's API and worker."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from bench.environment import BenchEnvironment
from bench.plan import BENCH, ROOT
from bench.processes import Probe, Service, launch
from testkit.processes import free_port

PEER = BENCH / "celery_peer"
PEER_PYTHON = BENCH / ".venv-celery" / "bin" / "python"
CELERY_QUEUE = "celery"
# The same event loop and HTTP parser our API gets from uvicorn's "auto" choices.
UVICORN_FLAGS = ("--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools")


def http_ready(path: str, *, status: int | None = None) -> Probe:
    """Ready once `GET path` answers (with `status`, when given)."""

    async def probe(service: Service) -> bool:
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=2) as client:
                answer = await client.get(path)
        except httpx.TransportError:
            return False
        return status is None or answer.status_code == status

    return probe


def consuming(bench: BenchEnvironment, queue: str) -> Probe:
    """Ready once a consumer is registered on `queue`."""

    async def probe(service: Service) -> bool:
        return await bench.queues.consumers(queue) > 0

    return probe


def _python_path(*extra: str) -> str:
    return os.pathsep.join([str(ROOT), *extra])


@asynccontextmanager
async def api(bench: BenchEnvironment, *, processes: int) -> AsyncIterator[Service]:
    """`python main.py`, exactly as `make api` runs it, with API_WORKERS=`processes`."""
    port = free_port()
    env = bench.service_env(api_port=port, api_workers=processes)
    env["PYTHONPATH"] = _python_path()
    async with launch(
        f"api x{processes}",
        [sys.executable, "main.py"],
        cwd=ROOT / "api-service" / "src",
        env=env,
        log=bench.workdir / f"api-{processes}.log",
        ready=http_ready("/health", status=200),
        port=port,
    ) as service:
        yield service


@asynccontextmanager
async def worker(bench: BenchEnvironment, **overrides: object) -> AsyncIterator[Service]:
    """`python main.py` in worker-service/src, as `make worker` runs it, with `overrides`."""
    heartbeat = bench.workdir / "worker-heartbeat"
    env = bench.service_env(worker_heartbeat_file=str(heartbeat), **overrides)
    env["PYTHONPATH"] = _python_path()
    async with launch(
        "worker",
        [sys.executable, "main.py"],
        cwd=ROOT / "worker-service" / "src",
        env=env,
        log=bench.workdir / "worker.log",
        ready=consuming(bench, bench.queues.task_queue),
        # In-flight tasks finish before it exits: allow for the longest simulated delay.
        stop_timeout=60.0,
    ) as service:
        yield service


@asynccontextmanager
async def hello(bench: BenchEnvironment) -> AsyncIterator[Service]:
    """The framework's ceiling: one FastAPI POST route, under uvicorn like our API."""
    port = free_port()
    argv = [
        *(sys.executable, "-m", "uvicorn", "bench.hello:app"),
        *(*UVICORN_FLAGS, "--port", str(port), "--no-access-log", "--log-level", "warning"),
    ]
    async with launch(
        "hello-world",
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": _python_path()},
        log=bench.workdir / "hello.log",
        ready=http_ready("/openapi.json", status=200),
        port=port,
    ) as service:
        yield service


def _peer_env(bench: BenchEnvironment, delay: tuple[float, float] = (0.0, 0.0)) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(PEER),
        "PEER_DATABASE_URL": bench.peer_database_url,
        "PEER_BROKER_URL": bench.peer_broker_url,
        "PEER_DELAY_MIN_SECONDS": str(delay[0]),
        "PEER_DELAY_MAX_SECONDS": str(delay[1]),
    }


@asynccontextmanager
async def celery_api(bench: BenchEnvironment) -> AsyncIterator[Service]:
    port = free_port()
    argv = [
        *(str(PEER_PYTHON), "-m", "uvicorn", "peer_api:app"),
        *(*UVICORN_FLAGS, "--port", str(port), "--no-access-log", "--log-level", "warning"),
    ]
    async with launch(
        "celery peer api",
        argv,
        cwd=PEER,
        env=_peer_env(bench),
        log=bench.workdir / "celery-api.log",
        ready=http_ready("/openapi.json", status=200),
        port=port,
    ) as service:
        yield service


@asynccontextmanager
async def celery_worker(bench: BenchEnvironment) -> AsyncIterator[Service]:
    """`celery worker -c 2` (prefork), with Celery's defaults otherwise."""
    argv = [
        *(str(PEER_PYTHON), "-m", "celery", "-A", "peer_tasks", "worker"),
        *("--concurrency", "2", "--pool", "prefork", "--loglevel", "WARNING"),
    ]
    async with launch(
        "celery worker",
        argv,
        cwd=PEER,
        env=_peer_env(bench),
        log=bench.workdir / "celery-worker.log",
        ready=consuming(bench, CELERY_QUEUE),
        stop_timeout=60.0,
    ) as service:
        yield service


async def celery_enqueue(bench: BenchEnvironment, ids: list[str]) -> None:
    """`process_task.delay(id)` for each id, from the peer's own environment."""
    ids_file = bench.workdir / "celery-ids.txt"
    ids_file.write_text("\n".join(ids))
    log = bench.workdir / "celery-enqueue.log"
    async with launch(
        "celery enqueue",
        [str(PEER_PYTHON), "peer_enqueue.py", str(ids_file)],
        cwd=PEER,
        env=_peer_env(bench),
        log=log,
        ready=_always,
    ) as service:
        if await service.process.wait() != 0:
            raise RuntimeError(f"peer_enqueue.py failed:\n{service.log_tail()}")


async def _always(service: Service) -> bool:
    return True
