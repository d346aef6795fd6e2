"""caudal: async pipeline steps with microsecond overhead.

flujo's ExecutorCore API, with every optimization implemented natively in
C++. Start with ``ExecutorCore`` and ``await executor.execute(step, data)``.

This module only re-exports the public API. The layout: ``caudal.pipeline``
(graph, runner, records, context, stores, yaml), ``caudal.integrations``
(redis, postgres, otel, ray: imported only when used), ``caudal.cli`` (the
``caudal`` command), ``caudal.testing`` (servers for tests).
"""

from caudal._core import OptimizationConfig, StepResult
from caudal._display import OptimizationStats, Recommendations
from caudal._executor.core import ExecutorCore, StepTimeoutError
from caudal._executor.recorder import LatencyRecorder
from caudal._step import Step, step
from caudal._version import __version__
from caudal.context import Context, ContextMutation, as_context, merge_branches
from caudal.errors import (
    BackendUnavailableError,
    CaudalError,
    CheckpointError,
    CircuitOpenError,
    CircularDependencyError,
    ClusterLostError,
    ConfigurationError,
    ContextConflictError,
    DataError,
    DependencyError,
    DuplicateStepError,
    OverloadedError,
    PermanentError,
    PipelineDefinitionError,
    PlacementError,
    PoolTimeoutError,
    QueueFullError,
    RemoteWorkerDiedError,
    RunNotFoundError,
    SerializationError,
    UsageLimitExceededError,
)
from caudal.pipeline import (
    Pipeline,
    PipelineRun,
    StepRecord,
    Usage,
    UsageLimits,
    WithUsage,
    current_run,
)
from caudal.pipeline.context import register_context_adapter
from caudal.pipeline.stores import CheckpointStore, MemoryStore
from caudal.pipeline.yaml import load_pipeline
from caudal.resilience import RetryStrategy
from caudal.worker_pool import WorkerPool


def __getattr__(name: str) -> type:
    """``SqliteStore`` and ``PostgresStore``, imported when first used (so that
    ``import caudal`` loads neither sqlite3 nor psycopg)."""
    if name == "SqliteStore":
        from caudal.pipeline.stores.sqlite import SqliteStore

        return SqliteStore
    if name == "PostgresStore":
        from caudal.integrations.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BackendUnavailableError",
    "CaudalError",
    "CheckpointError",
    "CheckpointStore",
    "CircuitOpenError",
    "CircularDependencyError",
    "ClusterLostError",
    "ConfigurationError",
    "Context",
    "ContextConflictError",
    "ContextMutation",
    "DataError",
    "DependencyError",
    "DuplicateStepError",
    "ExecutorCore",
    "LatencyRecorder",
    "MemoryStore",
    "OptimizationConfig",
    "OptimizationStats",
    "OverloadedError",
    "PermanentError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineRun",
    "PlacementError",
    "PoolTimeoutError",
    "PostgresStore",
    "QueueFullError",
    "Recommendations",
    "RemoteWorkerDiedError",
    "RetryStrategy",
    "RunNotFoundError",
    "SerializationError",
    "SqliteStore",
    "Step",
    "StepRecord",
    "StepResult",
    "StepTimeoutError",
    "Usage",
    "UsageLimitExceededError",
    "UsageLimits",
    "WithUsage",
    "WorkerPool",
    "__version__",
    "as_context",
    "current_run",
    "load_pipeline",
    "merge_branches",
    "register_context_adapter",
    "step",
]
