"""The executor at flujo's import path (``caudal.executor_core.ExecutorCore``):
caudal's ExecutorCore that runs flujo's steps with flujo's behaviour.

A flujo ``Step`` or ``ExecutionFrame`` goes to a flujo executor made for it
(caudal.integrations.flujo.FlujoExecutor) whose agent calls come back to
this executor as caudal executions; anything else is caudal's. flujo is
imported only when a flujo step or one of flujo's constructor parameters is
met.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from caudal._core import OptimizationConfig
from caudal._executor.core import ExecutorCore as _ExecutorCore

_base_execute = _ExecutorCore.execute

# flujo's classes once flujo is imported (Step, ExecutionFrame).
_flujo_types: tuple[type, ...] | None = None


def default_config() -> OptimizationConfig:
    """caudal's defaults with flujo's one difference: no circuit breaker
    (flujo has none, and calls a failing agent every time)."""
    return OptimizationConfig(enable_circuit_breaker=False)


def _integration() -> Any:
    """caudal.integrations.flujo, which imports flujo: loaded when a flujo
    object or one of flujo's parameters is first met."""
    from caudal.integrations import flujo

    return flujo


def _is_flujo(obj: Any) -> bool:
    global _flujo_types
    kinds = _flujo_types
    if kinds is None:
        if "flujo.domain.dsl.step" not in sys.modules:
            return False  # flujo is not imported: obj cannot be one of its steps
        fl = _integration()
        kinds = _flujo_types = (fl.FlujoStep, fl.ExecutionFrame)
    return isinstance(obj, kinds)


def _flujo_parameters() -> set[str]:
    sig = inspect.signature(_integration().FlujoExecutor.__mro__[1].__init__)
    return {n for n in sig.parameters if n != "self"}


class ExecutorCore(_ExecutorCore):
    """:class:`caudal.ExecutorCore` with flujo's behaviour for flujo's steps.

    ``execute(step, data, ...)`` with a flujo ``Step`` (or an
    ``ExecutionFrame``, as flujo's runner passes) returns what flujo 0.6's
    ``ExecutorCore`` returns: flujo's ``StepResult`` (or ``StepOutcome``),
    computed by flujo's own step logic (agent result unpacking and usage,
    validators, processors, plugins, retries, fallbacks, loop, conditional,
    parallel, router, cache, human-in-the-loop and import steps), flujo's
    keywords (``limits``, ``usage_limits``, ``stream``, ``on_chunk``,
    ``context_setter``, ``quota``, ``cache_key``) and flujo's result cache.
    Each agent call runs as an execution of this executor, named after the
    flujo step: its limits, statistics, monitoring and spans see it. Any
    other step runs as on :class:`caudal.ExecutorCore`.

    Takes caudal's parameters and flujo's (``enable_cache``, ``cache_size``,
    ``cache_ttl``, ``concurrency_limit``, ``cache_backend``,
    ``agent_runner``, ``usage_meter``, ``telemetry``, ``serializer``,
    ``hasher``, ...), which go to the flujo executor. Without an
    ``optimization_config`` the defaults are caudal's with no circuit
    breaker, as in flujo. Subscriptable like flujo's generic class
    (``ExecutorCore[MyContext]()``).
    """

    __slots__ = ("_flujo", "_flujo_kwargs")

    def __init__(
        self,
        optimization_config: OptimizationConfig | None = None,
        *,
        retry_strategy: Any = None,
        cache_l2: Any = None,
        worker_pool: Any = None,
        backend: str | None = None,
        span_exporters: Any = None,
        clock: Any = None,
        **flujo_kwargs: Any,
    ) -> None:
        if optimization_config is None:
            optimization_config = default_config()
        super().__init__(
            optimization_config,
            retry_strategy=retry_strategy,
            cache_l2=cache_l2,
            worker_pool=worker_pool,
            backend=backend,
            span_exporters=span_exporters,
            clock=clock,
        )
        self._flujo = None
        self._flujo_kwargs = flujo_kwargs
        if flujo_kwargs:
            try:
                known = _flujo_parameters()
            except ImportError as e:
                raise TypeError(
                    f"ExecutorCore() got flujo's parameters {sorted(flujo_kwargs)}, "
                    f"which need flujo installed (pip install flujo): {e}"
                ) from None
            unknown = sorted(set(flujo_kwargs) - known)
            if unknown:
                raise TypeError(
                    f"ExecutorCore() got unexpected keyword argument(s) {', '.join(unknown)}: "
                    "neither caudal's nor flujo's ExecutorCore parameters"
                )
            self._flujo_executor()  # flujo checks its values now (ValueError)

    def __class_getitem__(cls, params: Any) -> types.GenericAlias:
        """``ExecutorCore[Ctx]`` as with flujo's generic class (the context
        type is not checked)."""
        return types.GenericAlias(cls, params)

    def _flujo_executor(self) -> Any:
        fl = self._flujo
        if fl is None:
            fl = self._flujo = _integration().FlujoExecutor(
                caudal_executor=self, **self._flujo_kwargs
            )
        return fl

    def execute(
        self,
        step: Any = None,
        data: Any = None,
        context: Any = None,
        resources: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``step`` on ``data``; a coroutine. A flujo ``Step`` or
        ``ExecutionFrame`` returns flujo's result (see the class); any other
        step a :class:`caudal.StepResult`. flujo's keywords apply to flujo's
        steps only."""
        if kwargs or _is_flujo(step):
            return self._execute_flujo(step, data, context, resources, kwargs)
        return _base_execute(self, step, data, context, resources)

    inspect.markcoroutinefunction(execute)

    async def _execute_flujo(
        self, step: Any, data: Any, context: Any, resources: Any, kwargs: dict
    ) -> Any:
        if step is None and "frame_or_step" in kwargs:  # flujo's parameter name
            step = kwargs.pop("frame_or_step")
            if not _is_flujo(step) and not kwargs:
                return await _base_execute(self, step, data, context, resources)
        if not _is_flujo(step):
            raise TypeError(
                f"execute() got flujo's keyword argument(s) {', '.join(sorted(kwargs))} "
                f"for a {type(step).__name__}, which is not a flujo Step: they apply to "
                "flujo steps only"
            )
        if context is not None:
            kwargs["context"] = context
        if resources is not None:
            kwargs["resources"] = resources
        return await self._flujo_executor().execute(step, data, **kwargs)

    # ------------------------------------------------ flujo's members
    @property
    def cache(self) -> Any:
        """flujo's result cache for flujo's steps (flujo's ``_LRUCache``)."""
        return self._flujo_executor().cache

    def clear_cache_sync(self) -> None:
        """Drop the in-process cached results, flujo's and caudal's at once
        (the shared tier is not touched: use ``await clear_cache()``)."""
        if self._flujo is not None:
            self._flujo.clear_cache_sync()
        self._engine.clear_cache()

    async def clear_cache(self) -> Any:
        """Drop every cached result: flujo's cache and both of caudal's tiers."""
        if self._flujo is not None:
            await self._flujo.clear_cache()
        return await super().clear_cache()

    async def wait_for_background_tasks(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (flujo's signature)
        """flujo's background steps, then caudal's pending shared-tier
        writes, each for up to ``timeout`` seconds."""
        if self._flujo is not None:
            await self._flujo.wait_for_background_tasks(timeout)
        await self.flush(timeout)

    async def aclose(self) -> None:
        if self._flujo is not None:
            await self._flujo.close_flujo()
        await super().aclose()
