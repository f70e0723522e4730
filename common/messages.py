"""The message the API publishes for each task and the worker consumes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from common.errors import InvalidTaskMessage
from common.task_types import DEFAULT_TYPE
from common.tasks import TaskRecord


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """What a worker needs to run the task without reading its row first. A message from
    before task types has no type: it is a `simulated` task."""

    task_id: str
    title: str
    description: str | None
    metadata: dict[str, Any] | None
    type: str = DEFAULT_TYPE
    payload: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    # When it became due (epoch seconds): the worker's queue wait is measured from here.
    # None in messages from before it (their wait is not measured).
    due_at: float | None = None

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskMessage:
        return cls(
            record.task_id,
            record.title,
            record.description,
            record.metadata,
            record.type,
            record.payload,
            record.timeout_seconds,
            _due_at(record),
        )

    def encode(self) -> bytes:
        fields: dict[str, object] = {
            "task_id": self.task_id,
            "title": self.title,
            "description": self.description,
            "metadata": self.metadata,
            "type": self.type,
            "payload": self.payload,
            "timeout_seconds": self.timeout_seconds,
        }
        if self.due_at is not None:
            fields["due_at"] = self.due_at
        return orjson.dumps(fields)


def _due_at(record: TaskRecord) -> float:
    """A scheduled task is due at its run_at; any other since it was stored or re-driven (its
    updated_at while PENDING: the creation time, or the re-drive's)."""
    due = record.updated_at if record.run_at is None else max(record.run_at, record.updated_at)
    return due.timestamp()


def is_task_id(value: object) -> bool:
    """True for the canonical text form of a UUID, the only form the API hands out."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def decode_task_message(body: bytes) -> TaskMessage:
    """Parse a delivery's body; InvalidTaskMessage when it can never be processed."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidTaskMessage("body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidTaskMessage("body is not a JSON object")
    task_id = payload.get("task_id")
    if not is_task_id(task_id):
        raise InvalidTaskMessage("task_id is missing or not a UUID")
    metadata = payload.get("metadata")
    task_type = payload.get("type", DEFAULT_TYPE)
    if not isinstance(task_type, str) or not task_type:
        raise InvalidTaskMessage("type is not a non-empty string")
    task_payload = payload.get("payload")
    if task_payload is not None and not isinstance(task_payload, dict):
        raise InvalidTaskMessage("payload is not a JSON object")
    timeout = payload.get("timeout_seconds")
    if timeout is not None and (type(timeout) is not int or timeout < 1):
        raise InvalidTaskMessage("timeout_seconds is not a positive integer")
    return TaskMessage(
        task_id=str(task_id).lower(),
        title=str(payload.get("title") or ""),
        description=payload.get("description"),
        metadata=metadata if isinstance(metadata, dict) else None,
        type=task_type,
        payload=task_payload,
        timeout_seconds=timeout,
        due_at=_number(payload.get("due_at")),
    )


def _number(value: object) -> float | None:
    # Only for a metric: a value that is not a plain number is left out, never refused.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
