"""`python -m bench.chain_loop ROUNDS SEEDS_FILE OUT_FILE`, run in worker-service/src: the
baseline of the `hash_chain` measurement (bench.cpu_bound).

The worker's own `chain(rounds, seed)` for each seed in the file, in a plain loop in this one
process. Writes `{"seconds": ..., "digests": [...]}` to OUT_FILE: the loop's time (the
imports left out) and each seed's digest, in the file's order.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# worker-service/src is on the path here (the working directory), not on mypy's.
from handlers.hash_chain import chain  # type: ignore[import-not-found]


def main() -> None:
    rounds, seeds_file, out_file = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    seeds = seeds_file.read_text().split()
    started = time.perf_counter()
    digests = [chain(rounds, seed) for seed in seeds]
    seconds = time.perf_counter() - started
    out_file.write_text(json.dumps({"seconds": seconds, "digests": digests}))


if __name__ == "__main__":
    main()
