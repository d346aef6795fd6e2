"""get_optimization_stats(): each section's keys, in order (each section is
one native snapshot and one converter, cpp/caudal/monitor/stats_sections.h;
the public shape must not move)."""

from caudal import ExecutorCore, OptimizationConfig, Step

STEP_ROW = [
    "executions", "successes", "failures", "attempts", "retries", "errors", "recovered",
    "timeouts", "fallbacks", "cancelled", "slow_executions", "cache_hits", "rejected",
    "cache_misses", "uncacheable", "shared_flights", "cache_bypassed", "in_flight",
    "avg_time_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "min_ms", "total_time_ms",
]  # fmt: skip

SECTIONS = {
    "memory": [
        "usage_mb", "memory_pressure_level", "memory_pressure_threshold_mb",
        "object_pool_utilization", "object_pool", "shrunk", "pressure_changes",
        "rss_readings", "rss_read_errors", "rss_interval_s", "object_pool_enabled",
        "memory_optimization_enabled",
    ],
    "execution": [
        "total_executions", "successes", "failures", "in_flight", "avg_time_ms", "p50_ms",
        "p95_ms", "p99_ms", "max_ms", "slow_executions", "slow_execution_threshold_ms",
        "timeouts", "fallbacks", "cancelled", "step_analysis", "step_names", "steps",
        "regressions",
        "regression_detection",
    ],
    "cache": [
        "enabled", "hits", "misses", "hit_rate", "inserts", "evictions", "expirations",
        "invalidations", "rejections", "stale", "size", "bytes", "max_size", "max_bytes",
        "shards", "uncacheable", "uncacheable_reasons", "uncacheable_steps", "l2",
    ],
    "concurrency": [
        "max_concurrent_executions", "slots_in_use", "waiting", "acquired", "waited",
        "cancelled_waits", "max_waiting", "mode", "keys", "in_flight", "concurrency_level",
        "worker_pool",
    ],
    "telemetry": [
        "enabled", "batch_size", "flush_interval_seconds", "buffer_size", "recording",
        "sampling_rate", "spans_recorded", "spans_sampled_out", "spans_dropped",
        "spans_drained", "spans_buffered", "thread_buffers", "exporters", "parent_capture",
        "spans_exported", "batches_exported", "export_errors", "last_export_error",
        "export_seconds", "uptime_seconds", "last_flush_seconds_ago", "last_flush_ok",
    ],
    "system": [
        "cpu_percent", "cpu_percent_per_core", "allowed_cpus", "cpu_window_s", "cpu_seconds",
        "cpu_readings", "cpu_read_errors", "cpu_usage_threshold_percent",
    ],
}  # fmt: skip

TREND = [
    "regressed", "evaluated", "recent_p95_ms", "baseline_p95_ms", "recent_executions",
    "baseline_executions", "recent_window_s", "baseline_window_s", "throughput_per_s",
    "regressed_since_s", "regressions",
]  # fmt: skip

ADAPTIVE_KEY = [
    "mode", "limit", "in_flight", "waiting", "acquired", "waited", "cancelled_waits",
    "max_waiting", "limit_changes", "estimated_limit", "baseline_rtt_ms",
    "last_window_rtt_ms", "windows", "samples", "drops", "slow_start", "dormant",
]  # fmt: skip


async def test_section_keys_in_order():
    ex = ExecutorCore(OptimizationConfig(enable_concurrency_optimization=True))

    async def double(x):
        return 2 * x

    await ex.execute(Step(double, name="double", max_retries=1), 2)
    stats = ex.get_optimization_stats()
    for name, keys in SECTIONS.items():
        assert list(stats[name]) == keys, name
    row = stats["execution"]["steps"]["double"]
    assert list(row) == [*STEP_ROW, "settings", "trend"]
    assert row["settings"] == {
        "timeout_s": None,
        "cache": None,
        "max_retries": 1,
        "breaker": "double",
    }
    assert row["trend"] is None or list(row["trend"]) == TREND
    assert list(stats["execution"]["regression_detection"]) == [
        "enabled", "window_seconds", "degradation_threshold", "min_executions", "checkpoints",
    ]  # fmt: skip
    assert stats["execution"]["regression_detection"]["min_executions"] == 20
    assert stats["execution"]["step_analysis"].keys() == {
        "size",
        "capacity",
        "analyses",
        "evictions",
    }
    assert list(stats["concurrency"]["keys"]["double"]) == ADAPTIVE_KEY
    assert stats["concurrency"]["mode"] == "adaptive"
    assert stats["concurrency"]["in_flight"] == stats["concurrency"]["concurrency_level"] == 0
    assert stats["cache"]["l2"] is None and stats["concurrency"]["worker_pool"] is None
    # The per-part read-outs are the same converters' output.
    engine = ex._engine
    assert list(engine.step_stats()["double"]) == [*STEP_ROW, "settings"]
    assert list(engine.total_stats()) == STEP_ROW
    assert list(engine.cache_stats()) == SECTIONS["cache"][1:-1]
    assert list(engine.concurrency_stats()) == SECTIONS["concurrency"][:-3]
    assert list(engine.memory_stats()) == SECTIONS["memory"][:-2]
    assert stats["execution"]["total_executions"] == engine.total_stats()["executions"] == 1
