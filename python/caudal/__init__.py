"""caudal: async pipeline steps with microsecond overhead.

flujo's ExecutorCore API, with every optimization implemented natively in
C++. Start with ``ExecutorCore`` and ``await executor.execute(step, data)``.
"""

from caudal._core import OptimizationConfig, StepResult
from caudal._steps import Step, step
from caudal.context import Context, ContextMutation, as_context, merge_branches
from caudal.errors import (
    CaudalError,
    CircuitOpenError,
    ConfigurationError,
    ContextConflictError,
    QueueFullError,
)
from caudal.resilience import RetryStrategy
from caudal.executor_core import ExecutorCore, StepTimeoutError

__version__ = "0.1.0"

__all__ = [
    "CaudalError",
    "CircuitOpenError",
    "ConfigurationError",
    "Context",
    "ContextConflictError",
    "ContextMutation",
    "ExecutorCore",
    "OptimizationConfig",
    "QueueFullError",
    "RetryStrategy",
    "Step",
    "StepResult",
    "StepTimeoutError",
    "__version__",
    "as_context",
    "merge_branches",
    "step",
]
