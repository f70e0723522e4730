"""Traces: W3C Trace Context across the API, the broker and the worker, and the OpenTelemetry
SDK behind it when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Each entry point calls `start_tracing(settings, service=...)` once. Unset, nothing of the SDK
is imported or run: a valid `traceparent` that comes in (on a request, in a message's headers)
is only passed on as it came (`inject`), and its trace id is logged. Set, every span goes to
the OTLP/HTTP exporter in batches, from a thread of the SDK's; the SDK reads its other OTEL_*
variables itself (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...). The provider is this
module's, not OpenTelemetry's global one: every span of ours comes from it, and a test can
start and stop it again.

The spans themselves are made where their work is: common.amqp.spans (publish, process),
common.mysql.spans (statements) and the API's FastAPI instrumentation (api.tracing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace

from common.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

# As the SDK's TraceContextTextMapPropagator reads it; a later version is read as 00.
_TRACEPARENT = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)"
)
_MAX_HEADER = 512

_provider: TracerProvider | None = None
_tracers: dict[str, trace.Tracer] = {}
# With tracing off: the W3C headers of the request or message being handled, to pass on.
_received: ContextVar[Mapping[str, str] | None] = ContextVar("received_trace", default=None)

Received = Token[Mapping[str, str] | None] | None


def start_tracing(
    settings: Settings, *, service: str, exporter: SpanExporter | None = None
) -> bool:
    """Tracing on, when OTEL_EXPORTER_OTLP_ENDPOINT is set or `exporter` is given (a test's,
    which then gets each span as it ends); True if it is on. OTEL_SERVICE_NAME, when set,
    names the service instead of `service`."""
    global _provider
    if exporter is None and not settings.otel_exporter_otlp_endpoint:
        return False
    # Imported only now: the SDK and the exporter take 0.3 s and 5 MB to import.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    stop_tracing()
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name or service})
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Its endpoint and options come from the OTEL_EXPORTER_OTLP_* variables.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    return True


def stop_tracing() -> None:
    """Export what is left and turn tracing off (the SDK also exports what is left at exit)."""
    global _provider
    provider, _provider = _provider, None
    _tracers.clear()
    if provider is not None:
        provider.shutdown()


def tracer_provider() -> TracerProvider | None:
    """The provider while tracing is on, for an instrumentation to use; None while off."""
    return _provider


def tracer(name: str) -> trace.Tracer:
    """The tracer of module `name`; only while tracing is on."""
    found = _tracers.get(name)
    if found is None:
        assert _provider is not None, "tracing is off"
        found = _tracers[name] = _provider.get_tracer(name)
    return found


def is_on() -> bool:
    return _provider is not None


def recording() -> bool:
    """Whether the current span is being recorded: the work is part of a sampled trace."""
    return _provider is not None and trace.get_current_span().is_recording()


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C `traceparent`; None for anything else."""
    if not traceparent or len(traceparent) > _MAX_HEADER:
        return None
    found = _TRACEPARENT.fullmatch(traceparent)
    if found is None:
        return None
    version, trace_id, span_id, _, rest = found.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id


def current_trace_id() -> str | None:
    """The trace id of the current span (tracing on)."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def receive(traceparent: str | None, tracestate: str | None = None) -> tuple[str | None, Received]:
    """Enter the trace of a request or message: its trace id (None: it has none) and the
    token `leave` takes at its end. With tracing on, the current span (the caller made it
    from these headers) is the trace; off, a valid `traceparent` and its `tracestate` are
    kept for `inject` to pass on as they came."""
    if _provider is not None:
        return current_trace_id(), None
    trace_id = trace_id_of(traceparent)
    if trace_id is None or traceparent is None:
        # Nothing to pass on; within a request or delivery, nothing was received before.
        return None, None if _received.get() is None else _received.set(None)
    headers = {"traceparent": traceparent.strip(" \t")}
    if tracestate and len(tracestate) <= _MAX_HEADER:
        headers["tracestate"] = tracestate
    return trace_id, _received.set(headers)


def leave(token: Received) -> None:
    if token is not None:
        _received.reset(token)


def inject(headers: MutableMapping[str, Any]) -> None:
    """Put the current trace context into a message's headers: the current span's with
    tracing on; off, the W3C headers received (nothing without)."""
    if _provider is not None:
        propagate.inject(headers)
        return
    received = _received.get()
    if received is not None:
        headers.update(received)


def extract(headers: Mapping[str, str]) -> context.Context:
    """The trace context that W3C headers carry (tracing on)."""
    return propagate.extract(headers)


def parent() -> context.Context | None:
    """The trace context to carry into work another task does on the caller's behalf (a
    statement shared by several callers, common.batching); None with tracing off."""
    return context.get_current() if _provider is not None else None


def attach(parent: context.Context | None) -> Token[context.Context] | None:
    """Make `parent` (from `parent()`) current; the token for `detach`."""
    return None if parent is None else context.attach(parent)


def detach(token: Token[context.Context] | None) -> None:
    if token is not None:
        context.detach(token)
