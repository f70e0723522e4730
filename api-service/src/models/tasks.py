"""Request and response bodies of the tasks API."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
)

from common.task_types import CATALOGUE, DEFAULT_TYPE, TaskType
from common.tasks import Callback, CallbackState, TaskEvent, TaskRecord, TaskStatus

MAX_DESCRIPTION_BYTES = 64 * 1024
# How far in the past a run_at may be (a clock a little behind, a request a little slow).
RUN_AT_PAST_SECONDS = 60


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# `_not_blank` in the document: at least one character that is not white space as
# str.isspace() has it (spelt out, since a pattern's \s is another set).
NOT_BLANK_PATTERN = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _within_64_kib(value: str) -> str:
    if len(value.encode()) > MAX_DESCRIPTION_BYTES:
        raise ValueError(f"must be at most {MAX_DESCRIPTION_BYTES} bytes of UTF-8")
    return value


def _whole_number(value: object) -> object:
    """60.0 as 60. JSON has one kind of number, and JSON Schema's `integer` is any number
    without a fraction however it is written; a strict int field would refuse 60.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_number(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_number(item) for item in value]
    return value


# MariaDB's JSON refuses a document nested 32 levels deep (MySQL's, 101), and MySQL's an
# object key over 65,535 bytes.
MAX_METADATA_DEPTH = 30
MAX_METADATA_KEY_BYTES = 65_535
# The validation context's key for MAX_METADATA_BYTES (TaskCreate.from_json): a setting, so
# the model is told it rather than reading it.
_MAX_JSON_BYTES = "max_json_bytes"


# `_storable` in the document, as far as a schema can say it. JSON Schema reads numbers by
# value, and 1e20 is the whole number 10**20 to it; but only an integer written as one must fit
# in 64 bits (orjson and MySQL keep it exactly), while a number written as a float is kept as
# the double it is. So the schema names the bound and admits every number; the nesting, key
# and size bounds are left to the words.
STORABLE_JSON_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value. An integer written as one (no fraction, no exponent) must"
    " fit in 64 bits, signed or unsigned; a number written as a float is kept as that double.",
    "anyOf": [
        {"type": ["null", "boolean", "string"]},
        {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1},
        {"type": "number"},
        {"type": "array", "items": {"$ref": "#/components/schemas/StorableJson"}},
        {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/StorableJson"}},
    ],
}


def _shape_problem(value: object, depth: int = 1) -> str | None:
    """Why the database would refuse this JSON value's nesting or keys, if it would."""
    if isinstance(value, dict):
        if any(len(key.encode()) > MAX_METADATA_KEY_BYTES for key in value):
            return f"must have object keys of at most {MAX_METADATA_KEY_BYTES:,} bytes of UTF-8"
        children: Iterable[object] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return None
    if depth > MAX_METADATA_DEPTH:
        return f"must be nested at most {MAX_METADATA_DEPTH} levels deep"
    return next(filter(None, (_shape_problem(child, depth + 1) for child in children)), None)


def _storable(value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
    """Refuses what MySQL or MariaDB would not store: integers beyond 64 bits and (by overflow,
    as 1e400) infinity, which do not survive a round trip through orjson; nesting too deep;
    keys too long. And, when the validation context gives MAX_METADATA_BYTES, compact JSON
    longer than that (measured on the dump the round trip needs anyway)."""
    if value is None:
        return None
    try:
        dumped: bytes | None = orjson.dumps(value)
    except orjson.JSONEncodeError:
        dumped = None
    limit = info.context.get(_MAX_JSON_BYTES) if info.context else None
    if dumped is not None and limit is not None and len(dumped) > limit:
        raise ValueError(f"must be at most MAX_METADATA_BYTES ({limit:,}) bytes as compact JSON")
    if dumped is None or orjson.loads(dumped) != value:
        raise ValueError("must hold only integers within 64 bits and finite numbers")
    problem = _shape_problem(value)
    if problem:
        raise ValueError(problem)
    return value


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: object) -> object:
    # A string only: pydantic would also take a number as a Unix time, which the documented
    # `format: date-time` is not.
    if not isinstance(value, datetime) and not (isinstance(value, str) and _RFC3339.match(value)):
        raise ValueError("must be an RFC 3339 date-time with an offset, as 2026-12-01T10:00:00Z")
    return value


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


