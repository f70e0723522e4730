"""`python -m chaos [--tasks N] [--short] [--write-docs]`: run, print the table, exit 1 on a
lost, stuck or twice-completed task, a 500, or an answer later than its timeouts allow."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from chaos.plan import ChaosPlan
from chaos.run import run_chaos
from common.logs import configure_logging

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def main() -> None:
    parser = argparse.ArgumentParser(description="fault-injection run of the task service")
    parser.add_argument("--tasks", type=int, default=None, help="tasks to submit")
    parser.add_argument("--short", action="store_true", help="the quick version (N=200)")
    parser.add_argument("--write-docs", action="store_true", help=f"put the table in {DOC.name}")
    args = parser.parse_args()
    configure_logging(service="chaos", level="INFO", fmt="text")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    plan = ChaosPlan.short() if args.short else ChaosPlan.full()
    if args.tasks:
        plan = ChaosPlan.short(args.tasks) if args.short else ChaosPlan.full(args.tasks)
    logs = Path(tempfile.mkdtemp(prefix="chaos-"))
    verdict = asyncio.run(run_chaos(plan, logs))
    table = verdict.table()
    problems = "".join(f"  {problem}\n" for problem in verdict.problems())
    outcome = "PASS" if verdict.ok else f"FAIL\n{problems}"
    sys.stdout.write(f"{table}\n\nlogs: {logs}\n{outcome}\n")
    if args.write_docs:
        _write_docs(plan, table)
    sys.exit(0 if verdict.ok else 1)


def _write_docs(plan: ChaosPlan, table: str) -> None:
    text = DOC.read_text()
    start, end = "<!-- chaos-table:start -->", "<!-- chaos-table:end -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{start}\nRun of {stamp}, N={plan.tasks}:\n\n{table}\n{end}"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    DOC.write_text(before + block + after)


if __name__ == "__main__":
    main()
