"""LeanRoute serves only endpoints it can call directly, and refuses the others at import."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, Request, Response

from api.lean_route import LeanRoute

pytestmark = pytest.mark.unit


def test_an_endpoint_wanting_more_than_request_and_path_is_refused() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def query_param(request: Request, limit: int) -> Response:
        return Response()

    async def dependency(request: Request, value: str = Depends(lambda: "x")) -> Response:
        return Response()

    async def no_request(task_id: str) -> Response:
        return Response()

    for endpoint, path in ((query_param, "/a"), (dependency, "/b"), (no_request, "/c/{task_id}")):
        with pytest.raises(TypeError, match="LeanRoute"):
            router.add_api_route(path, endpoint)


def test_request_and_path_parameters_are_accepted() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def endpoint(task_id: str, request: Request) -> Response:
        return Response(task_id)

    router.add_api_route("/t/{task_id}", endpoint)
    assert isinstance(router.routes[0], LeanRoute)
