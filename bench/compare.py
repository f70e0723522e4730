"""`python -m bench.compare BASE [--head REV] [--pairs N]`: the hot-path measurements of commit
REV (default HEAD) against commit BASE, in alternating runs on the same host, each commit
checked out on its own with its own services, bench code and `db/init.sql` (so the working
tree may change while it runs).

A change to a hot path is judged by the medians of such pairs, never by one run: on a shared
host one run can be off by a factor of two. Prints one row per run and the medians, as
Markdown for bench/history.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import machine
from bench.plan import BENCH, ROOT

_COLUMNS = {
    "submit_rps": "submit x1 req/s",
    "submit_p99_ms": "submit p99 ms",
    "paced_p50_ms": "500 req/s p50 ms",
    "paced_p99_ms": "500 req/s p99 ms",
    "e2e_p50_ms": "end-to-end p50 ms",
    "e2e_p99_ms": "end-to-end p99 ms",
    "drain_tps": "drain tasks/s",
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("base", help="the commit to compare against, e.g. origin/main")
    parser.add_argument("--head", default="HEAD", help="the commit to measure (default HEAD)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs (default 3)")
    return parser.parse_args()


def _short(revision: str) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def _checkout(revision: str, into: Path) -> Path:
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(into), revision],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    hotpath = into / "bench" / "hotpath.py"
    if not hotpath.exists():  # older than this tool: the same measurements, its own code
        shutil.copy(BENCH / "hotpath.py", hotpath)
    return into


def _run(checkout: Path) -> dict[str, float]:
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.hotpath"],
        cwd=checkout,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bench.hotpath failed in {checkout} (exit {done.returncode})")
    numbers: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return numbers


def _row(label: str, numbers: dict[str, float], load: str) -> str:
    cells = [f"{numbers[key]:,.1f}".removesuffix(".0") for key in _COLUMNS]
    return f"| {label} | {load} | " + " | ".join(cells) + " |"


def main() -> int:
    arguments = _arguments()
    labels = [_short(arguments.base), _short(arguments.head)]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        checkouts = [_checkout(label, Path(scratch) / label) for label in labels]
        try:
            print("| run | 1-min load before | " + " | ".join(_COLUMNS.values()) + " |")
            print("|---" * (len(_COLUMNS) + 2) + "|")
            for pair in range(arguments.pairs):
                for label, checkout in zip(labels, checkouts, strict=True):
                    load = machine.load_average()
                    numbers = _run(checkout)
                    runs[label].append(numbers)
                    print(_row(f"{label} #{pair + 1}", numbers, load), flush=True)
        finally:
            for checkout in checkouts:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False
                )
    for label, measured in runs.items():
        medians = {key: statistics.median(run[key] for run in measured) for key in _COLUMNS}
        print(_row(f"{label} median", medians, ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
