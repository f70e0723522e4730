"""The message the API publishes for each task and the worker consumes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from common.errors import InvalidTaskMessage
from common.tasks import TaskRecord


@dataclass(frozen=True, slots=True)
class TaskMessage:
    task_id: str
    title: str
    description: str | None
    metadata: dict[str, Any] | None

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskMessage:
        return cls(record.task_id, record.title, record.description, record.metadata)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "task_id": self.task_id,
                "title": self.title,
                "description": self.description,
                "metadata": self.metadata,
            }
        )


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
    return TaskMessage(
        task_id=str(task_id).lower(),
        title=str(payload.get("title") or ""),
        description=payload.get("description"),
        metadata=metadata if isinstance(metadata, dict) else None,
    )
