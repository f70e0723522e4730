"""Child processes the suite starts and stops itself, and what /proc says about them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path


class ServiceFailed(RuntimeError):
    """A service did not start, or died while it was being measured."""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(_children(current))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(*names: str) -> dict[str, list[int]]:
    """The processes whose command name is each of `names` (mariadbd, beam.smp, ...)."""
    found: dict[str, list[int]] = {name: [] for name in names}
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if command in found:
            found[command].append(int(entry.name))
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Service:
    name: str
    process: asyncio.subprocess.Process
    log: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory now, summed over the process and its children."""
        return sum(_status_kib(pid, "VmRSS") for pid in process_tree(self.process.pid)) * 1024

    def peak_bytes(self) -> int:
        """The high-water mark of resident memory, summed over the process and its children."""
        return sum(_status_kib(pid, "VmHWM") for pid in process_tree(self.process.pid)) * 1024

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise ServiceFailed(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )


Probe = Callable[[Service], Awaitable[bool]]


@asynccontextmanager
async def launch(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    ready: Probe,
    port: int | None = None,
    start_timeout: float = 60.0,
    stop_timeout: float = 30.0,
) -> AsyncIterator[Service]:
    """Start `argv`, wait until `ready` says so, and SIGTERM (then SIGKILL) it on the way out."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdout=output, stderr=asyncio.subprocess.STDOUT
        )
    service = Service(name, process, log, port)
    try:
        await _wait_ready(service, ready, within=start_timeout)
        yield service
    finally:
        await stop(service, grace=stop_timeout)


async def _wait_ready(service: Service, ready: Probe, *, within: float) -> None:
    deadline = time.monotonic() + within
    while not await ready(service):
        service.check_alive()
        if time.monotonic() > deadline:
            raise ServiceFailed(f"{service.name} not ready after {within}s:\n{service.log_tail()}")
        await asyncio.sleep(0.1)


async def stop(service: Service, *, grace: float) -> None:
    """SIGTERM and wait; after `grace` seconds, SIGKILL the whole tree."""
    process = service.process
    if process.returncode is not None:
        return
    tree = process_tree(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await process.wait()


async def run_to_end(
    name: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path
) -> None:
    """Run `argv` until it exits; ServiceFailed, with its log's tail, unless it exits 0."""
    async with launch(name, argv, cwd=cwd, env=env, log=log, ready=_started) as service:
        if await service.process.wait() != 0:
            raise ServiceFailed(
                f"{name} exited with {service.process.returncode}:\n{service.log_tail()}"
            )


async def _started(service: Service) -> bool:
    return True
