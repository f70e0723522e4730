"""API keys at the door: pure ASGI middleware that lets a request in only with a valid key
(API_KEYS, common.api_keys), and tells the routes whose request it is.

With no keys configured, everyone is let in and the caller is `OPEN`, whose tasks are those
of the tenant '' (every task made while keys are off; none a key made). With keys, every path needs `Authorization:
Bearer <key>` except the health probes, the dashboard's pages and files (which hold no task
data: its script sends the key), and the docs and /metrics while DOCS_PUBLIC and
METRICS_PUBLIC say so; a missing or wrong key is a 401 problem with `WWW-Authenticate`
(RFC 6750), before any of the request's body is read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem
from common.api_keys import tenant_of_key
from common.settings import Settings

logger = logging.getLogger(__name__)

AUTH_PROBLEM = "/problems/unauthorized"
_REALM = 'Bearer realm="task-service"'
_HEALTH = ("/health", "/health/")
_DOCS = frozenset({"/docs", "/openapi.json"})
_DOCS_ASSETS = "/docs/assets/"
_METRICS = "/metrics"
# The dashboard's pages and files hold no task data (its script reads the API with a key).
_DASHBOARD = ("/", "/dashboard")
_UNDER_DASHBOARD = "/dashboard/"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the tenant (an API key's name), or None while keys are off."""

    tenant: str | None

    @property
    def owner(self) -> str:
        """What a task this caller creates records as its tenant ("" while keys are off)."""
        return self.tenant or ""


OPEN = Caller(None)


def caller_of(request: Request) -> Caller:
    """The caller that ApiKeys let in (OPEN in an app without it, as in unit tests)."""
    caller: Caller = request.scope.get("state", {}).get("caller", OPEN)
    return caller


def install_api_keys(app: FastAPI, settings: Settings) -> None:
    """The middleware when API_KEYS is set (add it outside the body limit: a request without
    a valid key is answered before its body is read); with none, only the warning."""
    keys = settings.api_key_digests
    if not keys:
        logger.warning(
            "API_KEYS is empty: the API answers anyone who reaches it (see README, Security)"
        )
        return
    app.add_middleware(
        ApiKeys,
        keys=keys,
        docs_public=settings.docs_public,
        metrics_public=settings.metrics_public,
    )


class ApiKeys:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Mapping[str, bytes],
        docs_public: bool = True,
        metrics_public: bool = True,
    ) -> None:
        self.app = app
        self._keys = keys
        public = [*(_DOCS if docs_public else ()), *((_METRICS,) if metrics_public else ())]
        self._public = frozenset(public)
        self._docs_public = docs_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if (
            path in self._public
            or path == _HEALTH[0]
            or path.startswith(_HEALTH[1])
            or (self._docs_public and path.startswith(_DOCS_ASSETS))
            or path in _DASHBOARD
            or path.startswith(_UNDER_DASHBOARD)
        ):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        tenant = None if presented is None else tenant_of_key(self._keys, presented)
        if tenant is None:
            await _unauthorized(scope, receive, send, missing=presented is None)
            return
        scope.setdefault("state", {})["caller"] = Caller(tenant)
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    """The token of `Authorization: Bearer <token>` (the scheme in any case), or None."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return None
            return token
    return None


async def _unauthorized(scope: Scope, receive: Receive, send: Send, *, missing: bool) -> None:
    # RFC 6750: a request without a token gets the challenge alone; one with a bad token is
    # told it is invalid (the same answer for an unknown key and a malformed header).
    challenge = _REALM if missing else f'{_REALM}, error="invalid_token"'
    detail = (
        "This API needs an API key: send Authorization: Bearer <key>."
        if missing
        else "The API key sent is not valid."
    )
    response = problem(401, detail, type_=AUTH_PROBLEM, headers={"WWW-Authenticate": challenge})
    await response(scope, receive, send)
