"""The catalogue of task types: what each one accepts and how long and how often it may run.

Both services read it: the API validates a submitted `payload` against its type's model and
lists the catalogue at `GET /api/task-types`; the worker runs each type with the handler of the
same name (`worker-service/src/handlers/<name>.py`). Adding a type is an entry here and that
module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

DEFAULT_TYPE = "simulated"


# Each model's docstring is its JSON Schema's description (GET /api/task-types): one line.


class SimulatedPayload(BaseModel):
    """A random pause of PROCESSING_DELAY_MIN/MAX_SECONDS; fails at PROCESSING_FAILURE_RATE."""

    model_config = ConfigDict(extra="forbid", title="simulated")


class ChecksumPayload(BaseModel):
    """SHA-256 of `size_bytes` generated from `seed`, read in chunks of `chunk_bytes`."""

    # I/O-shaped work: each chunk is handed over as a read would be.

    model_config = ConfigDict(
        extra="forbid",
        title="checksum",
        json_schema_extra={"examples": [{"size_bytes": 67_108_864, "chunk_bytes": 1_048_576}]},
    )

    size_bytes: Annotated[StrictInt, Field(ge=0, le=1 << 30)] = 64 << 20
    chunk_bytes: Annotated[StrictInt, Field(ge=4096, le=8 << 20)] = 1 << 20
    seed: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] = 0


class HashChainPayload(BaseModel):
    """SHA-256 applied `rounds` times to `seed`, in a pool process (CPU-bound)."""

    # Run in a pool process, so that it never blocks the worker's event loop.

    model_config = ConfigDict(
        extra="forbid",
        title="hash_chain",
        json_schema_extra={"examples": [{"rounds": 2_000_000, "seed": "album-42"}]},
    )

    rounds: Annotated[StrictInt, Field(ge=1, le=500_000_000)]
    seed: Annotated[StrictStr, Field(max_length=256)] = ""


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    description: str
    payload: type[BaseModel]
    default_timeout_seconds: int
    max_timeout_seconds: int
    max_attempts: int | None  # None: the MAX_ATTEMPTS setting
    cpu_bound: bool = False

    def attempts_allowed(self, default: int) -> int:
        return self.max_attempts if self.max_attempts is not None else default

    def timeout_for(self, requested: int | None) -> int:
        """The requested timeout, within the type's maximum (a message that did not come
        through the API may ask for more); the default when none was asked for."""
        if requested is None:
            return self.default_timeout_seconds
        return min(requested, self.max_timeout_seconds)

    def payload_schema(self) -> dict[str, Any]:
        return self.payload.model_json_schema()


CATALOGUE: Mapping[str, TaskType] = {
    task_type.name: task_type
    for task_type in (
        TaskType(
            name="simulated",
            description="The spec's simulated work: a random pause, failing at a set rate.",
            payload=SimulatedPayload,
            default_timeout_seconds=60,
            max_timeout_seconds=600,
            max_attempts=None,
        ),
        TaskType(
            name="checksum",
            description="SHA-256 of a generated stream, read in chunks.",
            payload=ChecksumPayload,
            default_timeout_seconds=60,
            max_timeout_seconds=900,
            max_attempts=3,
        ),
        TaskType(
            name="hash_chain",
            description="SHA-256 applied `rounds` times, in a pool process.",
            payload=HashChainPayload,
            default_timeout_seconds=120,
            max_timeout_seconds=3600,
            max_attempts=3,
            cpu_bound=True,
        ),
    )
}
