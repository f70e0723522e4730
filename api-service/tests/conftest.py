from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from common.settings import Settings, load_settings
from main import create_app
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher


@pytest.fixture
def settings() -> Settings:
    return load_settings(max_body_bytes=100_000, retry_after_seconds=7)


@pytest.fixture
def repository() -> InMemoryTaskRepository:
    return InMemoryTaskRepository()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def app(
    settings: Settings, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> FastAPI:
    """The real app with the fakes at its ports."""
    return create_app(settings, Backends(repository=repository, publisher=publisher))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


@asynccontextmanager
async def live_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on `settings`, its lifespan run (the real backends), and a client of it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client
