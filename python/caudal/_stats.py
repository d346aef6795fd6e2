"""Read-outs of the native engine: get_optimization_stats() and
get_performance_recommendations(). Nothing here runs on the hot path; it
reads native counters when asked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caudal.executor_core import ExecutorCore

_PRIORITY = {"high": 0, "medium": 1, "low": 2}


def optimization_stats(executor: ExecutorCore) -> dict[str, dict[str, Any]]:
    engine = executor._engine
    cfg = engine.config
    total = engine.total_stats()
    steps = engine.step_stats()
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
        },
        "cache": {
            "enabled": cfg.enable_cache_optimization,
            **engine.cache_stats(),
            "l2": executor._l2.stats() if executor._l2 is not None else None,
        },
        "concurrency": {
            **engine.concurrency_stats(),
            "in_flight": engine.in_flight,
            # seed 001's concurrency_level: executions in flight now
            "concurrency_level": engine.in_flight,
            # the pool running sync steps (None until the first one ran)
            "worker_pool": executor._pool.stats() if executor._pool is not None else None,
        },
        "circuit_breaker": _breaker_section(engine, cfg),
        "error_handling": _error_section(engine, cfg, total),
        "events": engine.event_stats(),
        "telemetry": _telemetry_section(executor, cfg),
    }


def _telemetry_section(executor: ExecutorCore, cfg: Any) -> dict[str, Any]:
    flusher = executor._spans
    exported = (
        flusher.stats()
        if flusher is not None
        else {
            "exporters": [],
            "parent_capture": False,
            "spans_exported": 0,
            "batches_exported": 0,
            "export_errors": 0,
            "last_export_error": None,
            "export_seconds": 0.0,
            "uptime_seconds": 0.0,
            "last_flush_seconds_ago": None,
            "last_flush_ok": None,
        }
    )
    return {
        "enabled": cfg.enable_optimized_telemetry,
        "batch_size": cfg.telemetry_batch_size,
        "flush_interval_seconds": cfg.telemetry_flush_interval_seconds,
        "buffer_size": cfg.telemetry_buffer_size,
        # recording, sampling_rate, spans_recorded/_sampled_out/_dropped/
        # _drained/_buffered, thread_buffers (native)
        **executor._engine.span_stats(),
        **exported,
    }


_STATE_ORDER = {"open": 0, "half_open": 1, "closed": 2}


def _breaker_section(engine: Any, cfg: Any) -> dict[str, Any]:
    breakers = engine.breaker_stats()
    worst = min((b["state"] for b in breakers), key=_STATE_ORDER.__getitem__, default="closed")
    return {
        "enabled": cfg.enable_circuit_breaker,
        # Seed 000 compares with 'OPEN': the worst state over all breakers.
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
    engine = executor._engine
    cfg = engine.config
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

    for name, s in engine.step_stats().items():
        n = s["executions"]
        if n == 0:
            continue
        if s["p95_ms"] > cfg.slow_execution_threshold_ms and n >= 5:
            add(
                f"Step {name!r}: p95 latency {s['p95_ms']:.1f} ms is above "
                f"slow_execution_threshold_ms ({cfg.slow_execution_threshold_ms:g} ms). "
                "Set a timeout_s on the step, or cache it if its inputs repeat.",
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
                    "max_retries or fix the cause.",
                    "medium",
                    "high",
                    False,
                    step=name,
                )
            elif not cfg.enable_circuit_breaker:
                add(
                    f"Step {name!r}: {rate:.0%} of attempts fail. Enable the circuit breaker "
                    "so a failing backend is not hammered.",
                    "medium",
                    "medium",
                    True,
                    step=name,
                )
        if s["timeouts"] and s["timeouts"] / attempts > 0.05:
            add(
                f"Step {name!r}: {s['timeouts']} of {attempts} attempts timed out. Raise the "
                "step's timeout_s or lower concurrency against its backend.",
                "medium",
                "medium",
                False,
                step=name,
            )
    mem = engine.memory_stats()
    level = mem["memory_pressure_level"]
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
        )
    recs.sort(key=lambda r: _PRIORITY.get(r["priority"], 9))
    return recs
