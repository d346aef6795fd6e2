"""Read-outs of the native engine: get_optimization_stats() and
get_performance_recommendations(). Nothing here runs on the hot path; it
reads native counters when asked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caudal.executor_core import ExecutorCore

_PRIORITY = {"high": 0, "medium": 1, "low": 2}

# The regression detector's minimum executions in the recent window and in
# the baseline (cpp/caudal/monitor/regression_detector.h).
REGRESSION_MIN_EXECUTIONS = 20

# Rule thresholds (docs/monitoring.md, "Recommendations").
CACHE_NO_HIT_LOOKUPS = 100  # lookups of a step with no hit
BREAKER_OPENS = 3  # opens of one breaker since the last analysis
EVICTION_MIN_LOOKUPS = 100  # lookups since the last analysis
EVICTION_RATIO = 0.1  # evictions per lookup
EVICTION_HIT_RATE = 0.4
POOL_WAITS = 10  # sync steps that found the pool's queue full
TELEMETRY_OVERHEAD = 0.05  # export time over uptime


def optimization_stats(executor: ExecutorCore) -> dict[str, dict[str, Any]]:
    engine = executor._engine
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
            "l2": executor._l2.stats() if executor._l2 is not None else None,
        },
        "concurrency": {
            **engine.concurrency_stats(),
            "in_flight": engine.in_flight,
            # flujo's concurrency_level: executions in flight now
            "concurrency_level": engine.in_flight,
            # the pool running sync steps (None until the first one ran)
            "worker_pool": executor._pool.stats() if executor._pool is not None else None,
        },
        "circuit_breaker": _breaker_section(engine, cfg),
        "error_handling": _error_section(engine, cfg, total),
        "events": engine.event_stats(),
        # Process CPU (docs/monitoring.md, "CPU usage").
        "system": {
            **engine.cpu_stats(),
            "cpu_usage_threshold_percent": cfg.cpu_usage_threshold_percent,
        },
        "automatic_optimization": executor._tuner.stats(cfg),
        "telemetry": _telemetry_section(executor, cfg),
    }


def _telemetry_section(executor: ExecutorCore, cfg: Any) -> dict[str, Any]:
    from caudal.telemetry import flusher_stats

    return {
        "enabled": cfg.enable_optimized_telemetry,
        "batch_size": cfg.telemetry_batch_size,
        "flush_interval_seconds": cfg.telemetry_flush_interval_seconds,
        "buffer_size": cfg.telemetry_buffer_size,
        # recording, sampling_rate, spans_recorded/_sampled_out/_dropped/
        # _drained/_buffered, thread_buffers (native)
        **executor._engine.span_stats(),
        **flusher_stats(executor._spans),
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


def recommendations(executor: ExecutorCore) -> list[dict[str, Any]]:
    """Every rule over the measured stats (computed now). Counters that grow
    forever (evictions, queue waits, breaker opens) are judged by what
    happened since the previous optimization analysis."""
    stats = optimization_stats(executor)
    cfg = executor._engine.config
    tuner = executor._tuner
    return recommend(stats, cfg, tuner.marks, executor._own_pool, unpaid_raise(tuner, cfg, stats))


def unpaid_raise(tuner: Any, cfg: Any, stats: dict[str, Any]) -> dict[str, Any] | None:
    """The tuner's last raise of cache_max_size when it did not pay: the hit
    rate since it is no better than the one that led to it, so the next
    analysis holds a raise (caudal._tuner, "a raise must pay"). ``from``,
    ``size``, ``rate`` (before) and ``now`` (since); None otherwise."""
    return tuner.unpaid_raise(cfg.cache_max_size, cache_hit_rate(stats, tuner.marks))


def cache_hit_rate(stats: dict[str, Any], marks: dict[str, Any] | None) -> float | None:
    """Result-cache hits per lookup since the last analysis (None: no lookups)."""
    cache, marks = stats["cache"], marks or {}
    hits = _since(cache.get("hits", 0), marks.get("cache_hits"))
    lookups = hits + _since(cache.get("misses", 0), marks.get("cache_misses"))
    return hits / lookups if lookups else None


def counter_marks(stats: dict[str, Any]) -> dict[str, Any]:
    """The cumulative counters the rules take differences of."""
    cache = stats["cache"]
    pool = stats["concurrency"]["worker_pool"] or {}
    return {
        "cache_hits": cache.get("hits", 0),
        "cache_misses": cache.get("misses", 0),
        "cache_evictions": cache.get("evictions", 0),
        "pool_waits": pool.get("room_waits", 0) + pool.get("rejected", 0),
        "export_seconds": (stats.get("telemetry") or {}).get("export_seconds"),
        "uptime_seconds": (stats.get("telemetry") or {}).get("uptime_seconds"),
        "breaker_opens": {
            n: b["open_count"] for n, b in stats["circuit_breaker"]["breakers"].items()
        },
    }


def _dropped(cache: dict[str, Any], cfg: Any) -> tuple[str, str] | None:
    """What the result cache dropped since the start ("evicted 300 entries")
    and what would keep entries longer ("If they repeat, ... keeps them; if
    not, "); None when it never dropped one."""
    ev = cache.get("evictions", 0)
    exp = cache.get("expirations", 0)
    inv = cache.get("invalidations", 0)
    if not (ev or exp or inv):
        return None
    what, keep = [], []
    if ev:
        what.append(f"evicted {ev} entries")
        bound = f"cache_max_size (now {cfg.cache_max_size})"
        if cfg.cache_max_bytes:
            bound += f" or cache_max_bytes (now {cfg.cache_max_bytes})"
        keep.append(f"a larger {bound}")
    if exp:
        what.append(f"let {exp} expire")
        keep.append("a longer cache_ttl_seconds (or Step(cache_ttl_s=...))")
    if inv:
        what.append(f"invalidated {inv}")
    advice = f"If they repeat, {' or '.join(keep)} keeps them; if not, " if keep else "If not, "
    return ", ".join(what), advice


def _now(settings: dict[str, Any] | None, field: str) -> str:
    """ " (now 5)": the step's current value of ``field``, when known."""
    value = (settings or {}).get(field)
    return "" if value is None else f" (now {value:g})"


_SLOW_BOTH = "Set a timeout_s on the step, or cache it if its inputs repeat."


def _slow_advice(
    name: str, s: dict[str, Any], settings: dict[str, Any] | None, cfg: Any, cache: dict[str, Any]
) -> str:
    """What a slow step lacks, from its settings: a timeout_s, caching.
    Unknown settings: both."""
    if settings is None:
        return _SLOW_BOTH
    timeout = settings["timeout_s"]
    cached = settings["cache"] is True or (
        settings["cache"] is None and cfg.enable_cache_optimization
    )
    if timeout is None and not cached:
        return _SLOW_BOTH
    why = cache.get("uncacheable_steps", {}).get(name) if cached else None
    has = []
    if timeout is not None:
        has.append(f"has timeout_s={timeout:g}")
    if cached and why is None:
        lookups = s["cache_hits"] + s["cache_misses"]
        rate = f" ({s['cache_hits'] / lookups:.0%} hit rate)" if lookups else ""
        has.append(f"is cached{rate}")
    it = f"It {' and '.join(has)}; " if has else ""
    if why is not None:  # cache on, but the step has no cache identity
        cache_it = f"its results are not cached ({why}): give it a cache_key if its inputs repeat"
    else:
        cache_it = "cache it if its inputs repeat"
    if timeout is None:
        tail = "set a timeout_s on the step" + (f"; {cache_it}" if why is not None else "")
    elif not cached or why is not None:
        tail = cache_it
    else:
        return (
            f"It already {' and '.join(has)}: its executions (the cache misses) are slow "
            "themselves. Look at the step or its backend, or raise "
            "slow_execution_threshold_ms if this latency is expected."
        )
    return f"{it}{tail}."


def _since(now: int, mark: int | None) -> int:
    # A counter below its mark was reset (or is another pool's): count all.
    return now if mark is None or now < mark else now - mark


def recommend(
    stats: dict[str, Any],
    cfg: Any,
    marks: dict[str, Any] | None,
    own_pool: bool = True,
    unpaid: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The rules (docs/monitoring.md has the table). ``marks``: the counters
    at the previous analysis (None: since the start). Automatic ones carry
    ``action = {"field", "value"}``: what automatic optimization sets.
    ``unpaid``: the last raise of cache_max_size when it did not raise the
    hit rate (:func:`unpaid_raise`); evictions then call for no raise."""
    marks = marks or {}
    now = counter_marks(stats)
    recs: list[dict[str, Any]] = []

    def add(description: str, impact: str, priority: str, automatic: bool, **extra: Any) -> None:
        recs.append(
            {
                "description": description,
                "impact": impact,
                "priority": priority,
                "automatic": automatic,
                **extra,
            }
        )

    def action(field: str, value: Any) -> dict[str, Any]:
        return {"field": field, "value": value, "current": getattr(cfg, field)}

    ex = stats["execution"]
    dropped = _dropped(stats["cache"], cfg)
    for name, s in ex["steps"].items():
        n = s["executions"]
        lookups = s["cache_hits"] + s["cache_misses"]
        if lookups >= CACHE_NO_HIT_LOOKUPS and s["cache_hits"] == 0 and s["shared_flights"] == 0:
            if dropped is None:  # nothing was dropped: every miss was a new input
                text = (
                    f"Step {name!r}: {lookups} cache lookups and not one hit: its inputs do "
                    "not repeat. Step(cache=False) saves hashing the input and storing the "
                    "output."
                )
            else:  # or inputs that come back only once dropped (LRU: a cycle)
                what, keep = dropped
                text = (
                    f"Step {name!r}: {lookups} cache lookups and not one hit, while the cache "
                    f"{what}: either its inputs do not repeat, or they come back only after "
                    f"the cache dropped them. {keep}Step(cache=False) saves hashing the "
                    "input and storing the output."
                )
            add(text, "low", "low", False, step=name)
        if n == 0:
            continue
        # What the step was given (None: unknown, e.g. stats built by hand).
        settings = s.get("settings")
        if s["p95_ms"] > cfg.slow_execution_threshold_ms and n >= 5:
            add(
                f"Step {name!r}: p95 latency {s['p95_ms']:.1f} ms is above "
                f"slow_execution_threshold_ms ({cfg.slow_execution_threshold_ms:g} ms). "
                + _slow_advice(name, s, settings, cfg, stats["cache"]),
                "high",
                "high",
                False,
                step=name,
            )
        attempts = s["attempts"]
        if attempts >= 10 and s["errors"] / attempts > 0.1:
            rate = s["errors"] / attempts
            if s["retries"] and s["recovered"] == 0:
                add(
                    f"Step {name!r}: {rate:.0%} of attempts fail and retries never recovered "
                    f"({s['retries']} retries). Retrying this error only adds load; lower "
                    f"max_retries{_now(settings, 'max_retries')} or fix the cause.",
                    "medium",
                    "high",
                    False,
                    step=name,
                )
            elif not cfg.enable_circuit_breaker and (settings or {}).get("breaker") is not False:
                # A step with breaker=False opted out: the config's switch
                # would not give it one.
                add(
                    f"Step {name!r}: {rate:.0%} of attempts fail. Enable the circuit breaker "
                    "so a failing backend is not hammered.",
                    "medium",
                    "medium",
                    True,
                    step=name,
                    action=action("enable_circuit_breaker", True),
                )
        if s["timeouts"] and s["timeouts"] / attempts > 0.05:
            add(
                f"Step {name!r}: {s['timeouts']} of {attempts} attempts timed out. Raise the "
                f"step's timeout_s{_now(settings, 'timeout_s')} or lower concurrency against "
                "its backend.",
                "medium",
                "medium",
                False,
                step=name,
            )
    for name, t in ex["regressions"].items():
        growth = t["recent_p95_ms"] / t["baseline_p95_ms"] - 1 if t["baseline_p95_ms"] else 0.0
        add(
            f"Step {name!r}: latency regressed — p95 {t['recent_p95_ms']:.3f} ms over the "
            f"last {t['recent_window_s']:.0f} s against {t['baseline_p95_ms']:.3f} ms before "
            f"(+{growth:.0%}, threshold {cfg.performance_degradation_threshold:.0%}). Look "
            "for what changed in the step or its backend.",
            "high",
            "high",
            False,
            step=name,
        )

    breakers = stats["circuit_breaker"]["breakers"]
    for name, b in breakers.items():
        opened = _since(b["open_count"], marks.get("breaker_opens", {}).get(name))
        if opened >= BREAKER_OPENS:
            add(
                f"Circuit breaker {name!r} opened {opened} times"
                f"{' since the last analysis' if marks else ''}: its backend keeps failing "
                "after recovery. Fix the backend, or raise "
                "circuit_breaker_recovery_timeout_seconds "
                f"({cfg.circuit_breaker_recovery_timeout_seconds:g} s) so it gets longer to "
                "recover.",
                "high",
                "high",
                False,
                key=name,
            )

    conc = stats["concurrency"]
    max_limit = cfg.concurrency_max_limit
    for key, k in conc["keys"].items():
        if (
            k["mode"] == "adaptive"
            and k["limit"] >= max_limit
            and (k["waiting"] > 0 or k["in_flight"] >= k["limit"])
        ):
            add(
                f"Concurrency key {key!r}: the adaptive limit is pinned at "
                f"concurrency_max_limit={max_limit} with {k['in_flight']} in flight and "
                f"{k['waiting']} waiting: the backend has not pushed back yet. Raise "
                "concurrency_max_limit.",
                "medium",
                "medium",
                True,
                key=key,
                action=action("concurrency_max_limit", max_limit * 2),
            )
            break  # one field: one recommendation is enough

    pool = conc["worker_pool"]
    if pool is not None:
        waits = _since(now["pool_waits"], marks.get("pool_waits"))
        if waits >= POOL_WAITS:
            add(
                f"Worker pool: {waits} sync-step submissions found its queue "
                f"(worker_pool_queue_size={cfg.worker_pool_queue_size}) full"
                f"{' since the last analysis' if marks else ''}. Raise worker_pool_queue_size, "
                "or worker_pool_size if the steps are I/O bound.",
                "medium",
                "medium",
                own_pool,
                **(
                    {"action": action("worker_pool_queue_size", cfg.worker_pool_queue_size * 2)}
                    if own_pool
                    else {}
                ),
            )

    mem = stats["memory"]
    level = mem["memory_pressure_level"]
    cache = stats["cache"]
    if cache.get("enabled"):
        hits = _since(now["cache_hits"], marks.get("cache_hits"))
        lookups = hits + _since(now["cache_misses"], marks.get("cache_misses"))
        evictions = _since(now["cache_evictions"], marks.get("cache_evictions"))
        evicting = (
            level == "normal"
            and lookups >= EVICTION_MIN_LOOKUPS
            and evictions >= EVICTION_RATIO * lookups
            and hits >= EVICTION_HIT_RATE * lookups
        )
        seen = (
            f"Result cache: {evictions} evictions for {lookups} lookups with a "
            f"{hits / max(lookups, 1):.0%} hit rate{' since the last analysis' if marks else ''}"
        )
        if evicting and unpaid is not None:
            # The raise the rule asked for was made and bought nothing: the
            # same evidence no longer says the working set does not fit.
            add(
                f"{seen}, but the last raise of cache_max_size ({unpaid['from']} -> "
                f"{unpaid['size']}) did not raise the hit rate ({unpaid['rate']:.0%} before, "
                f"{unpaid['now']:.0%} since): the inputs it evicts do not come back while "
                f"{unpaid['size']} entries would still hold them. A larger cache costs memory "
                f"and buys nothing; cache_max_size={unpaid['from']} did about as well.",
                "low",
                "low",
                False,
            )
        elif evicting:
            add(
                f"{seen}: the working set does not fit in cache_max_size={cfg.cache_max_size}. "
                "Raise cache_max_size.",
                "medium",
                "medium",
                True,
                action=action("cache_max_size", cfg.cache_max_size * 2),
            )
    if level != "normal":
        shrunk = "; ".join(mem["shrunk"]) or "nothing left to shrink"
        add(
            f"Memory pressure ({level}): RSS {mem['usage_mb']:.0f} MB against "
            f"memory_pressure_threshold_mb={mem['memory_pressure_threshold_mb']:g}. "
            f"caudal shrank: {shrunk}. Lower cache_max_size / cache_max_bytes, or raise "
            "the threshold if this much memory is expected.",
            "high" if level == "critical" else "medium",
            "high" if level == "critical" else "medium",
            True,
            action=action("cache_max_size", max(1, cfg.cache_max_size // 2)),
        )

    system = stats.get("system") or {}
    cpu = system.get("cpu_percent", 0.0)
    if system.get("cpu_window_s", 0.0) > 0 and cpu > cfg.cpu_usage_threshold_percent:
        add(
            f"CPU: the process used {cpu:.0f}% of its {system.get('allowed_cpus', 1)} CPUs "
            f"({system.get('cpu_percent_per_core', 0.0):.0f}% of one core) over the last "
            f"{system.get('cpu_window_s', 0.0):.0f} s, above cpu_usage_threshold_percent="
            f"{cfg.cpu_usage_threshold_percent:g}. CPU-bound steps compete for the GIL: run them "
            "in processes (backend='ray'), or lower their concurrency.",
            "medium",
            "medium",
            False,
        )

    tele = stats.get("telemetry") or {}
    export_s = tele.get("export_seconds")
    uptime = tele.get("uptime_seconds")
    if export_s is not None and uptime and marks.get("uptime_seconds") is not None:
        # Since the last analysis: a halved rate shows at the next one.
        if uptime > marks["uptime_seconds"] and export_s >= (marks["export_seconds"] or 0.0):
            export_s -= marks["export_seconds"] or 0.0
            uptime -= marks["uptime_seconds"]
    rate = getattr(cfg, "telemetry_sampling_rate", None)
    if (
        export_s is not None
        and uptime
        and rate is not None
        and export_s > TELEMETRY_OVERHEAD * uptime
    ):
        add(
            f"Telemetry: exporters took {export_s:.2f} s of {uptime:.0f} s "
            f"({export_s / uptime:.0%}, {tele.get('spans_exported', 0)} spans). Halve "
            f"telemetry_sampling_rate ({rate:g}).",
            "medium",
            "medium",
            True,
            action=action("telemetry_sampling_rate", rate / 2),
        )
    recs.sort(key=lambda r: _PRIORITY.get(r["priority"], 9))
    return recs
