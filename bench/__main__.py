"""`python -m bench [--smoke]`: run the suite, print the table, and (full run) write
docs/benchmarks.md. Exits 1 when a measurement yields no number or an honesty check fails;
a missed target fails the run only with --strict."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

import uvloop

from bench import machine
from bench.docs import write_doc
from bench.peer_env import ensure_peer_venvs
from bench.plan import FULL, SMOKE
from bench.report import build_rows, markdown_table, missing_numbers
from bench.suite import run_suite
from bench.wrk import ensure_wrk

logger = logging.getLogger("bench")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds per measurement; no doc"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    return parser.parse_args()


def main() -> int:
    arguments = _arguments()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plan = SMOKE if arguments.smoke else FULL
    started, load_before = time.monotonic(), machine.load_average()
    ensure_wrk()
    ensure_peer_venvs()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results, versions = runner.run(run_suite(plan))
    rows = build_rows(plan, results)
    table = markdown_table(rows)
    sys.stdout.write(table + "\n")
    minutes = (time.monotonic() - started) / 60
    logger.info("%s run took %.1f minutes", plan.name, minutes)
    if plan is FULL and not arguments.no_doc:
        path = write_doc(
            plan=plan,
            table=table,
            checks=results.checks,
            machine=machine.describe(**versions, load_before=load_before),
            when=machine.now(),
            commit=machine.commit(),
            minutes=minutes,
        )
        logger.info("wrote %s", path)
    failures = [f"no number for {name}" for name in missing_numbers(rows)]
    failures += [f"honesty: {check.line()}" for check in results.checks if not check.ok]
    if arguments.strict:
        failures += [f"target missed: {row.measurement}" for row in rows if row.passed is False]
    for failure in failures:
        logger.error("%s", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
