"""Spans of step executions, recorded natively and exported in batches.

The native core records one span per finished execution into per-thread
buffers (docs/monitoring.md, "Tracing"): the step, start and end, attempts,
the outcome, the breaker's state, the error type, whether it was slow, and
the OpenTelemetry span that was current in the caller's context, so caudal's
spans nest inside the caller's own traces. Nothing is recorded until an
exporter is attached::

    from caudal.integrations.otel import OpenTelemetryExporter
    from caudal.telemetry import JsonLinesExporter

    executor = ExecutorCore(config, span_exporters=[OpenTelemetryExporter()])
    executor.add_span_exporter(JsonLinesExporter("spans.jsonl"))

A flusher thread (one per executor with exporters) drains the buffers every
``telemetry_flush_interval_seconds``, or sooner when a thread's buffer is
half full, and hands each exporter the spans in batches of
``telemetry_batch_size``. ``telemetry_sampling_rate`` is the fraction of
executions kept; failures and slow executions are always kept.

An exporter is any object with ``export(spans)`` (a list of :class:`Span`)
and, optionally, ``force_flush()``, ``shutdown()`` and a ``wants_parent``
attribute (True: record the caller's OpenTelemetry parent span).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from caudal._core import _clock_offset_ns

__all__ = [
    "JsonLinesExporter",
    "Span",
    "SpanExporter",
]

_FAILED = frozenset({"error", "timeout", "rejected", "fallback"})


class Span:
    """One finished execution. Times are Unix-epoch nanoseconds."""

    __slots__ = (
        "attempts",
        "breaker_state",
        "end_time_ns",
        "error_type",
        "outcome",
        "parent_span_id",
        "sampled",
        "slow",
        "span_id",
        "start_time_ns",
        "step",
        "trace_flags",
        "trace_id",
    )

    step: str
    start_time_ns: int
    end_time_ns: int
    span_id: int
    trace_id: int | None  # the caller's trace, when one was current
    parent_span_id: int | None
    trace_flags: int
    attempts: int
    outcome: str  # ok error timeout rejected cancelled fallback cache_hit
    breaker_state: str | None  # closed open half_open, None without a breaker
    slow: bool
    sampled: bool  # chosen by the sampling rate (else kept as a failure or slow)
    error_type: str | None

    @classmethod
    def _from_native(cls, t: tuple, offset_ns: int) -> Span:
        s = cls.__new__(cls)
        (
            s.step,
            start,
            end,
            s.span_id,
            s.trace_id,
            s.parent_span_id,
            s.trace_flags,
            s.attempts,
            s.outcome,
            s.breaker_state,
            s.slow,
            s.sampled,
            s.error_type,
        ) = t
        s.start_time_ns = start + offset_ns
        s.end_time_ns = end + offset_ns
        return s

    @property
    def duration_s(self) -> float:
        return (self.end_time_ns - self.start_time_ns) / 1e9

    @property
    def failed(self) -> bool:
        return self.outcome in _FAILED

    @property
    def cache_hit(self) -> bool:
        return self.outcome == "cache_hit"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines form (ids as lowercase hex, as OpenTelemetry shows them)."""
        return {
            "name": self.step,
            "step": self.step,
            "start_time_unix_nano": self.start_time_ns,
            "end_time_unix_nano": self.end_time_ns,
            "duration_ms": (self.end_time_ns - self.start_time_ns) / 1e6,
            "attempts": self.attempts,
            "outcome": self.outcome,
            "cache_hit": self.cache_hit,
            "breaker_state": self.breaker_state,
            "slow": self.slow,
            "sampled": self.sampled,
            "error_type": self.error_type,
            "span_id": f"{self.span_id:016x}",
            "trace_id": None if self.trace_id is None else f"{self.trace_id:032x}",
            "parent_span_id": (
                None if self.parent_span_id is None else f"{self.parent_span_id:016x}"
            ),
        }

    def __repr__(self) -> str:
        return (
            f"Span(step={self.step!r}, outcome={self.outcome!r}, "
            f"duration_ms={(self.end_time_ns - self.start_time_ns) / 1e6:.3f}, "
            f"attempts={self.attempts})"
        )


