"""ExecutorCore's read-outs (a mixin of
:class:`caudal._executor.core.ExecutorCore`): ``execute_with_monitoring``,
span exporters and events, stats, recommendations, health, analysis, the
latency recorder and plots. Nothing here is on an execution's path."""

from __future__ import annotations

import weakref
from typing import Any

from caudal._core import StepResult
from caudal._core import rss_bytes as _native_rss
from caudal._display import OptimizationStats, Recommendations
from caudal._executor.recorder import LatencyRecorder
from caudal._executor.stats import MonitorView, optimization_stats, recommendations
from caudal._steps import _name_of
from caudal.events import EventStream
from caudal.integrations.plots import plot_concurrency, plot_latency
from caudal.telemetry import SpanFlusher


def _rss_mb() -> float:
    """Resident set size of this process (natively from /proc/self/statm)."""
    rss = _native_rss()
    if rss is not None:
        return rss / (1024 * 1024)
    import resource  # not Linux: the peak instead

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Readouts:
    """What an executor tells about itself."""

    __slots__ = ()

    async def execute_with_monitoring(
        self,
        step: Any,
        data: Any = None,
        context: Any = None,
        resources: Any = None,
    ) -> tuple[StepResult, dict[str, Any]]:
        """``execute`` plus a metrics dict: execution_time_ms, memory_usage_mb,
        memory_delta_mb, attempts, cache_hit, success, step_name."""
        before = _rss_mb()
        result = await self.execute(step, data, context, resources)
        after = _rss_mb()
        return result, {
            "step_name": result.name,
            "execution_time_ms": result.latency_s * 1000.0,
            "memory_usage_mb": after,
            "memory_delta_mb": after - before,
            "attempts": result.attempts,
            "cache_hit": result.cache_hit,
            "success": result.success,
        }

    # ------------------------------------------------------------- tracing
    def add_span_exporter(self, exporter: Any) -> None:
        """Send a span of every execution to ``exporter`` (an object with
        ``export(spans)``: :class:`caudal.integrations.otel.OpenTelemetryExporter`,
        :class:`caudal.telemetry.JsonLinesExporter`, or your own).

        Spans are recorded natively while at least one exporter is attached
        (and ``enable_optimized_telemetry`` is on), sampled by
        ``telemetry_sampling_rate`` (failures and slow executions always
        kept), and exported from a background thread in batches of
        ``telemetry_batch_size`` every ``telemetry_flush_interval_seconds``
        or when a thread's buffer is half full."""

        if self._spans is None:
            flusher = SpanFlusher(self._engine)
            self._spans = flusher
            # An executor dropped without aclose() still stops its thread.
            weakref.finalize(self, flusher.stop)
        self._spans.add(exporter)

    def remove_span_exporter(self, exporter: Any) -> bool:
        """Detach ``exporter`` (after exporting what is buffered); False if
        it was not attached. With none left, recording stops."""
        if self._spans is None:
            return False
        return self._spans.remove(exporter)

    @property
    def span_exporters(self) -> list[Any]:
        return [] if self._spans is None else self._spans.exporters

    def flush_telemetry(self) -> int:
        """Export every buffered span now (and flush the exporters); returns
        how many spans went out. Blocks while exporters export: from async
        code, ``await asyncio.to_thread(executor.flush_telemetry)``."""
        return 0 if self._spans is None else self._spans.flush()

    # --------------------------------------------------------------- events
    def events(self, types: Any = None, buffer: int = 1000) -> Any:
        """An async iterator over this executor's events (caudal.events;
        docs/events.md): ``types`` is None (all) or event type names;
        ``buffer`` bounds what a slow reader keeps (the rest is dropped and
        counted in the iterator's ``dropped``)."""

        return EventStream(self._engine, types, buffer)

    # ---------------------------------------------------------------- stats
    def _monitor_view(self) -> Any:
        """The internal read interface of the monitor modules
        (caudal._executor.stats, caudal._executor.tuner,
        caudal._executor.recorder, caudal.integrations.prometheus,
        caudal.integrations.plots): a
        :class:`caudal._executor.stats.MonitorView` of this executor now. They read
        nothing else of it (tests_py/monitor/test_monitor_boundary.py)."""

        return MonitorView(
            engine=self._engine,
            tuner=self._tuner,
            l2=self._l2,
            worker_pool=self._pool,
            own_pool=self._own_pool,
            spans=self._spans,
            recorder=getattr(self, "_recorder", None),
            apply=self._apply,
            sleep=self._sleep,
        )

    def get_optimization_stats(self) -> dict[str, dict[str, Any]]:
        """Measured statistics by section (see docs/executor.md for each key)."""

        # A dict of dicts that shows as tables in a notebook or at a prompt.
        return OptimizationStats(optimization_stats(self._monitor_view()))

    def get_performance_recommendations(self) -> list[dict[str, Any]]:
        """Recommendations derived from the measured stats, highest priority first."""

        return Recommendations(recommendations(self._monitor_view()))

    async def health(self) -> dict[str, Any]:
        """One report of every component, for a health endpoint or a probe.

        ``ok`` is False when a part is down or refusing work: the shared
        cache tier does not answer a PING (within its ``op_timeout_s``), a
        circuit breaker is open, or memory pressure is critical. Each section
        says what it saw: ``cache`` (L1 entries and the L2 tier's PING),
        ``breakers`` (those not closed), ``concurrency`` (keys with callers
        waiting), ``worker_pool`` (queue depth and rejections), ``events``
        (subscribers and drops), ``memory`` (RSS and pressure level)."""
        stats = self.get_optimization_stats()
        problems: list[str] = []
        l2 = None
        if self._l2 is not None:
            probe = getattr(self._l2, "health", None)
            l2 = await probe() if probe is not None else {"ok": None}
            if l2.get("ok") is False:
                problems.append(f"cache L2 unreachable: {l2.get('error')}")
        breakers = {
            name: b["state"]
            for name, b in stats["circuit_breaker"]["breakers"].items()
            if b["state"] != "closed"
        }
        problems += [f"circuit breaker {n!r} is open" for n, st in breakers.items() if st == "open"]
        waiting = {
            key: {"limit": k["limit"], "in_flight": k["in_flight"], "waiting": k["waiting"]}
            for key, k in stats["concurrency"]["keys"].items()
            if k["waiting"]
        }
        pool = stats["concurrency"]["worker_pool"]
        level = stats["memory"]["memory_pressure_level"]
        if level == "critical":
            problems.append("memory pressure is critical")
        events = stats.get("events") or {}
        # Degraded but still serving: reported, not counted against ``ok``
        # (a trace collector's outage is no reason to restart a service).
        warnings: list[str] = []
        tel = stats["telemetry"]
        if tel["last_flush_ok"] is False:
            warnings.append(f"span export failing: {tel['last_export_error']}")
        if tel["spans_dropped"]:
            warnings.append(f"{tel['spans_dropped']} spans dropped (full buffers)")
        return {
            "ok": not problems,
            "problems": problems,
            "warnings": warnings,
            "cache": {"l1_entries": stats["cache"]["size"], "l2": l2},
            "breakers": breakers,
            "concurrency": {
                "mode": stats["concurrency"]["mode"],
                "in_flight": stats["concurrency"]["in_flight"],
                "keys_waiting": waiting,
            },
            "worker_pool": None
            if pool is None
            else {
                k: pool.get(k) for k in ("workers", "active", "queued", "queue_size", "rejected")
            },
            "events": {k: events.get(k) for k in ("subscribers", "dropped")},
            "memory": {"usage_mb": stats["memory"]["usage_mb"], "pressure_level": level},
            "telemetry": {
                k: tel[k]
                for k in (
                    "recording",
                    "exporters",
                    "last_flush_seconds_ago",
                    "last_flush_ok",
                    "export_errors",
                    "spans_dropped",
                )
            },
        }

    def latency_buckets(self, step: Any = None) -> list[tuple[int, int, int]]:
        """The native latency histogram of ``step`` (a name or a Step; None:
        all steps): its non-empty buckets as ``(lower_ns, upper_ns, count)``."""
        name = getattr(step, "name", step)
        return self._engine.latency_buckets(name)

    async def run_optimization_analysis(self, dry_run: bool = False) -> list[dict[str, Any]]:
        """Run one automatic-optimization analysis now: the automatic
        recommendations, through the hysteresis rules (cooldowns, reversals,
        bounds; docs/monitoring.md), applied with the same validated swap as
        apply_optimization_config. What enable_automatic_optimization does
        every optimization_analysis_interval_seconds, here on demand (it
        runs whether or not that is on). Returns the changes made (with
        ``dry_run``: the changes it would make, nothing applied or counted),
        each ``{analysis, field, old, new, reversal, reason, time}``."""
        return self._tuner.analyse(self._monitor_view(), dry_run=dry_run)

    def concurrency_history(self) -> list[dict[str, Any]]:
        """Every recorded change of a concurrency limit, oldest first (the
        last 512 per key): key, time_s (monotonic clock), age_s, from, to
        (None: unlimited), in_flight and waiting when it changed."""
        return self._engine.limit_history()

    def reset_stats(self) -> None:
        self._engine.reset_stats()

    # ------------------------------------------------------ notebook, plots
    def start_latency_recorder(self, interval_s: float = 1.0) -> Any:
        """Sample latency percentiles and concurrency every ``interval_s`` on
        the running loop (a :class:`caudal._executor.recorder.LatencyRecorder`, kept
        for ``plot_latency`` / ``plot_concurrency``; ``.stop()`` ends it).
        A recorder already running is stopped first."""

        old = getattr(self, "_recorder", None)
        if old is not None:
            old.stop()
        self._recorder = LatencyRecorder(self, interval_s).start()
        return self._recorder

    def plot_latency(self, step: Any = None, **kwargs: Any) -> Any:
        """Latency histogram of ``step`` (a Step, a callable or a name; None:
        all steps) with p50/p95/p99, and percentiles over time if a latency
        recorder ran. A matplotlib Figure (``pip install 'caudal[plot]'``)."""

        name = step if step is None or isinstance(step, str) else _name_of(step)
        return plot_latency(self, name, **kwargs)

    def plot_concurrency(self, key: str | None = None, **kwargs: Any) -> Any:
        """Concurrency limits and executions in flight over time (a
        matplotlib Figure)."""

        return plot_concurrency(self, key, **kwargs)
