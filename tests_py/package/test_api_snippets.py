"""The ExecutorCore / OptimizationConfig snippets of flujo's troubleshooting
guide and optimization guide, run as written with caudal's import. Only the
import line differs; `while True` monitoring loops run one iteration; print
output is not checked, the absence of errors is."""

import asyncio

import pytest

from caudal._executor.core import ExecutorCore, OptimizationConfig


async def test_step(x):
    return x


test_step.__test__ = False  # a step, not a pytest test
test_data = {"records": [1, 2, 3]}
step = test_step
data = test_data
batch_process_step = test_step
batch_data = test_data
process_batch_step = test_step
api_step = test_step
data_batches = [[1], [2]]


def seed_001_configs():
    """Every OptimizationConfig construction in flujo's optimization guide."""
    return [
        OptimizationConfig(),
        OptimizationConfig(
            enable_object_pool=True,
            enable_step_optimization=True,
            enable_algorithm_optimization=True,
            max_concurrent_executions=10,
        ),
        OptimizationConfig(
            enable_object_pool=True,
            object_pool_max_size=50,
            object_pool_cleanup_threshold=0.9,
            enable_context_optimization=True,
            enable_memory_optimization=True,
        ),
        OptimizationConfig(
            enable_step_optimization=True,
            enable_algorithm_optimization=True,
            enable_concurrency_optimization=True,
            max_concurrent_executions=None,
        ),
        OptimizationConfig(
            enable_optimized_telemetry=True,
            enable_performance_monitoring=True,
            telemetry_batch_size=10,
            telemetry_flush_interval_seconds=30.0,
        ),
        OptimizationConfig(
            enable_optimized_error_handling=True,
            enable_circuit_breaker=True,
            error_cache_size=50,
            circuit_breaker_failure_threshold=10,
            circuit_breaker_recovery_timeout_seconds=60,
        ),
        OptimizationConfig(
            enable_cache_optimization=False,
            cache_compression=False,
            cache_ttl_seconds=7200,
            cache_max_size=500,
        ),
        OptimizationConfig(
            slow_execution_threshold_ms=1000.0,
            memory_pressure_threshold_mb=500.0,
            cpu_usage_threshold_percent=80.0,
        ),
        OptimizationConfig(
            object_pool_max_size=100,
            object_pool_cleanup_threshold=0.8,
            max_concurrent_executions=20,
            telemetry_batch_size=50,
            telemetry_flush_interval_seconds=60.0,
            enable_cache_optimization=True,
            cache_max_size=1000,
            cache_ttl_seconds=3600,
        ),
        OptimizationConfig(
            object_pool_max_size=20,
            object_pool_cleanup_threshold=0.7,
            cache_max_size=200,
            cache_compression=True,
            memory_pressure_threshold_mb=200.0,
        ),
        OptimizationConfig(
            enable_step_optimization=True,
            enable_algorithm_optimization=True,
            telemetry_batch_size=5,
            telemetry_flush_interval_seconds=10.0,
            circuit_breaker_failure_threshold=5,
            circuit_breaker_recovery_timeout_seconds=30,
        ),
        OptimizationConfig(
            enable_automatic_optimization=True,
            optimization_analysis_interval_seconds=60.0,
            performance_degradation_threshold=0.2,
        ),
        OptimizationConfig(
            object_pool_max_size=100,
            enable_memory_optimization=True,
            enable_step_optimization=True,
            enable_algorithm_optimization=True,
            max_concurrent_executions=10,
            enable_cache_optimization=True,
            cache_max_size=1000,
        ),
        OptimizationConfig(
            enable_step_optimization=True,
            enable_algorithm_optimization=True,
            telemetry_batch_size=5,
            telemetry_flush_interval_seconds=10.0,
            circuit_breaker_failure_threshold=3,
            circuit_breaker_recovery_timeout_seconds=30,
            object_pool_max_size=20,
            cache_max_size=100,
        ),
        OptimizationConfig(
            enable_performance_monitoring=True,
            enable_optimized_telemetry=True,
            enable_automatic_optimization=True,
        ),
        OptimizationConfig(object_pool_max_size=20, object_pool_cleanup_threshold=0.6),
        OptimizationConfig(
            enable_circuit_breaker=True,
            circuit_breaker_failure_threshold=5,
            circuit_breaker_recovery_timeout_seconds=30,
        ),
        OptimizationConfig(telemetry_batch_size=50, telemetry_flush_interval_seconds=60.0),
    ]


@pytest.mark.parametrize("config", seed_001_configs())
async def test_seed_001_configs_are_valid_and_run(config):
    assert config.validate() == []
    executor = ExecutorCore(optimization_config=config)
    result = await executor.execute(step, data, context=None)
    assert result.success