def _utc_bound(value: datetime) -> datetime:
    """A filter's bound in UTC. RFC 3339 has times whose UTC is outside years 1-9999
    (0001-01-01T00:00:00+00:14): nothing is created beyond them, so they become the
    earliest or the latest time there is."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if value.year == 1 else datetime.max
        return edge.replace(tzinfo=UTC)


Rfc3339Bound = Annotated[Rfc3339, AfterValidator(_utc_bound)]


# ISO 8601 with an explicit offset ("+00:00"), not pydantic's "Z".
IsoDatetime = Annotated[datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str)]

TASK_EXAMPLE: dict[str, Any] = {
    "title": "Resize images",
    "description": "Make thumbnails for album 42",
    "metadata": {"album_id": 42, "sizes": [128, 512]},
}


def _known_type(value: str) -> str:
    if value not in CATALOGUE:
        raise ValueError(f"must be one of {', '.join(sorted(CATALOGUE))} (GET /api/task-types)")
    return value


TYPED_TASK_EXAMPLE: dict[str, Any] = {
    "title": "Fingerprint album 42",
    "description": "A hash chain over the album's id",
    "type": "hash_chain",
    "payload": {"rounds": 2_000_000, "seed": "album-42"},
    "timeout_seconds": 60,
}


SCHEDULED_TASK_EXAMPLE: dict[str, Any] = {
    "title": "Weekly report",
    "description": "Build the report in an hour, and call back when it is done",
    "delay_seconds": 3600,
    "callback_url": "https://hooks.example.com/tasks",
}


class TaskCreate(BaseModel):
    """The body of `POST /api/tasks`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [TASK_EXAMPLE, TYPED_TASK_EXAMPLE, SCHEDULED_TASK_EXAMPLE]},
    )

    title: Annotated[
        StrictStr,
        Field(min_length=1, max_length=255, json_schema_extra={"pattern": NOT_BLANK_PATTERN}),
        AfterValidator(_not_blank),
    ]
    description: Annotated[
        StrictStr,
        AfterValidator(_not_blank),
        AfterValidator(_within_64_kib),
        Field(
            description="At most 64 KiB of UTF-8: 65,536 characters of ASCII, fewer of others.",
            # What the byte bound implies for characters (the document cannot count bytes).
            json_schema_extra={
                "minLength": 1,
                "maxLength": MAX_DESCRIPTION_BYTES,
                "pattern": NOT_BLANK_PATTERN,
            },
        ),
    ]
    metadata: Annotated[
        dict[str, Any] | None,
        AfterValidator(_storable),
        Field(
            description=(
                "Any JSON object, at most MAX_METADATA_BYTES (16 KiB by default) as compact"
                " JSON: its integers must fit in 64 bits, its numbers be finite, its nesting at"
                f" most {MAX_METADATA_DEPTH} levels deep, its keys at most"
                f" {MAX_METADATA_KEY_BYTES:,} bytes."
            )
        ),
    ] = None
    type: Annotated[
        StrictStr,
        AfterValidator(_known_type),
        Field(
            description="What the task runs: a name from `GET /api/task-types`.",
            json_schema_extra={"enum": sorted(CATALOGUE)},
        ),
    ] = DEFAULT_TYPE
    payload: Annotated[
        dict[str, Any] | None,
        AfterValidator(_storable),
        Field(
            description="The type's input, valid for its `payload_schema`; bounded as"
            " `metadata` is (MAX_METADATA_BYTES, nesting, keys, numbers)."
        ),
    ] = None
    timeout_seconds: Annotated[
        Annotated[StrictInt, Field(ge=1), BeforeValidator(_whole_number)] | None,
        Field(
            description="How long one attempt may run, up to the type's `max_timeout_seconds`;"
            " the type's `default_timeout_seconds` when left out.",
        ),
    ] = None

    run_at: Annotated[
        Rfc3339 | None,
        Field(
            description="Start no earlier than this (RFC 3339 with an offset): at most 60 s in"
            " the past and at most MAX_DELAY_SECONDS ahead. Not with `delay_seconds`."
        ),
    ] = None
    delay_seconds: Annotated[
        float | None,
        Field(
            strict=True,  # a number: not `true`, which lax mode reads as 1.0
            ge=0,
            allow_inf_nan=False,
            description="Start no earlier than this many seconds from now (0 to"
            " MAX_DELAY_SECONDS, 30 days by default). Not with `run_at`.",
        ),
    ] = None
    callback_url: Annotated[
        StrictStr | None,
        Field(
            min_length=1,
            max_length=2048,
            description="An http(s) URL that gets the task (as GET shows it) in a signed POST"
            " (Standard Webhooks) once it is COMPLETED, FAILED or CANCELLED. Its host must"
            " resolve to public addresses, or be listed in WEBHOOK_ALLOWED_HOSTS.",
        ),
    ] = None

    @classmethod
    def from_json(cls, raw: bytes, *, max_json_bytes: int) -> TaskCreate:
        """The body validated in one pass, `metadata` and `payload` each at most
        `max_json_bytes` bytes of compact JSON (MAX_METADATA_BYTES)."""
        return cls.model_validate_json(raw, context={_MAX_JSON_BYTES: max_json_bytes})

    def schedule_errors(
        self, now: datetime, max_delay_seconds: int
    ) -> tuple[datetime | None, list[dict[str, Any]]]:
        """When the task may start (None: at once) from `run_at` or `delay_seconds`, and
        their errors, located as field errors are."""
        limit = f"at most MAX_DELAY_SECONDS ({max_delay_seconds:,} s)"
        if self.run_at is not None and self.delay_seconds is not None:
            return None, [_error("run_at", "give run_at or delay_seconds, not both", self.run_at)]
        if self.delay_seconds is not None:
            if self.delay_seconds > max_delay_seconds:
                return None, [_error("delay_seconds", f"must be {limit}", self.delay_seconds)]
            return now + timedelta(seconds=self.delay_seconds), []
        if self.run_at is None:
            return None, []
        if self.run_at < now - timedelta(seconds=RUN_AT_PAST_SECONDS):
            message = f"must not be more than {RUN_AT_PAST_SECONDS} s in the past"
            return None, [_error("run_at", message, self.run_at.isoformat())]
        if self.run_at > now + timedelta(seconds=max_delay_seconds):
            return None, [_error("run_at", f"must be {limit} ahead", self.run_at.isoformat())]
        return self.run_at.astimezone(UTC), []

    def type_errors(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The payload as the type's model made it, defaults filled in (None when that is
        empty, as for `simulated`), and the errors of `payload` and `timeout_seconds` against the
        type, located as field errors are."""
        task_type = CATALOGUE[self.type]
        errors: list[dict[str, Any]] = []
        payload = None
        try:
            validated = task_type.payload.model_validate(_whole_number(self.payload or {}))
        except ValidationError as exc:
            errors += [
                {**error, "loc": ("payload", *error["loc"])}
                for error in exc.errors(include_url=False)
            ]
        else:
            payload = validated.model_dump(mode="json") or None
        if (
            self.timeout_seconds is not None
            and self.timeout_seconds > task_type.max_timeout_seconds
        ):
            errors.append(
                {
                    "loc": ("timeout_seconds",),
                    "msg": f"must be at most {task_type.max_timeout_seconds} for {self.type}",
                    "type": "less_than_equal",
                    "input": self.timeout_seconds,
                }
            )
        return payload, errors


def _error(field: str, message: str, value: object) -> dict[str, Any]:
    return {"loc": (field,), "msg": message, "type": "value_error", "input": value}


class TaskAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": "0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",
                    "status": "PENDING",
                    "message": "Task accepted; poll /api/tasks/0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",
                }
            ]
        }
    )

    task_id: str
    status: TaskStatus
    message: str


TASK_PUBLIC_EXAMPLE: dict[str, Any] = {
    "task_id": "0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",
    **TASK_EXAMPLE,
    "type": "simulated",
    "payload": None,
    "timeout_seconds": None,
    "status": "COMPLETED",
    "attempts": 1,
    "last_error": None,
    "result": None,
    "progress": 1.0,
    "progress_note": None,
    "created_at": "2026-11-28T01:20:52.947463+00:00",
    "updated_at": "2026-11-28T01:21:00.112358+00:00",
    "started_at": "2026-11-28T01:20:52.951210+00:00",
    "completed_at": "2026-11-28T01:21:00.112358+00:00",
    "run_at": None,
    "callback": {
        "url": "https://hooks.example.com/tasks",
        "state": "delivered",
        "attempts": 1,
        "last_status_code": 204,
        "last_error": None,
    },
    "events_url": "/api/tasks/0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f/events",
}


class CallbackPublic(BaseModel):
    """The task's completion webhook and how its latest delivery went."""

    url: str
    state: CallbackState = Field(
        description="pending (the task is not final, or its delivery is still being tried),"
        " delivered (the receiver answered 2xx) or failed (refused with a 4xx, or every"
        " attempt failed)."
    )
    attempts: int = Field(description="Attempts made to deliver it.")
    last_status_code: int | None = Field(description="The receiver's last HTTP status.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")


