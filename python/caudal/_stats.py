"""Read-outs of the native engine: get_optimization_stats() and
get_performance_recommendations(). Nothing here runs on the hot path; it
reads native counters when asked. The recommendation rules themselves are
native (cpp/caudal/monitor/recommendations.h): this module assembles the
stats dict and hands it over.

The monitor modules (this one, caudal._tuner, caudal.recorder,
caudal.prometheus, caudal.plots) read an executor only through
:class:`MonitorView` (``ExecutorCore._monitor_view()``), never through its
private attributes (tests_py/test_monitor_boundary.py checks it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caudal import _core

# The regression detector's minimum executions in the recent window and in
# the baseline (cpp/caudal/monitor/regression_detector.h).
REGRESSION_MIN_EXECUTIONS = 20


class MonitorView:
    """What the monitor modules may read of one ExecutorCore, taken when
    asked (``ExecutorCore._monitor_view()``; the pool, the span flusher and
    the recorder come and go):

    - ``engine``: the native Engine, for its read-outs (``config``,
      ``step_stats()``, ``total_stats()``, ``latency_buckets()``,
      ``concurrency_stats()``, ``in_flight``, ...) and ``_publish_event``;
    - ``tuner``: the executor's :class:`caudal._tuner.Tuner`;
    - ``l2``: the shared cache tier, or None;
    - ``worker_pool``: the pool running sync steps now, or None;
    - ``own_pool``: whether that pool is the executor's own (its queue size
      is then automatic optimization's to change);
    - ``spans``: the span flusher, or None;
    - ``recorder``: the LatencyRecorder of start_latency_recorder(), or None;
    - ``apply(config)``: the validated config swap (as
      apply_optimization_config, synchronously).
    """

    __slots__ = ("apply", "engine", "l2", "own_pool", "recorder", "spans", "tuner", "worker_pool")

    def __init__(
        self,
        *,
        engine: Any,
        tuner: Any,
        l2: Any,
        worker_pool: Any,
        own_pool: bool,
        spans: Any,
        recorder: Any,
        apply: Callable[[Any], None],
    ) -> None:
        self.engine = engine
        self.tuner = tuner
        self.l2 = l2
        self.worker_pool = worker_pool
        self.own_pool = own_pool
        self.spans = spans
        self.recorder = recorder
        self.apply = apply

    @property
    def config(self) -> Any:
        """A copy of the config in force."""
        return self.engine.config


def optimization_stats(view: MonitorView) -> dict[str, dict[str, Any]]:
    engine = view.engine
    cfg = engine.config
    total = engine.total_stats()
    steps = engine.step_stats()
    trends = engine.trends()
    for name, st in steps.items():
        st["trend"] = trends.get(name)
    return {
        "memory": {
            # Native: RSS (read now), pressure level, record pool, what is
            # shrunk (docs/memory.md).
            **engine.memory_stats(),
            "object_pool_enabled": cfg.enable_object_pool,
            "memory_optimization_enabled": cfg.enable_memory_optimization,
        },
        "execution": {
            "total_executions": total["executions"],
            "successes": total["successes"],
            "failures": total["failures"],
            "in_flight": engine.in_flight,
            "avg_time_ms": total["avg_time_ms"],
            "p50_ms": total["p50_ms"],
            "p95_ms": total["p95_ms"],
            "p99_ms": total["p99_ms"],
            "max_ms": total["max_ms"],
            "slow_executions": total["slow_executions"],
            "slow_execution_threshold_ms": cfg.slow_execution_threshold_ms,
            "timeouts": total["timeouts"],
            "fallbacks": total["fallbacks"],
            "cancelled": total["cancelled"],
            "step_analysis": engine.step_table(),
            "steps": steps,
            # Steps whose recent p95 regressed against their baseline
            # (docs/monitoring.md, "Regression detection"); each step's own
            # verdict and throughput are in steps[name]["trend"].
            "regressions": {n: t for n, t in trends.items() if t["regressed"]},
            "regression_detection": {
                "enabled": cfg.enable_performance_monitoring,
                "window_seconds": cfg.performance_window_seconds,
                "degradation_threshold": cfg.performance_degradation_threshold,
                "min_executions": REGRESSION_MIN_EXECUTIONS,
                "checkpoints": engine.trend_checkpoints(),
            },
        },
        "cache": {
            "enabled": cfg.enable_cache_optimization,
            **engine.cache_stats(),
            "l2": view.l2.stats() if view.l2 is not None else None,
        },
        "concurrency": {
            **engine.concurrency_stats(),
            "in_flight": engine.in_flight,
            # flujo's concurrency_level: executions in flight now
            "concurrency_level": engine.in_flight,
            # the pool running sync steps (None until the first one ran)
            "worker_pool": view.worker_pool.stats() if view.worker_pool is not None else None,
        },
        # Each one native snapshot and converter
        # (cpp/caudal/monitor/stats_sections.h).
        "circuit_breaker": engine.breaker_section(),
        "error_handling": engine.error_section(),
        "events": engine.event_stats(),
        # Process CPU (docs/monitoring.md, "CPU usage").
        "system": engine.cpu_stats(),
        "automatic_optimization": view.tuner.stats(cfg),
        "telemetry": _telemetry_section(view, cfg),
    }


def _telemetry_section(view: MonitorView, cfg: Any) -> dict[str, Any]:
    from caudal.telemetry import flusher_stats

    return {
        "enabled": cfg.enable_optimized_telemetry,
        "batch_size": cfg.telemetry_batch_size,
        "flush_interval_seconds": cfg.telemetry_flush_interval_seconds,
        "buffer_size": cfg.telemetry_buffer_size,
        # recording, sampling_rate, spans_recorded/_sampled_out/_dropped/
        # _drained/_buffered, thread_buffers (native)
        **view.engine.span_stats(),
        **flusher_stats(view.spans),
    }


def recommendations(view: MonitorView) -> list[dict[str, Any]]:
    """Every rule over the measured stats (computed now). Counters that grow
    forever (evictions, queue waits, breaker opens) are judged by what
    happened since the previous optimization analysis."""
    return view.tuner.recommend(optimization_stats(view), view.config, view.own_pool)


def recommend(
    stats: dict[str, Any],
    cfg: Any,
    marks: dict[str, Any] | None,
    own_pool: bool = True,
    unpaid: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The rules (docs/monitoring.md has the table) over a stats dict of
    get_optimization_stats()'s shape. ``marks``: the counters at the
    previous analysis (None: since the start). Automatic ones carry
    ``action = {"field", "value", "current"}``: what automatic optimization
    sets. ``unpaid``: the last raise of cache_max_size when it did not raise
    the hit rate (``{from, size, rate, now}``); evictions then call for no
    raise."""
    return _core.recommend(stats, cfg, marks, own_pool, unpaid)
