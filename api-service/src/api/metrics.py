"""The API's Prometheus metrics (METRICS_ENABLED): `GET /metrics`, HTTP requests by route
template, and what the use cases report (tasks accepted, publishes, replays, event streams,
the outbox backlog).

Label values come from fixed sets only: a route's template (`/api/tasks/{task_id}`, or
`unmatched`), a status class, a catalogued task type. Under API_WORKERS > 1 every process
writes its values to PROMETHEUS_MULTIPROC_DIR and a scrape sums them (common.metrics).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import DependencyUnavailable
from common.messages import TaskMessage
from common.metrics import OutboxBacklog, exposition, status_class, task_type_label
from common.ports import TaskPublisher

UNMATCHED = "unmatched"


class ApiMetrics:
    """Every metric of one API app, in a registry of its own (so that two apps in one test
    process count apart)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "task_api_http_requests",
            "HTTP requests answered, by route template, method and status class",
            ["method", "route", "status_class"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "task_api_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            ["method", "route"],
            registry=registry,
        )
        self.accepted = Counter(
            "task_api_tasks_accepted",
            "Tasks accepted (stored), by type",
            ["type"],
            registry=registry,
        )
        self.publishes = Counter(
            "task_api_publishes",
            "Task messages published: confirmed by the broker, or failed (left to the outbox)",
            ["outcome"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "task_api_publish_duration_seconds",
            "Time from a publish to its confirm (or its failure)",
            registry=registry,
        )
        self.replays = Counter(
            "task_api_idempotent_replays",
            "Submissions answered with the stored answer of an earlier one (Idempotency-Key)",
            registry=registry,
        )
        self.streams_open = Gauge(
            "task_api_event_streams_open",
            "Event streams (GET /api/tasks/{task_id}/events) open now",
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Read from the database at each scrape, the same in every process: the latest wins.
        self.outbox_backlog = Gauge(
            "task_api_outbox_backlog",
            "Undispatched tasks that are due (their message not yet confirmed by the broker)",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.outbox_oldest_age = Gauge(
            "task_api_outbox_oldest_age_seconds",
            "How long the oldest undispatched due task has been due (0: none)",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.confirmed = self.publishes.labels("confirmed")
        self.failed = self.publishes.labels("failed")

    def submitted(self, task_type: str, *, replayed: bool) -> None:
        if replayed:
            self.replays.inc()
        else:
            self.accepted.labels(task_type_label(task_type)).inc()

    async def streaming(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`stream`, counted among the open ones while it runs."""
        self.streams_open.inc()
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self.streams_open.dec()

    def metered(self, publisher: TaskPublisher) -> TaskPublisher:
        return MeteredPublisher(publisher, self)


class MeteredPublisher:
    """The TaskPublisher port, counting each publish by outcome and timing it."""

    def __init__(self, publisher: TaskPublisher, metrics: ApiMetrics) -> None:
        self._publisher = publisher
        self._metrics = metrics

    @property
    def is_open(self) -> bool:
        return self._publisher.is_open

    async def publish(
        self,
        message: TaskMessage,
        *,
        attempts: int = 0,
        lookups: int = 0,
        delay_seconds: float = 0.0,
    ) -> None:
        started = time.perf_counter()
        try:
            await self._publisher.publish(
                message, attempts=attempts, lookups=lookups, delay_seconds=delay_seconds
            )
        except DependencyUnavailable:
            self._metrics.failed.inc()
            raise
        finally:
            self._metrics.publish_seconds.observe(time.perf_counter() - started)
        self._metrics.confirmed.inc()

    async def ping(self) -> None:
        await self._publisher.ping()


class HttpMetrics:
    """Pure ASGI middleware: each HTTP request counted by its route's template (which the
    router leaves in the scope), method and status class, and timed to its answer's end."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # labels() takes a lock and builds a key each time: a request looks its two series
        # up here instead, by its method, route and status (bounded: a method is a client's
        # word, and any token is one).
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, status_send)
        finally:
            route = scope.get("route")  # the router's match, in the scope it was handed
            key = (scope["method"], UNMATCHED if route is None else route.path, status)
            series = self._series.get(key) or self._series_of(key)
            series[0].inc()
            series[1].observe(time.perf_counter() - started)

    def _series_of(self, key: tuple[str, str, int]) -> tuple[Counter, Histogram]:
        method, template, status = key
        method = method if method in _METHODS else "other"
        metrics = self.metrics
        series = (
            metrics.requests.labels(method, template, status_class(status)),
            metrics.request_seconds.labels(method, template),
        )
        if len(self._series) < _MAX_SERIES:
            self._series[key] = series
        return series


_MAX_SERIES = 1000
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install_metrics(
    app: FastAPI,
    metrics: ApiMetrics,
    outbox_backlog: Callable[[], Awaitable[OutboxBacklog]],
) -> None:
    """`GET /metrics` and the HTTP middleware (add it inside the request ids, so that the
    router's scope is the one it reads). The outbox gauges are read at each scrape: one
    indexed query per scrape, and none when nobody scrapes."""

    async def scrape(request: Request) -> Response:
        try:
            backlog = await outbox_backlog()
        except DependencyUnavailable:
            pass  # the rest is still worth answering; the gauges keep their last values
        else:
            metrics.outbox_backlog.set(backlog.tasks)
            metrics.outbox_oldest_age.set(backlog.oldest_age_seconds)
        return Response(exposition(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
    app.add_middleware(HttpMetrics, metrics=metrics)