def _callback_dict(callback: Callback | None) -> dict[str, Any] | None:
    if callback is None:
        return None
    return {
        "url": callback.url,
        "state": callback.state,
        "attempts": callback.attempts,
        "last_status_code": callback.last_status_code,
        "last_error": callback.last_error,
    }


class TaskPublic(BaseModel):
    """A task as `GET /api/tasks/{task_id}` returns it."""

    model_config = ConfigDict(json_schema_extra={"examples": [TASK_PUBLIC_EXAMPLE]})

    task_id: str
    title: str
    description: str | None
    type: str = Field(description="What it runs: a name from `GET /api/task-types`.")
    payload: dict[str, Any] | None = Field(
        description="Its input, as the type's model made it (defaults filled in)."
    )
    timeout_seconds: int | None = Field(
        description="How long one attempt may run; null: the type's default."
    )
    status: TaskStatus
    metadata: dict[str, Any] | None
    attempts: int = Field(description="Attempts made so far: each claim by a worker is one.")
    last_error: str | None
    result: Any = Field(description="What the handler returned (any JSON), once COMPLETED.")
    progress: float | None = Field(
        description="How far the running attempt is (0.0-1.0), as its handler last said;"
        " 1.0 once COMPLETED."
    )
    progress_note: str | None
    created_at: IsoDatetime
    updated_at: IsoDatetime
    started_at: IsoDatetime | None = Field(description="When a worker first claimed the task.")
    completed_at: IsoDatetime | None
    run_at: IsoDatetime | None = Field(
        description="A scheduled task: when it may start (it is not queued before)."
    )
    callback: CallbackPublic | None = Field(description="Its completion webhook, if it has one.")
    events_url: str = Field(description="Its live status as Server-Sent Events.")

    @staticmethod
    def dict_of(record: TaskRecord) -> dict[str, Any]:
        return {
            "task_id": record.task_id,
            "title": record.title,
            "description": record.description,
            "type": record.type,
            "payload": record.payload,
            "timeout_seconds": record.timeout_seconds,
            "status": record.status,
            "metadata": record.metadata,
            "attempts": record.attempts,
            "last_error": record.last_error,
            "result": record.result,
            "progress": record.progress,
            "progress_note": record.progress_note,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "started_at": record.started_at,
            "completed_at": record.completed_at,
            "run_at": record.run_at,
            "callback": _callback_dict(record.callback),
            "events_url": f"/api/tasks/{record.task_id}/events",
        }

    @staticmethod
    def json_of(record: TaskRecord) -> bytes:
        """This model's JSON for a record, by orjson straight from the record: the same
        document as validating and dumping the model (a unit test holds them equal), at a
        fraction of the cost on the busiest read."""
        return orjson.dumps(TaskPublic.dict_of(record))


