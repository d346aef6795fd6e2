"""Prometheus metrics for an ExecutorCore (``pip install 'caudal[prometheus]'``).

A prometheus-client collector that reads the executor's native counters and
histograms when Prometheus scrapes, and never before: the hot path does no
extra work for it (executions only ever update the native counters that
``get_optimization_stats()`` reads too)::

    from caudal.prometheus import register, start_http_server
    register(executor)                      # into prometheus_client's REGISTRY
    server = start_http_server(executor, port=9464)   # or serve /metrics here

Metric names (namespace ``caudal``; docs/monitoring.md lists each with its
labels): ``caudal_executions_total``, ``caudal_attempts_total``,
``caudal_retries_total``, ``caudal_timeouts_total``,
``caudal_cancelled_total``, ``caudal_cache_lookups_total``,
``caudal_step_latency_seconds`` (histogram), ``caudal_in_flight``,
``caudal_concurrency_limit``, ``caudal_concurrency_in_flight``,
``caudal_concurrency_waiting``, ``caudal_circuit_breaker_state``,
``caudal_circuit_breaker_opens_total``, ``caudal_cache_entries``,
``caudal_cache_evictions_total``, ``caudal_worker_pool_tasks``,
``caudal_worker_pool_finished_total``, ``caudal_events_dropped_total``,
``caudal_spans_total``, ``caudal_span_export_errors_total``,
``caudal_memory_rss_bytes``, ``caudal_memory_pressure_level``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client import start_http_server as _serve
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError as e:  # pragma: no cover - the dev requirements install it
    raise ImportError(
        "caudal.prometheus needs prometheus-client: pip install 'caudal[prometheus]'"
    ) from e

# Histogram bucket bounds (seconds): 1 µs to 100 s, three per decade.
BUCKETS = (*(float(f"{m}e{e}") for e in range(-6, 2) for m in ("1", "2.5", "5")), 100.0)
_BREAKER_STATE = {"closed": 0, "half_open": 1, "open": 2}
_PRESSURE = {"normal": 0, "elevated": 1, "critical": 2}


class CaudalCollector(Collector):
    """Exposes one executor's measurements as Prometheus metrics.

    ``const_labels`` are added to every sample (e.g. ``{"executor": "api"}``
    when several executors share a registry)."""

    def __init__(
        self,
        executor: Any,
        namespace: str = "caudal",
        const_labels: dict[str, str] | None = None,
    ) -> None:
        self._executor = executor
        self._ns = namespace
        self._const = dict(const_labels or {})

    def _name(self, name: str) -> str:
        return f"{self._ns}_{name}"

    def _family(self, cls: Any, name: str, doc: str, label_names: list[str]) -> Any:
        return cls(self._name(name), doc, labels=[*self._const, *label_names])

    def _values(self, *values: Any) -> list[str]:
        return [*self._const.values(), *(str(v) for v in values)]

    def collect(self) -> Iterator[Any]:
        ex = self._executor
        stats = ex.get_optimization_stats()
        steps = stats["execution"]["steps"]

        executions = self._family(
            CounterMetricFamily, "executions", "Finished executions by outcome",
            ["step", "outcome"],
        )  # fmt: skip
        attempts = self._family(CounterMetricFamily, "attempts", "Attempts started", ["step"])
        retries = self._family(CounterMetricFamily, "retries", "Retries started", ["step"])
        timeouts = self._family(
            CounterMetricFamily, "timeouts", "Attempts that timed out", ["step"]
        )
        cancelled = self._family(CounterMetricFamily, "cancelled", "Executions cancelled", ["step"])
        lookups = self._family(
            CounterMetricFamily, "cache_lookups", "Result-cache lookups by result",
            ["step", "result"],
        )  # fmt: skip
        in_flight = self._family(GaugeMetricFamily, "in_flight", "Executions in flight", ["step"])
        latency = self._family(
            HistogramMetricFamily, "step_latency_seconds",
            "End-to-end execution latency (all attempts)", ["step"],
        )  # fmt: skip
        for name, s in steps.items():
            executions.add_metric(self._values(name, "success"), s["successes"])
            executions.add_metric(self._values(name, "failure"), s["failures"])
            attempts.add_metric(self._values(name), s["attempts"])
            retries.add_metric(self._values(name), s["retries"])
            timeouts.add_metric(self._values(name), s["timeouts"])
            cancelled.add_metric(self._values(name), s["cancelled"])
            lookups.add_metric(self._values(name, "hit"), s["cache_hits"])
            lookups.add_metric(self._values(name, "miss"), s["cache_misses"])
            lookups.add_metric(self._values(name, "bypassed"), s["cache_bypassed"])
            in_flight.add_metric(self._values(name), s["in_flight"])
            buckets, _total = _cumulative(ex.latency_buckets(name))
            latency.add_metric(self._values(name), buckets, s["total_time_ms"] / 1000.0)
        yield from (executions, attempts, retries, timeouts, cancelled, lookups, in_flight, latency)

        conc = stats["concurrency"]
        limit = self._family(
            GaugeMetricFamily, "concurrency_limit",
            "Concurrency limit of a key (+Inf: unlimited)", ["key", "mode"],
        )  # fmt: skip
        key_in_flight = self._family(
            GaugeMetricFamily, "concurrency_in_flight", "Executions holding the key's permit",
            ["key"],
        )  # fmt: skip
        waiting = self._family(
            GaugeMetricFamily, "concurrency_waiting", "Executions waiting for the key's permit",
            ["key"],
        )  # fmt: skip
        for key, k in conc["keys"].items():
            value = math.inf if k["limit"] is None else k["limit"]
            limit.add_metric(self._values(key, k["mode"]), value)
            key_in_flight.add_metric(self._values(key), k["in_flight"])
            waiting.add_metric(self._values(key), k["waiting"])
        yield from (limit, key_in_flight, waiting)

        br = stats["circuit_breaker"]
        state = self._family(
            GaugeMetricFamily, "circuit_breaker_state",
            "Breaker state: 0 closed, 1 half-open, 2 open", ["breaker"],
        )  # fmt: skip
        opens = self._family(
            CounterMetricFamily, "circuit_breaker_opens", "Times the breaker opened", ["breaker"]
        )
        for name, b in br["breakers"].items():
            state.add_metric(self._values(name), _BREAKER_STATE.get(b["state"], -1))
            opens.add_metric(self._values(name), b["open_count"])
        yield from (state, opens)

        cache = stats["cache"]
        entries = self._family(GaugeMetricFamily, "cache_entries", "Entries in the L1 cache", [])
        entries.add_metric(self._values(), cache["size"])
        evictions = self._family(
            CounterMetricFamily, "cache_evictions", "L1 entries dropped by reason", ["reason"]
        )
        for reason in ("evictions", "expirations", "invalidations"):
            evictions.add_metric(self._values(reason), cache[reason])
        yield from (entries, evictions)

        pool = conc.get("worker_pool")
        if pool is not None:
            tasks = self._family(
                GaugeMetricFamily, "worker_pool_tasks", "Sync-step tasks by state", ["state"]
            )
            for st in ("active", "queued"):
                tasks.add_metric(self._values(st), pool.get(st, 0))
            done = self._family(
                CounterMetricFamily, "worker_pool_finished", "Sync-step tasks by outcome",
                ["outcome"],
            )  # fmt: skip
            for st in ("completed", "rejected", "timed_out", "cancelled", "withdrawn"):
                done.add_metric(self._values(st), pool.get(st, 0))
            yield from (tasks, done)

        events = stats.get("events")
        if events is not None:
            dropped = self._family(
                CounterMetricFamily, "events_dropped",
                "Events lost because a subscriber was slow", [],
            )  # fmt: skip
            dropped.add_metric(self._values(), events.get("dropped", 0))
            yield dropped

        tel = stats.get("telemetry")
        if tel is not None:
            spans = self._family(
                CounterMetricFamily, "spans",
                "Spans by fate: recorded, sampled_out, dropped (full buffer), exported",
                ["fate"],
            )  # fmt: skip
            for fate in ("recorded", "sampled_out", "dropped", "exported"):
                spans.add_metric(self._values(fate), tel.get(f"spans_{fate}", 0))
            errors = self._family(
                CounterMetricFamily, "span_export_errors", "Failed exporter calls", []
            )
            errors.add_metric(self._values(), tel.get("export_errors", 0))
            yield from (spans, errors)

        mem = stats["memory"]
        rss = self._family(GaugeMetricFamily, "memory_rss_bytes", "Process resident set size", [])
        rss.add_metric(self._values(), mem["usage_mb"] * 1024 * 1024)
        level = self._family(
            GaugeMetricFamily, "memory_pressure_level",
            "Memory pressure: 0 normal, 1 elevated, 2 critical", [],
        )  # fmt: skip
        level.add_metric(self._values(), _PRESSURE.get(mem["memory_pressure_level"], -1))
        yield from (rss, level)


def _cumulative(native: list[tuple[int, int, int]]) -> tuple[list[tuple[str, float]], int]:
    """Prometheus buckets (le, cumulative count) from the native histogram's
    non-empty (lower_ns, upper_ns, count) buckets. A native bucket goes to the
    first bound at or above its upper edge (native buckets are 1/16 of an
    octave wide, so a count is at most 4.4 % of its value off its bound)."""
    counts = [0] * len(BUCKETS)
    total = 0
    for _lower, upper, n in native:
        total += n
        upper_s = upper / 1e9
        for i, bound in enumerate(BUCKETS):
            if upper_s <= bound:
                counts[i] += n
                break
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(BUCKETS, counts, strict=True):
        running += n
        out.append((_fmt(bound), running))
    out.append(("+Inf", total))
    return out, total


def _fmt(bound: float) -> str:
    return f"{bound:.10g}"


def register(
    executor: Any,
    registry: CollectorRegistry | None = None,
    *,
    namespace: str = "caudal",
    const_labels: dict[str, str] | None = None,
) -> CaudalCollector:
    """Registers a :class:`CaudalCollector` for ``executor`` (default: into
    prometheus_client's global ``REGISTRY``) and returns it."""
    collector = CaudalCollector(executor, namespace, const_labels)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector


def start_http_server(
    executor: Any,
    port: int,
    addr: str = "127.0.0.1",
    *,
    namespace: str = "caudal",
    const_labels: dict[str, str] | None = None,
) -> Any:
    """Serves ``executor``'s metrics on ``http://addr:port/metrics`` from a
    background thread (prometheus-client's server, its own registry).
    Returns the server; ``server.shutdown()`` then ``server.server_close()``
    stop it. Loopback by default."""
    registry = CollectorRegistry(auto_describe=True)
    register(executor, registry, namespace=namespace, const_labels=const_labels)
    server, _thread = _serve(port, addr=addr, registry=registry)
    return server


__all__ = ["BUCKETS", "CaudalCollector", "register", "start_http_server"]
