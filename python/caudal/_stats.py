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
        "circuit_breaker": _breaker_section(engine, cfg),
        "error_handling": _error_section(engine, cfg, total),
        "events": engine.event_stats(),
        # Process CPU (docs/monitoring.md, "CPU usage").
        "system": {
            **engine.cpu_stats(),
            "cpu_usage_threshold_percent": cfg.cpu_usage_threshold_percent,
        },
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


_STATE_ORDER = {"open": 0, "half_open": 1, "closed": 2}


def _breaker_section(engine: Any, cfg: Any) -> dict[str, Any]:
    breakers = engine.breaker_stats()
    worst = min((b["state"] for b in breakers), key=_STATE_ORDER.__getitem__, default="closed")
    return {
        "enabled": cfg.enable_circuit_breaker,
        # flujo's troubleshooting guide compares with 'OPEN': the worst state over all breakers.
        "state": worst.upper(),
        "failure_count": sum(b["failure_count"] for b in breakers),
        "success_count": sum(b["success_count"] for b in breakers),
        "rejected_count": sum(b["rejected_count"] for b in breakers),
        "open_count": sum(b["open_count"] for b in breakers),
        "failure_threshold": cfg.circuit_breaker_failure_threshold,
        "recovery_timeout_seconds": cfg.circuit_breaker_recovery_timeout_seconds,
        "breakers": {b["name"]: b for b in breakers},
        "transitions": engine.transitions(),
    }


def _error_section(engine: Any, cfg: Any, total: dict[str, Any]) -> dict[str, Any]:
    attempts = total["attempts"]
    errors = total["errors"]
    table = engine.error_stats()
    failed_executions = total["recovered"] + total["failures"]
    return {
        "enabled": cfg.enable_optimized_error_handling,
        "error_rate": errors / attempts if attempts else 0.0,
        "errors": errors,
        "retries": total["retries"],
        "recovered": total["recovered"],
        # Executions that failed at least once and then succeeded, over those
        # that failed at least once.
        "recovery_success_rate": (
            total["recovered"] / failed_executions if failed_executions else 0.0
        ),
        # Retries that recovered, over retries whose outcome is known.
        "retry_recovery_rate": table["recovery_success_rate"],
        "cached_patterns": table["cached_patterns"],
        "pattern_capacity": table["capacity"],
        "fail_fast": table["fail_fast"],
        "patterns": table["patterns"],
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