class TaskPage(BaseModel):
    """One page of `GET /api/tasks`, newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [TASK_PUBLIC_EXAMPLE],
                    "next_cursor": "AQAGYUv823oHC59aPC9OTQqda48fLD1OX4wUCHYt9Ruv",
                }
            ]
        }
    )

    items: list[TaskPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class TaskStats(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "counts": {
                        "PENDING": 3,
                        "PROCESSING": 16,
                        "COMPLETED": 1204,
                        "FAILED": 2,
                        "CANCELLED": 5,
                    },
                    "total": 1230,
                }
            ]
        }
    )

    counts: dict[TaskStatus, int] = Field(description="Every status, 0 included.")
    total: int


# task_events.id is a BIGINT UNSIGNED: the largest event id there can be.
MAX_EVENT_ID = 2**64 - 1


class TaskEventPublic(BaseModel):
    """The `data:` of one Server-Sent Event of `GET /api/tasks/{task_id}/events`; its `id:`
    is `event_id`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": 4711,
                    "task_id": "0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",
                    "kind": "completed",
                    "status": "COMPLETED",
                    "attempts": 1,
                    "error": None,
                    "progress": 1.0,
                    "note": None,
                    "updated_at": "2026-11-28T01:21:00.112358+00:00",
                }
            ]
        }
    )

    event_id: int
    task_id: str
    kind: str = Field(
        description="created, started, progress, retry_scheduled, completed, failed, cancelled"
        " or redriven"
    )
    status: TaskStatus
    attempts: int
    error: str | None
    progress: float | None = Field(description="The task's progress just after the event.")
    note: str | None = Field(description="Its progress note.")
    updated_at: IsoDatetime

    @staticmethod
    def json_of(event: TaskEvent) -> bytes:
        return orjson.dumps(
            {
                "event_id": event.event_id,
                "task_id": event.task_id,
                "kind": event.kind,
                "status": event.status,
                "attempts": event.attempts,
                "error": event.error,
                "progress": event.progress,
                "note": event.note,
                "updated_at": event.created_at,
            }
        )


