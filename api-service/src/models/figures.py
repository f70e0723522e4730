"""Bodies of the dashboard's reads: a tenant's throughput by minute, and the system's queue."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.tasks import MinuteThroughput
from models.tasks import IsoDatetime

MAX_THROUGHPUT_MINUTES = 24 * 60  # as long as task_throughput keeps its minutes


class ThroughputQuery(BaseModel):
    """The query of `GET /api/tasks/throughput`."""

    model_config = ConfigDict(extra="ignore")

    minutes: int = Field(default=60, ge=1, le=MAX_THROUGHPUT_MINUTES)


class MinutePublic(BaseModel):
    minute: IsoDatetime = Field(description="The minute's start, in UTC.")
    submitted: int = Field(description="Tasks submitted in it.")
    completed: int = Field(description="Tasks that became COMPLETED in it.")


class ThroughputPublic(BaseModel):
    """The answer of `GET /api/tasks/throughput`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "minutes": [
                        {"minute": "2026-12-01T14:18:00+00:00", "submitted": 0, "completed": 0},
                        {"minute": "2026-12-01T14:19:00+00:00", "submitted": 12, "completed": 9},
                        {"minute": "2026-12-01T14:20:00+00:00", "submitted": 8, "completed": 3},
                    ]
                }
            ]
        }
    )

    minutes: list[MinutePublic] = Field(
        description="One entry per minute, oldest first, 0 included; the current (unfinished)"
        " minute last."
    )

    @staticmethod
    def dict_of(minutes: list[MinuteThroughput]) -> dict[str, Any]:
        return {
            "minutes": [
                {"minute": m.minute.isoformat(), "submitted": m.submitted, "completed": m.completed}
                for m in minutes
            ]
        }


class QueuePublic(BaseModel):
    """The answer of `GET /api/queue`: the whole system's, not one tenant's."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "outbox_backlog": 0,
                    "queue_ready": 37,
                    "measured_at": "2026-12-01T14:20:19.532113+00:00",
                }
            ]
        }
    )

    outbox_backlog: int | None = Field(
        description="Due tasks whose message the broker has not confirmed yet (the outbox);"
        " null before the first measure or when the last one failed."
    )
    queue_ready: int | None = Field(
        description="Messages ready on the work queue; null before the first measure or when"
        " the last one failed (the broker did not answer)."
    )
    measured_at: IsoDatetime | None = Field(
        description="When the figures were measured (every DISPATCH_INTERVAL_SECONDS); null"
        " before the first measure."
    )
