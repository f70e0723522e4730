"""RFC 9457 Problem Details: the one shape of every 4xx and 5xx answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None
