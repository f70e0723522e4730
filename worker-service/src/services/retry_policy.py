"""How many times a task is tried, and how long to wait between tries."""

from __future__ import annotations

import random
from dataclasses import dataclass

from common.settings import Settings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    delays_seconds: tuple[float, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_attempts=settings.max_attempts, delays_seconds=settings.retry_delays_seconds)

    def backoff_seconds(self, attempts_made: int) -> float:
        """Exponential backoff with "equal jitter": half the delay fixed, half random."""
        index = min(max(attempts_made, 1), len(self.delays_seconds)) - 1
        delay = self.delays_seconds[index]
        return random.uniform(delay / 2, delay)
