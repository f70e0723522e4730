"""wrk, the closed-loop load generator: installed if missing, run, and its numbers read."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.plan import BENCH

LUA = BENCH / "lua"
_MARKER = "BENCH_RESULT "


class WrkMissing(RuntimeError):
    pass


def ensure_wrk() -> str:
    """The path of wrk; installs the Debian package when running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkMissing("the benchmark needs wrk: sudo apt-get install wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing("apt-get could not install wrk; install it and run again")
    return found


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # answers received, whatever their status
    non_2xx: int
    socket_errors: int
    timeouts: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rate(self) -> float:
        """2xx answers per second."""
        return self.ok / self.seconds


async def run_wrk(
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    script_args: tuple[str, ...] = (),
) -> WrkResult:
    """One thread (the machine has two cores to share with the services), `connections`
    keep-alive connections, for `seconds`. `ensure_wrk()` must have run."""
    argv = [
        *("wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"),
        *("--timeout", "10s", "-s", str(LUA / script), url),
    ]
    if script_args:
        argv += ["--", *script_args]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(_MARKER)), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text}")
    numbers = json.loads(line.removeprefix(_MARKER))
    return WrkResult(
        requests=numbers["requests"],
        non_2xx=numbers["status_errors"],
        socket_errors=numbers["socket_errors"],
        timeouts=numbers["timeouts"],
        seconds=numbers["duration_us"] / 1e6,
        p50_ms=numbers["p50_us"] / 1000,
        p99_ms=numbers["p99_us"] / 1000,
        max_ms=numbers["max_us"] / 1000,
    )


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n")
    return path
