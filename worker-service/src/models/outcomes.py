"""What became of one delivery; the consumer turns it into ack, requeue or reject."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    COMPLETED = "completed"  # this delivery did the work and committed COMPLETED
    ALREADY_FINAL = "already_final"  # the task was COMPLETED or FAILED before: nothing to do
    DUPLICATE = "duplicate"  # another worker holds a live claim on the task
    UNKNOWN_TASK = "unknown_task"  # no such row in the database
