"""Type stubs for caudal's native module (cpp/bindings)."""

from collections.abc import Callable
from typing import Any

class OptimizationConfig:
    enable_object_pool: bool
    object_pool_max_size: int
    object_pool_cleanup_threshold: float
    enable_context_optimization: bool
    enable_memory_optimization: bool
    enable_step_optimization: bool
    enable_algorithm_optimization: bool
    enable_concurrency_optimization: bool
    max_concurrent_executions: int | None
    enable_optimized_telemetry: bool
    enable_performance_monitoring: bool
    telemetry_batch_size: int
    telemetry_flush_interval_seconds: float
    enable_optimized_error_handling: bool
    enable_circuit_breaker: bool
    error_cache_size: int
    circuit_breaker_failure_threshold: int
    circuit_breaker_recovery_timeout_seconds: float
    enable_cache_optimization: bool
    cache_compression: bool
    cache_ttl_seconds: float
    cache_max_size: int
    slow_execution_threshold_ms: float
    memory_pressure_threshold_mb: float
    cpu_usage_threshold_percent: float
    enable_automatic_optimization: bool
    optimization_analysis_interval_seconds: float
    performance_degradation_threshold: float
    def __init__(self, **kwargs: Any) -> None: ...
    def validate(self) -> list[str]: ...
    def to_dict(self) -> dict[str, Any]: ...
    @staticmethod
    def from_dict(data: dict[str, Any]) -> OptimizationConfig: ...
    def to_json(self, indent: int = 2) -> str: ...
    @staticmethod
    def from_json(text: str) -> OptimizationConfig: ...
    def copy(self) -> OptimizationConfig: ...
    @staticmethod
    def fields() -> list[dict[str, str]]: ...
    def __eq__(self, other: object) -> bool: ...

class StepResult:
    name: str
    output: Any
    success: bool
    attempts: int
    latency_s: float
    feedback: str | None
    error: BaseException | None
    cache_hit: bool
    metadata: dict[str, Any]
    cost_usd: float
    token_counts: int
    def __init__(
        self,
        *,
        name: str = "",
        output: Any = None,
        success: bool = True,
        attempts: int = 1,
        latency_s: float = 0.0,
        feedback: str | None = None,
        error: BaseException | None = None,
        cache_hit: bool = False,
        metadata: dict[str, Any] | None = None,
        cost_usd: float = 0.0,
        token_counts: int = 0,
    ) -> None: ...
    def unwrap(self) -> Any: ...

class Engine:
    def __init__(self, config: OptimizationConfig) -> None: ...
    def apply_config(self, config: OptimizationConfig) -> None: ...
    @property
    def config(self) -> OptimizationConfig: ...
    @property
    def in_flight(self) -> int: ...
    def _fast_calls(
        self,
    ) -> tuple[
        Callable[[Any, Any, Any, Any], tuple[int, Any, int]], Callable[[int, Any], StepResult]
    ]: ...
    def _begin(
        self, step: Any, data: Any, context: Any, resources: Any
    ) -> tuple[int, Any, int]: ...
    def _restart(
        self, rec: int, data: Any, context: Any, resources: Any
    ) -> tuple[int, Any, int]: ...
    def _call(self, rec: int, data: Any, context: Any, resources: Any) -> Any: ...
    def _timeout_s(self, rec: int) -> float: ...
    def _succeed(self, rec: int, output: Any) -> StepResult: ...
    def _failed(
        self, rec: int, exc: BaseException, timed_out: bool
    ) -> float | StepResult | Any: ...
    def _fallback_done(self, rec: int, exc: BaseException, result: StepResult) -> StepResult: ...
    def _cancel(self, rec: int) -> None: ...
    def step_stats(self) -> dict[str, dict[str, Any]]: ...
    def total_stats(self) -> dict[str, Any]: ...
    def reset_stats(self) -> None: ...
    def step_table(self) -> dict[str, int]: ...
