"""Read-outs of the native engine: get_optimization_stats() and
get_performance_recommendations(). Nothing here runs on the hot path; it
reads native counters when asked. The recommendation rules themselves are
native (cpp/caudal/monitor/recommendations.h): this module assembles the
stats dict and hands it over.

The monitor modules (this one, caudal._executor.tuner, caudal._executor.recorder,
caudal.integrations.prometheus, caudal.integrations.plots) read an executor only through
:class:`MonitorView` (``ExecutorCore._monitor_view()``), never through its
private attributes (tests_py/monitor/test_monitor_boundary.py checks it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from caudal import _core
from caudal.telemetry import flusher_stats


class MonitorView:
    """What the monitor modules may read of one ExecutorCore, taken when
    asked (``ExecutorCore._monitor_view()``; the pool, the span flusher and
    the recorder come and go):

    - ``engine``: the native Engine, for its read-outs (``config``,
      ``step_stats()``, ``total_stats()``, ``latency_buckets()``,
      ``concurrency_stats()``, ``in_flight``, ...) and ``_publish_event``;
    - ``tuner``: the executor's :class:`caudal._executor.tuner.Tuner`;
    - ``l2``: the shared cache tier, or None;
    - ``worker_pool``: the pool running sync steps now, or None;
    - ``own_pool``: whether that pool is the executor's own (its queue size
      is then automatic optimization's to change);
    - ``spans``: the span flusher, or None;
    - ``recorder``: the LatencyRecorder of start_latency_recorder(), or None;
    - ``apply(config)``: the validated config swap (as
      apply_optimization_config, synchronously);
    - ``sleep(seconds)``: the executor's sleep (asyncio.sleep, or the manual
      clock's); the executor's time is ``engine.now_ns()``.
    """

    __slots__ = (
        "apply",
        "engine",
        "l2",
        "own_pool",
        "recorder",
        "sleep",
        "spans",
        "tuner",
        "worker_pool",
    )

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
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.engine = engine
        self.tuner = tuner
        self.l2 = l2
        self.worker_pool = worker_pool
        self.own_pool = own_pool
        self.spans = spans
        self.recorder = recorder
        self.apply = apply
        self.sleep = sleep

    @property
    def config(self) -> Any:
        """A copy of the config in force."""
        return self.engine.config


def optimization_stats(view: MonitorView) -> dict[str, dict[str, Any]]:
    """get_optimization_stats(): each section is one native snapshot and one
    converter (cpp/caudal/monitor/stats_sections.h); this puts them together
    and hands over what only Python holds (the shared cache tier's, the
    worker pool's and the span flusher's figures)."""
    engine = view.engine
    return {
        "memory": engine.memory_section(),
        "execution": engine.execution_section(),
        "cache": engine.cache_section(view.l2.stats() if view.l2 is not None else None),
        "concurrency": engine.concurrency_section(
            # the pool running sync steps (None until the first one ran)
            view.worker_pool.stats() if view.worker_pool is not None else None
        ),
        "circuit_breaker": engine.breaker_section(),
        "error_handling": engine.error_section(),
        "events": engine.event_stats(),
        # Process CPU (docs/monitoring.md, "CPU usage").
        "system": engine.cpu_stats(),
        "automatic_optimization": view.tuner.stats(view.config),
        "telemetry": engine.telemetry_section(flusher_stats(view.spans)),
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
