"""`python peer_enqueue.py IDS_FILE`, run in a peer's directory: the peer's
`enqueue_all(ids)` for the ids in the file.

The drain measurement queues a peer's tasks with this before it starts the peer's worker.
"""

# mypy: ignore-errors
# (the queue libraries live in the peers' venvs, not in the repository's .venv)

from __future__ import annotations

import sys
from pathlib import Path

from peer_tasks import enqueue_all


def main() -> None:
    enqueue_all(Path(sys.argv[1]).read_text().split())


if __name__ == "__main__":
    main()
