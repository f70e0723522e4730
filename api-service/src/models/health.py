from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ok", "checks": {"database": "ok", "broker": "ok"}}]
        }
    )

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
