from __future__ import annotations

from collections.abc import AsyncIterator

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