class TaskListQuery(BaseModel):
    """The query of `GET /api/tasks`."""

    model_config = ConfigDict(extra="ignore")

    status: list[TaskStatus] = Field(default_factory=list)
    type: Annotated[str, AfterValidator(_known_type)] | None = None
    created_after: Rfc3339Bound | None = None
    created_before: Rfc3339Bound | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class TaskTypePublic(BaseModel):
    """One entry of `GET /api/task-types`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "hash_chain",
                    "description": "SHA-256 applied `rounds` times, in a pool process.",
                    "payload_schema": {
                        "additionalProperties": False,
                        "properties": {
                            "rounds": {"maximum": 500000000, "minimum": 1, "type": "integer"},
                            "seed": {"default": "", "maxLength": 256, "type": "string"},
                        },
                        "required": ["rounds"],
                        "title": "hash_chain",
                        "type": "object",
                    },
                    "default_timeout_seconds": 120,
                    "max_timeout_seconds": 3600,
                    "max_attempts": 3,
                    "cpu_bound": True,
                }
            ]
        }
    )

    name: str
    description: str
    payload_schema: dict[str, Any] = Field(description="JSON Schema of the type's `payload`.")
    default_timeout_seconds: int
    max_timeout_seconds: int
    max_attempts: int
    cpu_bound: bool


class TaskTypeList(BaseModel):
    items: list[TaskTypePublic]


def type_entry(task_type: TaskType, default_max_attempts: int) -> dict[str, Any]:
    """TaskTypePublic's document for one catalogue entry."""
    return {
        "name": task_type.name,
        "description": task_type.description,
        "payload_schema": task_type.payload_schema(),
        "default_timeout_seconds": task_type.default_timeout_seconds,
        "max_timeout_seconds": task_type.max_timeout_seconds,
        "max_attempts": task_type.attempts_allowed(default_max_attempts),
        "cpu_bound": task_type.cpu_bound,
    }
