"""flujo's steps with flujo's behaviour, their agent calls run by caudal.

flujo (https://pypi.org/project/flujo/) decides what a flujo ``Step`` means:
how its agent's result is unpacked and its usage counted, its validators,
processors and plugins, retries with feedback, fallbacks, the loop,
conditional, parallel, router, cache, human-in-the-loop and import steps,
its ``StepResult`` and ``StepOutcome`` types, and its result cache. This
module does not re-implement any of that: it runs flujo's own
``ExecutorCore`` through flujo's public extension points, with caudal doing
the work flujo hands to an *agent runner*. Each agent call becomes an
execution of caudal's engine, named after the flujo step, so it gets
caudal's concurrency limits (adaptive by default), a circuit breaker when
one is configured, the statistics, the monitoring, the recommendations and
the spans (what that costs: docs/flujo.md, "Speed").

Two ways in:

- ``caudal.executor_core.ExecutorCore`` (flujo's import path with
  ``flujo.application.core`` replaced by ``caudal``) executes a flujo
  ``Step`` or ``ExecutionFrame`` the way flujo's does, and anything else as
  :class:`caudal.ExecutorCore` does;
- under flujo's own runner, ``Flujo(pipeline, executor_factory=
  caudal.integrations.flujo.ExecutorFactory())``.

``pip install flujo`` (0.6.x); flujo is imported when this module is.
"""

from __future__ import annotations

import contextvars
import warnings
from collections import OrderedDict
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # flujo's imports warn about pydantic plugins
    from flujo.application.core import executor_core as _flujo_core
    from flujo.application.core.estimation import build_default_estimator_factory
    from flujo.application.core.runtime.factories import ExecutorFactory as _FlujoExecutorFactory
    from flujo.application.core.types import ExecutionFrame
    from flujo.domain.dsl.step import Step as FlujoStep

from caudal._executor.core import ExecutorCore as CaudalExecutorCore
from caudal._executor.flujo_compat import default_config
from caudal._step import Step

__all__ = [
    "AgentRunner",
    "ExecutionFrame",
    "ExecutorFactory",
    "FlujoExecutor",
    "FlujoStep",
    "default_config",
]

# The flujo step whose agent is being called: flujo's agent runner interface
# does not pass it, and every step, nested ones included, goes through
# FlujoExecutor.execute (flujo's policies call core.execute(frame)).
_current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "caudal_flujo_step", default=None
)

# How many agent-call steps (one per flujo step name) AgentRunner keeps.
_MAX_NAMED_STEPS = 4096


async def _call_agent(call: tuple) -> Any:
    inner, agent, payload, context, resources, options, stream, on_chunk = call
    return await inner.run(
        agent,
        payload,
        context=context,
        resources=resources,
        options=options,
        stream=stream,
        on_chunk=on_chunk,
    )


class AgentRunner:
    """flujo's ``IAgentRunner``: each call is an execution of ``executor``
    (a :class:`caudal.ExecutorCore`) under the flujo step's name, which then
    runs ``inner`` (flujo's ``DefaultAgentRunner`` unless given), so agents
    are resolved and called exactly as flujo calls them.

    The execution makes one attempt and caches nothing: flujo retries the
    step (with its feedback, validators and plugins in the loop) and caches
    its results. A failed call raises the agent's own exception to flujo."""

    def __init__(self, executor: Any, inner: Any = None) -> None:
        if inner is None:
            inner = _flujo_core.DefaultAgentRunner()
        self.executor = executor
        self.inner = inner
        self._steps: OrderedDict[str | None, Step] = OrderedDict()

    def _step(self, name: str | None) -> Step:
        steps = self._steps
        step = steps.get(name)
        if step is not None:
            steps.move_to_end(name)  # least recently used first out
        else:
            step = Step(
                _call_agent,
                name=name or "flujo_agent",
                max_retries=0,
                cache=False,
            )
            steps[name] = step
            if len(steps) > _MAX_NAMED_STEPS:
                steps.popitem(last=False)
        return step

    async def run(
        self,
        agent: Any,
        payload: Any,
        *,
        context: Any,
        resources: Any,
        options: dict[str, Any],
        stream: bool = False,
        on_chunk: Any = None,
    ) -> Any:
        step = self._step(_current_step.get())
        call = (self.inner, agent, payload, context, resources, options, stream, on_chunk)
        r = await self.executor.execute(step, call)
        if r.success:
            return r.output
        raise r.error


