import copy
import json
import pickle

import pytest

from caudal import ConfigurationError, OptimizationConfig


def test_defaults_match_seed_001():
    c = OptimizationConfig()
    assert c.enable_object_pool is True
    assert c.object_pool_max_size == 50
    assert c.object_pool_cleanup_threshold == 0.9
    assert c.enable_context_optimization and c.enable_memory_optimization
    assert c.enable_step_optimization and c.enable_algorithm_optimization
    assert c.enable_concurrency_optimization
    assert c.max_concurrent_executions is None
    assert c.enable_optimized_telemetry and c.enable_performance_monitoring
    assert c.telemetry_batch_size == 10
    assert c.telemetry_flush_interval_seconds == 30.0
    assert c.enable_optimized_error_handling and c.enable_circuit_breaker
    assert c.error_cache_size == 50
    assert c.circuit_breaker_failure_threshold == 10
    assert c.circuit_breaker_recovery_timeout_seconds == 60
    assert c.enable_cache_optimization is False and c.cache_compression is False
    assert c.cache_ttl_seconds == 7200 and c.cache_max_size == 500
    assert c.slow_execution_threshold_ms == 1000.0
    assert c.memory_pressure_threshold_mb == 500.0
    assert c.cpu_usage_threshold_percent == 80.0
    assert c.enable_automatic_optimization is False
    assert c.optimization_analysis_interval_seconds == 60.0
    assert c.performance_degradation_threshold == 0.2
    assert c.validate() == []


def test_keyword_construction_and_assignment():
    c = OptimizationConfig(max_concurrent_executions=10, cache_max_size=1000)
    assert c.max_concurrent_executions == 10
    c.object_pool_max_size = 10
    c.max_concurrent_executions = None
    c.cache_ttl_seconds = 1800  # ints are accepted for float fields
    assert c.object_pool_max_size == 10 and c.max_concurrent_executions is None
    assert c.cache_ttl_seconds == 1800.0


def test_unknown_keyword_and_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="no field 'cache_size'"):
        OptimizationConfig(cache_size=3)
    with pytest.raises(TypeError, match="enable_object_pool must be a bool, got int"):
        OptimizationConfig(enable_object_pool=1)
    with pytest.raises(TypeError, match="cache_max_size must be an int"):
        OptimizationConfig(cache_max_size=2.5)
    c = OptimizationConfig()
    with pytest.raises(TypeError, match="max_concurrent_executions must be an int or None"):
        c.max_concurrent_executions = "4"
    assert c.max_concurrent_executions is None  # unchanged


def test_validate_reports_every_problem_in_seed_000_words():
    c = OptimizationConfig(
        object_pool_max_size=0,
        telemetry_batch_size=0,
        object_pool_cleanup_threshold=1.5,
        cpu_usage_threshold_percent=120.0,
    )
    issues = c.validate()
    assert "object_pool_max_size must be positive" in issues
    assert "telemetry_batch_size must be positive" in issues
    assert "object_pool_cleanup_threshold must be between 0.0 and 1.0" in issues
    assert "cpu_usage_threshold_percent must be between 0 and 100" in issues
    # The repair loop of flujo's troubleshooting guide works as written.
    if "object_pool_max_size must be positive" in issues:
        c.object_pool_max_size = 10
    if "telemetry_batch_size must be positive" in issues:
        c.telemetry_batch_size = 10
    c.object_pool_cleanup_threshold = 0.5
    c.cpu_usage_threshold_percent = 90.0
    assert c.validate() == []


def test_contradictory_settings_are_reported():
    c = OptimizationConfig(enable_automatic_optimization=True, enable_performance_monitoring=False)
    assert any("requires enable_performance_monitoring" in p for p in c.validate())


def test_dict_json_round_trip_equality_and_copies():
    c = OptimizationConfig(max_concurrent_executions=7, enable_cache_optimization=True)
    assert OptimizationConfig.from_dict(c.to_dict()) == c
    assert OptimizationConfig.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["max_concurrent_executions"] == 7
    assert c != OptimizationConfig()
    assert copy.deepcopy(c) == c and copy.copy(c) is not c
    assert pickle.loads(pickle.dumps(c)) == c
    assert (c == 3) is False


def test_from_dict_and_from_json_name_each_problem():
    with pytest.raises(ConfigurationError) as e:
        OptimizationConfig.from_dict({"cache_max_size": "x", "nope": 1})
    assert any(p.startswith("cache_max_size:") for p in e.value.problems)
    assert "nope: unknown field" in e.value.problems
    with pytest.raises(ConfigurationError) as e:
        OptimizationConfig.from_json('{"cache_max_size": -1, "x": true}')
    assert e.value.problems == ["$.x: unknown field"]
    with pytest.raises(ConfigurationError) as e:
        OptimizationConfig.from_json('{"cache_max_size": -1}')
    assert e.value.problems == ["cache_max_size must be positive"]
    with pytest.raises(ConfigurationError, match="malformed JSON at line 1, column 2"):
        OptimizationConfig.from_json("{")
    assert isinstance(e.value, ValueError)


def test_repr_shows_changed_fields_only():
    assert repr(OptimizationConfig()) == "OptimizationConfig()"
    assert repr(OptimizationConfig(cache_max_size=3)) == "OptimizationConfig(cache_max_size=3)"


def test_field_table_covers_every_attribute():
    fields = OptimizationConfig.fields()
    names = [f["name"] for f in fields]
    assert names == list(OptimizationConfig().to_dict())
    by_name = {f["name"]: f for f in fields}
    assert by_name["object_pool_max_size"]["rule"] == "must be positive, at most 65536"
    assert by_name["max_concurrent_executions"]["default"] == "None"


def test_generated_config_reference_is_current():
    import importlib.util
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    spec = importlib.util.spec_from_file_location("gen", docs / "gen_config_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (docs / "config.md").read_text() == gen.render(), "run docs/gen_config_reference.py"
