"""flujo's import path for the executor (``flujo.application.core.executor_core``
becomes ``caudal.executor_core``).

Its :class:`ExecutorCore` is :class:`caudal.ExecutorCore` that, for a flujo
``Step`` or ``ExecutionFrame``, behaves as flujo 0.6's ``ExecutorCore``
does (flujo's result types, keywords, constructor parameters, cache and step
kinds; docs/flujo.md), with its agent calls run by caudal's engine. Kept as a
stable path, not deprecated.
"""

from caudal._core import OptimizationConfig, StepResult
from caudal._executor.core import StepTimeoutError
from caudal._executor.flujo_compat import ExecutorCore

__all__ = ["ExecutorCore", "OptimizationConfig", "StepResult", "StepTimeoutError"]
