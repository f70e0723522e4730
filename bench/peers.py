"""The peers the suite compares our services with, Celery and Dramatiq: each one a FastAPI
route that inserts the task through the SQLAlchemy ORM and hands it to its task-queue library,
and that library's worker, both in a venv of its own (bench.peer_env makes it).

A peer's directory (bench/<key>_peer) holds its pinned requirements.txt and its peer_tasks.py
(the worker's module, with `enqueue(task_id)` and `enqueue_all(ids)`); bench/peer_common holds
what both share: the table mapping and the task's work, the API and the enqueue script.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.environment import BenchEnvironment
from bench.plan import BENCH
from bench.processes import Service, launch, run_to_end
from bench.services import UVICORN_FLAGS, consuming, http_ready
from testkit.processes import free_port

COMMON = BENCH / "peer_common"


@dataclass(frozen=True, slots=True)
class Peer:
    key: str  # its directory is bench/<key>_peer, its venv bench/.venv-<key>
    label: str
    queue: str  # where its tasks wait for the worker
    worker: tuple[str, ...]  # the worker's command, after `python -m`
    worker_flags: str  # the worker's flags, as the report names them
    processes: int  # worker processes doing the work: the per-process figures divide by it

    @property
    def directory(self) -> Path:
        return BENCH / f"{self.key}_peer"

    @property
    def venv(self) -> Path:
        return BENCH / f".venv-{self.key}"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def requirements(self) -> Path:
        return self.directory / "requirements.txt"

    def pinned(self, package: str) -> str:
        """The version requirements.txt pins `package` at."""
        for line in self.requirements.read_text().splitlines():
            name, _, version = line.partition("==")
            if name.split("[")[0].strip().lower() == package:
                return version.strip()
        raise LookupError(f"{self.requirements} does not pin {package}")


CELERY = Peer(
    key="celery",
    label="Celery",
    queue="celery",
    worker=(
        *("celery", "-A", "peer_tasks", "worker"),
        *("--concurrency", "2", "--pool", "prefork", "--loglevel", "WARNING"),
    ),
    worker_flags="-c 2",
    processes=2,
)
# One process, so that its rate is the per-process figure; Dramatiq's default of 8 threads
# (they share one GIL: they overlap the task's MySQL round trips, not its Python), which also
# drained fastest in a trial here: 2 threads 401 tasks/s, 8: 410-427, 16 and 32: 250.
DRAMATIQ = Peer(
    key="dramatiq",
    label="Dramatiq",
    queue="default",
    worker=("dramatiq", "peer_tasks", "--processes", "1", "--threads", "8"),
    worker_flags="--processes 1 --threads 8",
    processes=1,
)
PEERS = (CELERY, DRAMATIQ)


def _env(bench: BenchEnvironment, peer: Peer) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(peer.directory), str(COMMON)]),
        "PEER_DATABASE_URL": bench.peer_database_url,
        "PEER_BROKER_URL": bench.peer_broker_url,
        "PEER_DELAY_MIN_SECONDS": "0",
        "PEER_DELAY_MAX_SECONDS": "0",
    }


def _run(peer: Peer, *argv: str) -> Sequence[str]:
    return [str(peer.python), *argv]


@asynccontextmanager
async def peer_api(bench: BenchEnvironment, peer: Peer) -> AsyncIterator[Service]:
    """`uvicorn peer_api:app`, with the flags our API's uvicorn runs with."""
    port = free_port()
    argv = _run(
        peer,
        *("-m", "uvicorn", "peer_api:app"),
        *(*UVICORN_FLAGS, "--port", str(port), "--no-access-log", "--log-level", "warning"),
    )
    async with launch(
        f"{peer.key} peer api",
        argv,
        cwd=peer.directory,
        env=_env(bench, peer),
        log=bench.workdir / f"{peer.key}-api.log",
        ready=http_ready("/openapi.json", status=200),
        port=port,
    ) as service:
        yield service


@asynccontextmanager
async def peer_worker(bench: BenchEnvironment, peer: Peer) -> AsyncIterator[Service]:
    """The peer's worker with `peer.worker`'s flags and its library's defaults otherwise;
    ready once it consumes from `peer.queue`."""
    async with launch(
        f"{peer.key} worker",
        _run(peer, "-m", *peer.worker),
        cwd=peer.directory,
        env=_env(bench, peer),
        log=bench.workdir / f"{peer.key}-worker.log",
        ready=consuming(bench, peer.queue),
        stop_timeout=60.0,
    ) as service:
        yield service


async def peer_enqueue(bench: BenchEnvironment, peer: Peer, ids: list[str]) -> None:
    """The peer's `enqueue_all(ids)`, from its own environment."""
    ids_file = bench.workdir / f"{peer.key}-ids.txt"
    ids_file.write_text("\n".join(ids))
    await run_to_end(
        f"{peer.key} enqueue",
        _run(peer, str(COMMON / "peer_enqueue.py"), str(ids_file)),
        cwd=peer.directory,
        env=_env(bench, peer),
        log=bench.workdir / f"{peer.key}-enqueue.log",
    )