class SpanExporter:
    """Base class (optional): an exporter needs only ``export(spans)``."""

    wants_parent = False

    def export(self, spans: Sequence[Span]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def force_flush(self) -> None:
        """Push out what the exporter itself buffers."""

    def shutdown(self) -> None:
        """Release what the exporter holds (files, connections)."""


class JsonLinesExporter(SpanExporter):
    """Writes one JSON object per span and line (:meth:`Span.to_dict`).

    ``target`` is a path (opened for appending, closed by ``shutdown``) or
    an open text stream (left open). ``wants_parent``: also record the
    caller's OpenTelemetry parent (needs opentelemetry-api)."""

    def __init__(self, target: str | os.PathLike[str] | TextIO, *, wants_parent: bool = False):
        if isinstance(target, str | os.PathLike):
            self._stream: TextIO = open(target, "a", encoding="utf-8")
            self._owned = True
        elif isinstance(target, io.TextIOBase) or hasattr(target, "write"):
            self._stream = target
            self._owned = False
        else:
            raise TypeError(
                f"JsonLinesExporter: target must be a path or a text stream, "
                f"got {type(target).__name__}"
            )
        self.wants_parent = wants_parent
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Span]) -> None:
        text = "".join(json.dumps(s.to_dict(), separators=(",", ":")) + "\n" for s in spans)
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def shutdown(self) -> None:
        with self._lock:
            if self._owned and not self._stream.closed:
                self._stream.close()

    def __repr__(self) -> str:
        return f"JsonLinesExporter({getattr(self._stream, 'name', self._stream)!r})"


def _otel_parent_source() -> tuple[Any, Any] | None:
    """(ContextVar, key) where OpenTelemetry keeps the current span, or None
    when opentelemetry-api is missing or uses another runtime context."""
    try:
        import contextvars

        from opentelemetry import context as otel_context
        from opentelemetry.trace import propagation
    except ImportError:
        return None
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    cv = getattr(runtime, "_current_context", None)
    key = getattr(propagation, "_SPAN_KEY", None)
    if not isinstance(cv, contextvars.ContextVar) or not isinstance(key, str):
        return None
    return cv, key