async def test_seed_001_quick_start_monitoring_export_and_recommendations(tmp_path):
    executor = ExecutorCore(optimization_config=OptimizationConfig())
    for batch in data_batches:
        await executor.execute(process_batch_step, batch)

    async def handle_request(request_data):
        return await executor.execute(api_step, request_data)

    await handle_request({"q": 1})
    result, metrics = await executor.execute_with_monitoring(batch_process_step, batch_data)
    print(f"Execution time: {metrics['execution_time_ms']}ms")
    print(f"Memory usage: {metrics['memory_usage_mb']}MB")
    current_config = executor.optimization_config
    print(f"Current config: {current_config.to_dict()}")
    stats = executor.get_optimization_stats()
    print(f"Memory usage: {stats['memory']['usage_mb']}MB")
    print(f"Cache hit rate: {stats['cache']['hit_rate']:.2%}")
    print(f"Average execution time: {stats['execution']['avg_time_ms']}ms")
    recommendations = executor.get_performance_recommendations()
    for rec in recommendations:
        print(f"Recommendation: {rec['description']}")
        print(f"Impact: {rec['impact']}")
        print(f"Priority: {rec['priority']}")
        print("automatic" if rec["automatic"] else "manual")
    config_json = executor.export_config(format="json")
    path = tmp_path / "optimization_config.json"
    with open(path, "w") as f:
        f.write(config_json)
    with open(path) as f:
        config_data = f.read()
    await executor.import_config(config_data, format="json")
    config = OptimizationConfig()
    config.enable_memory_optimization = True
    config.max_concurrent_executions = 5
    config.enable_optimized_error_handling = True
    issues = config.validate()
    assert not issues


async def test_seed_000_validate_and_repair():
    config = OptimizationConfig(object_pool_max_size=0, telemetry_batch_size=0)
    issues = config.validate()
    if issues:
        if "object_pool_max_size must be positive" in issues:
            config.object_pool_max_size = 10
        if "telemetry_batch_size must be positive" in issues:
            config.telemetry_batch_size = 10
        issues = config.validate()
    assert not issues


async def test_seed_000_update_config_and_debug_helpers():
    executor = ExecutorCore()

    async def update_config(executor, new_config):
        issues = new_config.validate()
        if issues:
            return False
        await executor.apply_optimization_config(new_config)
        current_config = executor.optimization_config
        print(f"Configuration updated: {current_config.to_dict()}")
        return True

    safe_config = OptimizationConfig(
        object_pool_max_size=20,
        object_pool_cleanup_threshold=0.7,
        cache_max_size=100,
        error_cache_size=20,
        max_concurrent_executions=4,
        telemetry_batch_size=50,
        telemetry_flush_interval_seconds=60.0,
        circuit_breaker_failure_threshold=5,
        circuit_breaker_recovery_timeout_seconds=30,
    )
    assert await update_config(executor, safe_config)
    assert executor.optimization_config.max_concurrent_executions == 4

    def debug_configuration(config):
        issues = []
        if config.object_pool_max_size > 1000:
            issues.append("Object pool size may be too large")
        if config.max_concurrent_executions and config.max_concurrent_executions > 50:
            issues.append("Concurrency may be too high")
        return issues

    assert debug_configuration(safe_config) == []

    # The troubleshooting guide's Debugging Tools: profile_optimizations, debug_memory_usage,
    # debug_error_handling.
    import time

    times = []
    for _ in range(20):
        start_time = time.perf_counter()
        await executor.execute(test_step, test_data)
        times.append((time.perf_counter() - start_time) * 1000)

    import gc

    import psutil

    memory = psutil.virtual_memory()
    print(f"  System memory usage: {memory.percent:.1f}%")
    stats = executor.get_optimization_stats()
    if "memory" in stats:
        memory_stats = stats["memory"]
        print(f"  Object pool utilization: {memory_stats.get('object_pool_utilization', 'N/A')}")
        print(f"  Memory usage: {memory_stats.get('usage_mb', 'N/A')}MB")
    gc.collect()
    if "error_handling" in stats:
        error_stats = stats["error_handling"]
        print(f"  Error rate: {error_stats.get('error_rate', 'N/A')}")
        print(f"  Cached error patterns: {error_stats.get('cached_patterns', 'N/A')}")
    if "circuit_breaker" in stats:
        cb_stats = stats["circuit_breaker"]
        print(f"  Circuit breaker state: {cb_stats.get('state', 'N/A')}")
    # The troubleshooting guide expects this to raise; in flujo's API (and caudal's) a step's
    # failure is a result. docs/executor.md explains the difference.
    result = await executor.execute(lambda: 1 / 0, None)
    assert not result.success and isinstance(result.error, ZeroDivisionError)


async def test_seed_000_monitoring_loops_one_iteration():
    executor = ExecutorCore()
    await executor.execute(test_step, test_data)

    async def monitor_circuit_breaker(executor):
        stats = executor.get_optimization_stats()
        if "circuit_breaker" in stats:
            state = stats["circuit_breaker"]["state"]
            failure_count = stats["circuit_breaker"]["failure_count"]
            assert state in ("CLOSED", "OPEN", "HALF_OPEN") and failure_count >= 0

    async def monitor_error_recovery(executor):
        stats = executor.get_optimization_stats()
        if "error_handling" in stats:
            error_rate = stats["error_handling"]["error_rate"]
            recovery_success_rate = stats["error_handling"]["recovery_success_rate"]
            print(f"Error rate: {error_rate:.2%}")
            print(f"Recovery success rate: {recovery_success_rate:.2%}")

    async def verify_monitoring(executor):
        result, metrics = await executor.execute_with_monitoring(test_step, test_data)
        for key, value in metrics.items():
            print(f"  {key}: {value}")
        stats = executor.get_optimization_stats()
        for category, data_ in stats.items():
            print(f"  {category}: {data_}")

    async def force_cleanup(executor):
        await executor.clear_cache()

    await monitor_circuit_breaker(executor)
    await monitor_error_recovery(executor)
    await verify_monitoring(executor)
    await force_cleanup(executor)
    await asyncio.sleep(0)
