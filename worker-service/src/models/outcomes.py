"""What became of one delivery; the consumer turns it into ack, retry or dead-letter."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    COMPLETED = "completed"  # this delivery did the work and committed COMPLETED
    ALREADY_FINAL = (
        "already_final"  # the task was final (COMPLETED, FAILED, CANCELLED): nothing to do
    )
    DUPLICATE = "duplicate"  # another claim holds the task under a live lease
    UNKNOWN_TASK = "unknown_task"  # no such row in the database
    RETRY = "retry"  # the attempt failed and was recorded; try again after a backoff
    FAILED = "failed"  # the last attempt failed; the task is FAILED
    CANCELLED = "cancelled"  # cancelled while its work ran here: the work was stopped
    NO_HANDLER = "no_handler"  # this worker cannot run the task's type: not claimed


@dataclass(frozen=True, slots=True)
class ProcessResult:
    outcome: Outcome
    attempts: int = 0  # attempts made so far, where the outcome depends on it