class SpanFlusher:
    """Drains one engine's span buffers into its exporters (a daemon thread).

    Internal: ExecutorCore makes one when the first exporter is attached."""

    # What stats() reports, at its value before anything happened (an
    # executor without exporters reports these: flusher_stats(None)).
    started: float | None = None  # when the first exporter was attached
    parent_capture = False
    spans_exported = 0
    batches_exported = 0
    export_errors = 0
    last_export_error: str | None = None
    export_seconds = 0.0
    last_flush: float | None = None
    last_flush_ok: bool | None = None  # None: nothing exported yet
    _exporters: Any = ()  # each instance has its own list

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._exporters: list[Any] = []
        self._lock = threading.Lock()  # one drain-and-export at a time
        self._stop = False
        self._thread: threading.Thread | None = None
        self._offset_ns = _clock_offset_ns()
        self.started = time.monotonic()

    # ----------------------------------------------------------- exporters
    @property
    def exporters(self) -> list[Any]:
        return list(self._exporters)

    def add(self, exporter: Any) -> None:
        if not callable(getattr(exporter, "export", None)):
            raise TypeError(
                f"a span exporter needs an export(spans) method; {type(exporter).__name__} has none"
            )
        with self._lock:
            if any(e is exporter for e in self._exporters):
                return
            self._exporters.append(exporter)
            self._sync()
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(
                target=self._run, name="caudal-span-flusher", daemon=True
            )
            self._thread.start()

    def remove(self, exporter: Any) -> bool:
        """Detaches ``exporter`` after exporting what is buffered."""
        self.flush()
        with self._lock:
            n = len(self._exporters)
            self._exporters = [e for e in self._exporters if e is not exporter]
            removed = len(self._exporters) != n
            self._sync()
        if not self._exporters:
            self.stop()
        return removed

    def _sync(self) -> None:
        engine = self._engine
        want = any(getattr(e, "wants_parent", False) for e in self._exporters)
        source = _otel_parent_source() if want else None
        if source is None:
            engine._set_parent_source(None, None)
        else:
            engine._set_parent_source(*source)
        self.parent_capture = source is not None
        engine._set_tracing(bool(self._exporters))

    # -------------------------------------------------------------- export
    def _run(self) -> None:
        engine = self._engine
        while not self._stop:
            interval = engine.config.telemetry_flush_interval_seconds
            engine._wait_spans(interval)
            if self._stop:
                break
            self.flush(force=False)

    def flush(self, force: bool = True) -> int:
        """Drains and exports now; returns how many spans went out."""
        with self._lock:
            spans = self._engine._drain_spans()
            if spans:
                off = self._offset_ns
                from_native = Span._from_native
                batch = [from_native(t, off) for t in spans]
                size = max(1, self._engine.config.telemetry_batch_size)
                t0 = time.perf_counter()
                self.last_flush_ok = True
                for exporter in self._exporters:
                    for i in range(0, len(batch), size):
                        if self._call(exporter, "export", batch[i : i + size]):
                            self.batches_exported += 1
                        else:
                            self.last_flush_ok = False
                self.export_seconds += time.perf_counter() - t0
                self.spans_exported += len(batch)
            if force:
                for exporter in self._exporters:
                    self._call(exporter, "force_flush")
            self.last_flush = time.monotonic()
            return len(spans)

    def _call(self, exporter: Any, method: str, *args: Any) -> bool:
        """exporter.method(*args) if it has one; a failure is counted (it
        must not stop the other exporters) and returns False."""
        fn = getattr(exporter, method, None)
        if fn is None:
            return True
        try:
            fn(*args)
        except Exception as exc:
            self.export_errors += 1
            self.last_export_error = f"{type(exporter).__name__}: {exc!r}"
            return False
        return True

    def stop(self) -> None:
        """Stops the thread after a last flush (the executor's finalizer:
        when it is collected, or at interpreter exit)."""
        self._stop = True
        self._engine._notify_spans()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)
        self._thread = None
        self.flush()

    def stats(self) -> dict[str, Any]:
        return flusher_stats(self)


def flusher_stats(f: SpanFlusher | None) -> dict[str, Any]:
    """The export side of stats["telemetry"] (None: no exporter was ever
    attached; every figure at its initial value)."""
    src: Any = SpanFlusher if f is None else f  # the class: its defaults
    now = time.monotonic()
    return {
        "exporters": [repr(e) for e in src._exporters],
        "parent_capture": src.parent_capture,
        "spans_exported": src.spans_exported,
        "batches_exported": src.batches_exported,
        "export_errors": src.export_errors,
        "last_export_error": src.last_export_error,
        "export_seconds": src.export_seconds,
        "uptime_seconds": 0.0 if src.started is None else now - src.started,
        "last_flush_seconds_ago": None if src.last_flush is None else now - src.last_flush,
        "last_flush_ok": src.last_flush_ok,
    }


def __getattr__(name: str) -> Any:
    """``caudal.telemetry.OpenTelemetryExporter``: the old path, kept for one
    release (deprecated: import it from caudal.integrations.otel)."""
    if name == "OpenTelemetryExporter":
        from caudal.integrations.otel import OpenTelemetryExporter

        warnings.warn(
            "caudal.telemetry.OpenTelemetryExporter is deprecated: import it from "
            "caudal.integrations.otel (the old path goes away in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return OpenTelemetryExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