class FlujoExecutor(_flujo_core.ExecutorCore):
    """flujo's ``ExecutorCore`` with its agent calls run by caudal's engine
    (:class:`AgentRunner` around the ``agent_runner`` given, or flujo's
    default). Every other constructor parameter is flujo's, with flujo's
    defaults. ``caudal_executor`` is the :class:`caudal.ExecutorCore` doing
    the calls (default: one of its own, with :func:`default_config`)."""

    def __init__(self, *args: Any, caudal_executor: Any = None, **kwargs: Any) -> None:
        self._owns_caudal = caudal_executor is None
        if caudal_executor is None:
            caudal_executor = CaudalExecutorCore(default_config())
        self.caudal_executor = caudal_executor
        kwargs["agent_runner"] = AgentRunner(caudal_executor, kwargs.get("agent_runner"))
        super().__init__(*args, **kwargs)

    async def execute(
        self,
        frame_or_step: Any = None,
        data: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """flujo's ``execute``: a ``Step`` and its input (``StepResult``), or
        an ``ExecutionFrame`` (``StepOutcome``), with flujo's keywords."""
        step = frame_or_step.step if isinstance(frame_or_step, ExecutionFrame) else frame_or_step
        if step is None:
            step = kwargs.get("step")
        token = _current_step.set(getattr(step, "name", None))
        try:
            return await super().execute(frame_or_step, data, *args, **kwargs)
        finally:
            _current_step.reset(token)

    async def close_flujo(self) -> None:
        """flujo's ``aclose`` alone (its background tasks, memory store)."""
        await super().aclose()

    async def aclose(self) -> None:
        """flujo's ``aclose``, then the caudal executor's if this executor
        made it."""
        await super().aclose()
        if self._owns_caudal:
            await self.caudal_executor.aclose()


class ExecutorFactory(_FlujoExecutorFactory):
    """flujo's ``ExecutorFactory`` making :class:`FlujoExecutor` s, for
    flujo's runner::

        from flujo import Flujo
        from caudal.integrations.flujo import ExecutorFactory

        runner = Flujo(pipeline, executor_factory=ExecutorFactory())

    Takes flujo's keyword arguments (``cache_backend``, ``agent_runner``,
    ``usage_meter``, ``telemetry``, ...) and ``caudal_executor``: the
    :class:`caudal.ExecutorCore` that runs the agent calls of every executor
    this factory makes (default: one shared executor with
    :func:`default_config`, made at the first ``create_executor``), so
    their limits and statistics are one. ``await factory.aclose()`` closes
    that executor when done."""

    def __init__(self, *, caudal_executor: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.caudal_executor = caudal_executor
        self._owns_caudal = caudal_executor is None

    async def aclose(self) -> None:
        """Close the caudal executor this factory made (its pending
        shared-tier writes, its worker pool, its spans); one given to it
        belongs to the caller."""
        if self._owns_caudal and self.caudal_executor is not None:
            await self.caudal_executor.aclose()

    def create_executor(self) -> FlujoExecutor:
        # Mirrors flujo 0.6's ExecutorFactory.create_executor (it reads the
        # factory's fields, hence the flujo<0.7 pin of the caudal[flujo]
        # extra), with FlujoExecutor in place of flujo's ExecutorCore.
        if self.caudal_executor is None:
            self.caudal_executor = CaudalExecutorCore(default_config())
        registry = self._policy_registry or _flujo_core.PolicyRegistry()
        executor = FlujoExecutor(
            caudal_executor=self.caudal_executor,
            serializer=_flujo_core.OrjsonSerializer(),
            hasher=_flujo_core.Blake3Hasher(),
            cache_backend=self._cache_backend or _flujo_core.InMemoryLRUBackend(),
            usage_meter=self._usage_meter or _flujo_core.ThreadSafeMeter(),
            agent_runner=self._agent_runner,
            processor_pipeline=self._processor_pipeline or _flujo_core.DefaultProcessorPipeline(),
            validator_runner=self._validator_runner or _flujo_core.DefaultValidatorRunner(),
            plugin_runner=self._plugin_runner or _flujo_core.DefaultPluginRunner(),
            telemetry=self._telemetry or _flujo_core.DefaultTelemetry(),
            estimator_factory=build_default_estimator_factory(),
            state_providers=self._state_providers,
            policy_registry=registry,
        )
        for policy in self._policy_overrides:
            registry.register(policy)
        return executor
