"""What the suite starts: our API (one or two uvicorn processes) and worker, and the
hello-world app (the peers' API and worker: bench.peers)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from bench.environment import BenchEnvironment
from bench.plan import ROOT
from bench.processes import Probe, Service, launch
from testkit.processes import free_port

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
async def api(
    bench: BenchEnvironment, *, processes: int, **overrides: object
) -> AsyncIterator[Service]:
    """`python main.py`, exactly as `make api` runs it, with API_WORKERS=`processes` (and
    `overrides`: other settings)."""
    port = free_port()
    env = bench.service_env(api_port=port, api_workers=processes, **overrides)
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
async def worker(
    bench: BenchEnvironment, *, name: str = "worker", **overrides: object
) -> AsyncIterator[Service]:
    """`python main.py` in worker-service/src, as `make worker` runs it, with `overrides`
    (`name`: its log's, when several run)."""
    # A free health port: the machine is shared, and a bench may run several workers.
    env = bench.service_env(**{"worker_health_port": 0, **overrides})
    env["PYTHONPATH"] = _python_path()
    async with launch(
        name,
        [sys.executable, "main.py"],
        cwd=ROOT / "worker-service" / "src",
        env=env,
        log=bench.workdir / f"{name}.log",
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
