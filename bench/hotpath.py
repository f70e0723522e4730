"""`python -m bench.hotpath`: only the hot-path measurements (submit x1 under wrk and at the
fixed rate, end-to-end, drain), printed as one JSON line.

For comparing two commits side by side: `python -m bench.compare BASE` runs this in each
checkout in turn. It uses only functions the suite has had since issue 5, so a copy of this
file also runs in an older checkout's bench.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import uvloop

from bench.drain import drain_ours
from bench.end_to_end import measure_end_to_end
from bench.environment import bench_environment
from bench.plan import FULL
from bench.submit import measure_submit, targets
from bench.wrk import ensure_wrk


async def _measure() -> dict[str, float | bool]:
    plan = FULL
    async with bench_environment() as bench:
        api1 = next(target for target in targets(bench) if target.key == "api1")
        submit, submit_checks = await measure_submit(bench, plan, api1)
        end_to_end, end_to_end_checks = await measure_end_to_end(bench, plan)
        drain, drain_check = await drain_ours(bench, plan)
    checks = [*submit_checks, *end_to_end_checks, drain_check]
    return {
        "submit_rps": round(submit.closed.rate),
        "submit_p99_ms": round(submit.closed.p99_ms, 1),
        "paced_p50_ms": round(submit.paced.p50_ms, 1),
        "paced_p99_ms": round(submit.paced.p99_ms, 1),
        "e2e_p50_ms": round(end_to_end.overhead_p50_ms, 1),
        "e2e_p99_ms": round(end_to_end.overhead_p99_ms, 1),
        "drain_tps": round(drain.rate),
        "honest": all(check.ok for check in checks),
    }


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ensure_wrk()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        numbers = runner.run(_measure())
    sys.stdout.write(json.dumps(numbers) + "\n")
    return 0 if numbers["honest"] else 1


if __name__ == "__main__":
    sys.exit(main())
