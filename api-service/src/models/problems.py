"""RFC 9457 Problem Details: the one shape of every 4xx and 5xx answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "task 0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f does not exist",
                }
            ]
        }
    )

    type: str = Field(
        default="about:blank",
        description="/problems/validation-error, /problems/malformed-json,"
        " /problems/service-unavailable, or about:blank (the status says it all)",
    )
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The path of the request")
    errors: list[FieldError] | None = Field(
        default=None, description="400 validation problems: each bad field and why"
    )
    task_status: str | None = Field(
        default=None, description="409 on retry: the status the task is in"
    )
    checks: dict[str, str] | None = Field(
        default=None, description="503 from /health/ready: each part, ok or what it lacks"
    )
