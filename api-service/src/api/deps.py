"""What the routes take from the request: the task body.

The hot routes take the `Request` alone and call these directly instead of declaring
FastAPI dependencies: solving dependencies and validating a parsed dict cost more than
the rest of the request (see docs/benchmarks.md). Their collaborators come from the
`Backends` the routes were built with (api.routes).
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from models.tasks import TaskCreate


def require_json_body(request: Request) -> None:
    """415 unless the body is declared as JSON (`application/json` or `application/*+json`)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise HTTPException(415, "Content-Type must be application/json.")


async def task_create_body(request: Request) -> TaskCreate:
    """The body parsed and validated in one pass by pydantic-core; a bad one raises the
    same RequestValidationError (errors located under "body") that FastAPI would."""
    require_json_body(request)
    try:
        return TaskCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None
