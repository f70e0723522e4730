"""How many times a task is tried, and how long to wait between tries."""

from __future__ import annotations

import random
from dataclasses import dataclass

from common.settings import Settings
from common.topology import Topology


@dataclass(frozen=True, slots=True)
class Backoff:
    tier_ms: int  # the retry queue the message waits in
    expiration_seconds: float  # its own TTL inside that tier: the jitter


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    delays_seconds: tuple[float, ...]
    topology: Topology

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            delays_seconds=settings.retry_delays_seconds,
            topology=Topology.from_settings(settings),
        )

    def backoff(self, attempts_made: int) -> Backoff:
        """Exponential backoff with "equal jitter": half the delay fixed, half random."""
        index = min(max(attempts_made, 1), len(self.delays_seconds)) - 1
        tier_ms = self.topology.retry_tier(self.delays_seconds[index])
        tier = tier_ms / 1000
        return Backoff(tier_ms=tier_ms, expiration_seconds=random.uniform(tier / 2, tier))
