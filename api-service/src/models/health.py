from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Liveness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class Health(BaseModel):
    """The 200 of /health/ready (and /health): every part is "ok"."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "checks": {"database": "ok", "broker": "ok", "schema": "ok"}}
            ]
        }
    )

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
