"""flujo's import path for the executor (``flujo.application.core.executor_core``
becomes ``caudal.executor_core``): the same objects as :mod:`caudal`.

Kept as a stable path, not deprecated; the implementation lives in the
private package ``caudal._executor``.
"""

from caudal._core import OptimizationConfig, StepResult
from caudal._executor.core import ExecutorCore, StepTimeoutError

__all__ = ["ExecutorCore", "OptimizationConfig", "StepResult", "StepTimeoutError"]
