"""Dependencies of the routes, as `Annotated` aliases. Tests replace the getters through
`app.dependency_overrides`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from common.tasks import TaskRepository
from services.ports import TaskPublisher


async def get_repository(request: Request) -> TaskRepository:
    repository: TaskRepository = request.app.state.repository
    return repository


async def get_publisher(request: Request) -> TaskPublisher:
    publisher: TaskPublisher = request.app.state.publisher
    return publisher


async def require_json_body(request: Request) -> None:
    """415 unless the body is declared as JSON (`application/json` or `application/*+json`)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise HTTPException(415, "Content-Type must be application/json.")


RepositoryDep = Annotated[TaskRepository, Depends(get_repository)]
PublisherDep = Annotated[TaskPublisher, Depends(get_publisher)]
