"""`python peer_enqueue.py IDS_FILE`: `process_task.delay(id)` for each id in the file.

The drain measurement queues its tasks with this before it starts the Celery worker.
"""

# mypy: ignore-errors
# (celery lives in bench/.venv-celery, not in the repository's .venv)

from __future__ import annotations

import sys
from pathlib import Path

from peer_tasks import app, process_task


def main() -> None:
    ids = Path(sys.argv[1]).read_text().split()
    with app.producer_or_acquire() as producer:
        for task_id in ids:
            process_task.apply_async((task_id,), producer=producer)


if __name__ == "__main__":
    main()
