"""`python -m bench.hotspots [--read]`: where the API x1 spends its time under the submit load
(or the read load, GET by id over 100,000 rows).

Starts the API in a scratch database and vhost, drives it with wrk at 64 connections, records
it with py-spy (installed into this venv when missing; attaching needs root or ptrace rights)
and prints how many cores the API, MariaDB, RabbitMQ and wrk used meanwhile, then the areas
and functions with the most samples: on their own (self), and ours including what they call
(total). The raw stacks are kept for a flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import uvloop

from bench import services
from bench.environment import bench_environment
from bench.plan import FULL, ROOT
from bench.processes import cpu_seconds, pids_named
from bench.store import new_ids
from bench.wrk import ensure_wrk, run_wrk, write_ids

logger = logging.getLogger("bench")

PY_SPY = "py-spy==0.4.3"
_READ_ROWS = 100_000
OURS = ("api-service/src/", "common/")
# Where the time goes, by what the stack passes through (a stack can count in several).
AREAS = {
    "MySQL: asyncmy and common/mysql/": ("asyncmy/", "common/mysql/"),
    "RabbitMQ: aio_pika/aiormq and common/amqp/": ("aiormq/", "aio_pika/", "common/amqp/"),
    "thread-pool hops (sync `def` dependencies)": ("run_in_threadpool",),
    "FastAPI dependency solving (includes the hops)": ("solve_dependencies",),
    "logging: stdlib and common/logs.py": ("logging/__init__", "common/logs.py"),
    "pydantic: validation and serialisation": ("pydantic", "serialize_response"),
    "reading the request body": ("Request.body", "Request.json"),
}
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def ensure_py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found:
        return found
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", PY_SPY], check=True, capture_output=True
    )
    return str(Path(sys.executable).parent / "py-spy")


def _frame(raw: str) -> str:
    """`function (path:line)` as `function (path relative to the repository or site-packages)`."""
    match = _FRAME.match(raw)
    if not match:
        return raw
    path = match["file"]
    for marker in (str(ROOT) + "/", "site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def _package(frame: str) -> str:
    """The top-level package (or our service's folder) a frame's file belongs to."""
    path = frame.rsplit("(", 1)[-1].rstrip(")")
    if path.startswith("api-service/src/"):
        return "api-service/src (ours)"
    if path.startswith("common/"):
        return "common (ours; asyncmy's compiled code shows up here too)"
    return path.split("/", 1)[0]


def _has(stack: str, marks: tuple[str, ...]) -> bool:
    return any(mark in stack for mark in marks)


def summarise(raw_stacks: str, top: int = 15) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw_stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_frame(frame) for frame in stack.split(";")]
        samples += int(count)
        areas.update({area: int(count) for area, marks in AREAS.items() if _has(stack, marks)})
        own[frames[-1]] += int(count)
        packages[_package(frames[-1])] += int(count)
        for frame in set(frames):
            if any(part in frame for part in OURS):
                total[frame] += int(count)
    lines = [f"{samples} samples (the thread holding the GIL)", "", "By area:"]
    lines += [f"  {n / samples:6.1%}  {area}" for area, n in areas.most_common()]
    lines += ["", "By package, on their own (self):"]
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in packages.most_common(top)]
    lines += ["", "Most samples on their own (self):"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "Our functions, including what they call (total):"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(lines)


def cpu_snapshot(api_pid: int) -> dict[str, float]:
    """CPU seconds so far of the API and of what it talks to on this machine."""
    groups = {"API": [api_pid], **pids_named("mariadbd", "beam.smp", "wrk")}
    return {name: sum(map(cpu_seconds, pids)) for name, pids in groups.items()}


async def record(seconds: float, output: Path, *, read: bool) -> dict[str, float]:
    """Profile the API under the submit (or the read) load; returns each process's CPU use
    (cores) meanwhile."""
    py_spy = ensure_py_spy()
    async with bench_environment() as bench, services.api(bench, processes=1) as api:
        script, url = "submit.lua", api.url + "/api/tasks"
        args: tuple[str, ...] = ()
        if read:
            ids = new_ids(_READ_ROWS)
            await bench.table.insert(ids, status="COMPLETED")
            script, url = "read.lua", api.url
            args = (str(write_ids(bench.workdir / "ids", ids)),)
        load = asyncio.create_task(
            run_wrk(
                url,
                script,
                seconds=seconds + 4,
                connections=FULL.connections,
                script_args=args,
            )
        )
        await asyncio.sleep(2)  # warm-up
        before, started = cpu_snapshot(api.process.pid), time.monotonic()
        spy = await asyncio.create_subprocess_exec(
            *(py_spy, "record", "--pid", str(api.process.pid), "--duration", str(int(seconds))),
            # --gil: only the thread running Python (idle thread-pool workers would swamp the
            # rest); --nonblocking: do not pause the API for each sample.
            *("--rate", "250", "--gil", "--nonblocking"),
            *("--format", "raw", "--output", str(output)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, errors = await spy.communicate()
        after, elapsed = cpu_snapshot(api.process.pid), time.monotonic() - started
        result = await load
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode()}")
        logger.info("under load: %.0f req/s, p99 %.1f ms", result.rate, result.p99_ms)
    return {name: (after[name] - before[name]) / elapsed for name in before}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotspots", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to record")
    parser.add_argument("--read", action="store_true", help="GET by id instead of POST")
    parser.add_argument("--output", type=Path, default=Path("/tmp/bench-api-profile.txt"))
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ensure_wrk()
    output = arguments.output
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        cores = runner.run(record(arguments.seconds, output, read=arguments.read))
    usage = ", ".join(f"{name} {used:.2f}" for name, used in cores.items())
    sys.stdout.write(f"CPU in use (cores of {os.cpu_count()}): {usage}\n\n")
    sys.stdout.write(summarise(output.read_text()) + "\n")
    logger.info("raw stacks in %s (flamegraph.pl or speedscope can draw them)", output)


if __name__ == "__main__":
    main()
