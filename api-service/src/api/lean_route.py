"""A FastAPI route that is documented like any other but served without FastAPI's
per-request machinery.

Under load, solving a route's dependencies, its two exit stacks and its own exception wrapper
cost more of a request's CPU than our code did (py-spy, docs/benchmarks.md). Our endpoints
need none of it: they take the `Request` and their path parameters (strings) and return a
`Response`, reading and validating any body themselves (api.deps). `LeanRoute` calls them
directly; exceptions still reach the app's handlers through Starlette's ExceptionMiddleware,
and the OpenAPI document still comes from the route's declaration.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send


class LeanRoute(APIRoute):
    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        path_names = {param.name for param in dependant.path_params}
        if (
            dependant.dependencies
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.request_param_name != "request"
        ):
            raise TypeError(
                f"{endpoint.__name__}: a LeanRoute endpoint takes `request: Request` and its"
                f" path parameters only (found {sorted(path_names)} besides the request)"
            )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            await super().handle(scope, receive, send)  # the 405, as any route answers it
            return
        request = Request(scope, receive, send)
        response: Response = await self.endpoint(request=request, **request.path_params)
        await response(scope, receive, send)
