"""A stand-in OpenTelemetry collector for the tests: an OTLP/HTTP receiver of traces on
127.0.0.1 that keeps every span the services export to it.

    with collecting() as collector:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        ...
        spans = await collector.wait_for(lambda spans: ..., timeout=10)
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

from testkit.polling import wait_until


@dataclass(frozen=True, slots=True)
class ExportedSpan:
    """One span as the collector received it; ids as lower-case hex."""

    service: str
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER or INTERNAL
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _spans(request: ExportTraceServiceRequest) -> list[ExportedSpan]:
    found = []
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ExportedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        kind=SpanMessage.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={item.key: _value(item.value) for item in span.attributes},
                    )
                )
    return found


class Collector:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint  # what OTEL_EXPORTER_OTLP_ENDPOINT takes
        self._spans: list[ExportedSpan] = []
        self._lock = threading.Lock()

    def add(self, spans: list[ExportedSpan]) -> None:
        with self._lock:
            self._spans += spans

    @property
    def spans(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self._spans)

    async def wait_for(
        self, found: Callable[[list[ExportedSpan]], bool], *, timeout: float, what: str
    ) -> list[ExportedSpan]:
        """The spans received so far, once `found` holds for them."""

        async def probe() -> list[ExportedSpan] | None:
            spans = self.spans
            return spans if found(spans) else None

        return await wait_until(probe, timeout=timeout, interval=0.05, what=what)


@contextmanager
def collecting() -> Iterator[Collector]:
    """A collector listening on a free port of 127.0.0.1 until the block ends."""
    collector: Collector | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.headers.get("content-encoding") == "gzip":  # OTEL_EXPORTER_OTLP_COMPRESSION
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            assert collector is not None
            collector.add(_spans(ExportTraceServiceRequest.FromString(body)))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # not on the test's output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collector = Collector(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, name="otlp-collector", daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
