"""What the run left behind, read from MySQL and from the workers' JSON logs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LogTally:
    completions: Counter[str] = field(default_factory=Counter)  # committed COMPLETED, per task
    claims: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    dead_lettered: int = 0
    deferred: int = 0  # API: accepted while the publish could not be confirmed
    dispatched_late: int = 0  # API: published by the outbox dispatcher
    postponed: int = 0  # worker: a message that found another claim's live lease

    @classmethod
    def read(cls, logs: Iterable[Path]) -> LogTally:
        tally = cls()
        for log in logs:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    tally._count(json.loads(line))
        return tally

    def _count(self, entry: dict[str, Any]) -> None:
        event, task_id = entry.get("event"), entry.get("task_id")
        if event == "task completed" and task_id:
            self.completions[task_id] += 1
        elif event == "task claimed" and task_id:
            self.claims[task_id] += 1
        elif event == "task retry scheduled":
            self.retries += 1
        elif event in ("message dead-lettered", "task failed"):
            self.dead_lettered += 1
        elif event == "duplicate postponed":
            self.postponed += 1
        elif event == "task publish deferred":
            self.deferred += 1
        elif event == "task published" and entry.get("by") == "dispatcher":
            self.dispatched_late += 1


@dataclass
class Verdict:
    accepted: int
    orphans: int
    rows: int
    completed: int
    failed: int
    lost: int  # accepted (202 or committed orphan) with no row at all
    stuck: int  # a row that never reached COMPLETED or FAILED
    duplicate_completions: int
    unexplained_failures: int  # FAILED without the simulated failure on every attempt
    redeliveries: int
    retries: int
    dead_lettered: int
    drain_seconds: float
    worker_kills: int
    client_refusals: int
    publishes_deferred: int
    published_by_dispatcher: int
    duplicates_postponed: int
    answers: Counter[str]  # "POST 202": how many, ...
    late_answers: int
    hung_requests: int
    faults: int
    submitted: int
    answer_bound: float  # seconds: both timeouts and a margin

    @property
    def answers_500(self) -> int:
        return sum(n for key, n in self.answers.items() if key.endswith(" 500"))

    def problems(self) -> list[str]:
        """What went wrong; empty when the run kept every promise."""
        checks = {
            "lost": self.lost,
            "stuck": self.stuck,
            "duplicate completions": self.duplicate_completions,
            "FAILED without cause": self.unexplained_failures,
            "answers 500": self.answers_500,
            "answers later than the bound": self.late_answers,
            "requests with no answer": self.hung_requests,
        }
        found = [f"{name}: {count}" for name, count in checks.items() if count]
        if self.accepted != self.submitted:
            found.append(f"accepted {self.accepted} of {self.submitted}")
        if self.completed + self.failed != self.rows:
            found.append("rows neither COMPLETED nor FAILED")
        if not (self.worker_kills and self.retries and self.faults):
            found.append("the run did not exercise kills, retries and faults")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def table(self) -> str:
        answered = ", ".join(f"{key}: {n}" for key, n in sorted(self.answers.items()))
        rows = [
            ("accepted (202)", self.accepted),
            ("orphans (committed, never published)", self.orphans),
            ("rows in MySQL", self.rows),
            ("completed", self.completed),
            ("failed (MAX_ATTEMPTS simulated failures)", self.failed),
            ("lost", self.lost),
            ("stuck (not final)", self.stuck),
            ("duplicate completions", self.duplicate_completions),
            ("FAILED without cause", self.unexplained_failures),
            ("redeliveries (claims beyond attempts)", self.redeliveries),
            ("retries scheduled", self.retries),
            ("dead-lettered", self.dead_lettered),
            ("worker SIGKILLs", self.worker_kills),
            ("client retries (503 or API down)", self.client_refusals),
            ("faults (every shape, both backends)", self.faults),
            ("answers (request and status)", answered),
            ("answers 500", self.answers_500),
            (f"answers later than {self.answer_bound:g} s", self.late_answers),
            ("requests with no answer in 30 s", self.hung_requests),
            ("202s whose publish was deferred", self.publishes_deferred),
            ("published by the outbox dispatcher", self.published_by_dispatcher),
            ("duplicates postponed past a live lease", self.duplicates_postponed),
            ("time to drain (s)", f"{self.drain_seconds:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
        return "\n".join(lines)
