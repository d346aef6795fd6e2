"""caudal: async pipeline steps with microsecond overhead.

flujo's ExecutorCore API, with every optimization implemented natively in
C++. Start with ``ExecutorCore`` and ``await executor.execute(step, data)``.
"""

from caudal._core import OptimizationConfig, StepResult
from caudal._display import OptimizationStats, Recommendations
from caudal._pipeline_context import register_context_adapter
from caudal._steps import Step, step
from caudal.checkpoints import CheckpointStore, MemoryStore, PostgresStore, SqliteStore
from caudal.context import Context, ContextMutation, as_context, merge_branches
from caudal.errors import (
    BackendUnavailableError,
    CaudalError,
    CheckpointError,
    CircuitOpenError,
    CircularDependencyError,
    ConfigurationError,
    ContextConflictError,
    DependencyError,
    DuplicateStepError,
    OverloadedError,
    PipelineDefinitionError,
    PoolTimeoutError,
    QueueFullError,
    RemoteWorkerDiedError,
    RunNotFoundError,
    UsageLimitExceededError,
)
from caudal.executor_core import ExecutorCore, StepTimeoutError
from caudal.pipeline import (
    Pipeline,
    PipelineRun,
    StepRecord,
    Usage,
    UsageLimits,
    WithUsage,
    current_run,
)
from caudal.recorder import LatencyRecorder
from caudal.resilience import RetryStrategy
from caudal.worker_pool import WorkerPool
from caudal.yaml_pipeline import load_pipeline

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "CaudalError",
    "CheckpointError",
    "CheckpointStore",
    "CircuitOpenError",
    "CircularDependencyError",
    "ConfigurationError",
    "Context",
    "ContextConflictError",
    "ContextMutation",
    "DependencyError",
    "DuplicateStepError",
    "ExecutorCore",
    "LatencyRecorder",
    "MemoryStore",
    "OptimizationConfig",
    "OptimizationStats",
    "OverloadedError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineRun",
    "PoolTimeoutError",
    "PostgresStore",
    "QueueFullError",
    "Recommendations",
    "RemoteWorkerDiedError",
    "RetryStrategy",
    "RunNotFoundError",
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
