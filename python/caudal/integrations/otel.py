"""OpenTelemetry: caudal's spans as OpenTelemetry SDK spans.

    from caudal.integrations.otel import OpenTelemetryExporter

    executor = ExecutorCore(config, span_exporters=[OpenTelemetryExporter()])

``pip install 'caudal[otel]'``. opentelemetry is imported when an exporter is
made, not with this module. How spans are recorded, sampled and flushed:
:mod:`caudal.telemetry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caudal._version import __version__
from caudal.telemetry import _FAILED, Span, SpanExporter

__all__ = ["OpenTelemetryExporter"]


class OpenTelemetryExporter(SpanExporter):
    """Turns caudal's spans into OpenTelemetry SDK spans.

    The spans go through ``tracer_provider`` (default: the global one), so
    its span processors, exporters, resource and sampler apply as to the
    application's own spans. Each span is a child of the span that was
    current when the execution ended (None: a root span). Attributes:
    ``caudal.step``, ``caudal.attempts``, ``caudal.outcome``,
    ``caudal.cache_hit``, ``caudal.breaker_state``, ``caudal.slow``,
    ``caudal.sampled``, ``error.type``; failures get status ERROR."""

    wants_parent = True

    def __init__(self, tracer_provider: Any = None, *, name_prefix: str = ""):
        try:
            from opentelemetry import trace
            from opentelemetry.trace import (
                NonRecordingSpan,
                SpanContext,
                SpanKind,
                Status,
                StatusCode,
                TraceFlags,
            )
        except ImportError as exc:  # pragma: no cover - the dependency is declared
            raise ImportError(
                "OpenTelemetryExporter needs opentelemetry-api and opentelemetry-sdk "
                "(pip install opentelemetry-sdk)"
            ) from exc
        self._provider = tracer_provider
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self._tracer = provider.get_tracer("caudal", __version__)
        self._prefix = name_prefix
        self._trace = trace
        self._nrs = NonRecordingSpan
        self._sc = SpanContext
        self._kind = SpanKind.INTERNAL
        self._status = Status
        self._error = StatusCode.ERROR
        self._flags = TraceFlags

    def export(self, spans: Sequence[Span]) -> None:
        from opentelemetry.context import Context

        tracer = self._tracer
        root = Context()
        parents: dict[tuple[int, int, int], Any] = {}
        for s in spans:
            ctx = root
            if s.trace_id is not None and s.parent_span_id is not None:
                k = (s.trace_id, s.parent_span_id, s.trace_flags)
                ctx = parents.get(k)
                if ctx is None:
                    parent = self._nrs(
                        self._sc(
                            s.trace_id,
                            s.parent_span_id,
                            is_remote=False,
                            trace_flags=self._flags(s.trace_flags),
                        )
                    )
                    ctx = parents[k] = self._trace.set_span_in_context(parent, root)
            attrs: dict[str, Any] = {
                "caudal.step": s.step,
                "caudal.attempts": s.attempts,
                "caudal.outcome": s.outcome,
                "caudal.cache_hit": s.outcome == "cache_hit",
                "caudal.slow": s.slow,
                "caudal.sampled": s.sampled,
            }
            if s.breaker_state is not None:
                attrs["caudal.breaker_state"] = s.breaker_state
            if s.error_type is not None:
                attrs["error.type"] = s.error_type
            span = tracer.start_span(
                self._prefix + s.step,
                context=ctx,
                kind=self._kind,
                attributes=attrs,
                start_time=s.start_time_ns,
            )
            if s.outcome in _FAILED:
                span.set_status(self._status(self._error, s.error_type or s.outcome))
            span.end(end_time=s.end_time_ns)

    def force_flush(self) -> None:
        provider = self._provider
        if provider is None:
            provider = self._trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()

    def __repr__(self) -> str:
        return "OpenTelemetryExporter()"
