"""What the numbers were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.plan import ROOT


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":" if ":" in line else "=")
            if name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return "unknown"


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    except OSError:
        return ""
    return (done.stdout or done.stderr).strip()


def commit() -> str:
    sha = _run("git", "rev-parse", "--short", "HEAD") or "unknown"
    # Untracked files (the bench's own venv, a new bench/ itself) do not change what ran.
    changed = _run("git", "status", "--porcelain", "--untracked-files=no")
    return sha + (" with uncommitted changes" if changed else "")


def load_average() -> str:
    """The 1-minute load average: anything else busy on the machine skews the numbers."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def describe(*, mariadb: str, rabbitmq: str, load_before: str) -> list[str]:
    memory_kib = int(_first("/proc/meminfo", "MemTotal").split()[0] or 0)
    wrk = _run("wrk", "--version").splitlines()
    return [
        f"CPU: {os.cpu_count()} cores (nproc), {_first('/proc/cpuinfo', 'model name')}",
        f"Memory: {memory_kib / 1024 / 1024:.1f} GiB",
        f"OS: {_first('/etc/os-release', 'PRETTY_NAME')}, Linux {platform.release()}",
        f"Python {platform.python_version()}, MariaDB {mariadb}, {rabbitmq}",
        f"Load generators: {wrk[0].split(' Copyright')[0] if wrk else 'wrk'} (one thread);"
        " the suite's own paced generator for fixed rates",
        f"Load average (1 min) just before the run: {load_before} (the run itself keeps both"
        " cores busy; other work on the machine skews the numbers)",
    ]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
