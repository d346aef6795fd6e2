"""flujo's behaviour for flujo's steps: the same flujo Step run through
flujo's own ExecutorCore (flujo 0.6.11 from PyPI) and through
caudal.executor_core.ExecutorCore, compared field by field.

Each case builds its step twice from a factory (agents count their calls,
so the two runs must not share them) and compares every field of the two
StepResults that does not measure time."""

from __future__ import annotations

import asyncio
import logging
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydantic plugin warnings on flujo's import
    from flujo.application.core.executor_core import ExecutorCore as FlujoExecutorCore
    from flujo.domain.agent_result import FlujoAgentResult
    from flujo.domain.dsl.pipeline import Pipeline as FlujoPipeline
    from flujo.domain.dsl.step import Step as FlujoStep
    from flujo.domain.dsl.step import StepConfig
    from flujo.domain.models import StepResult as FlujoStepResult
    from flujo.domain.plugins import PluginOutcome
    from flujo.domain.processors import AgentProcessors
    from flujo.domain.validation import BaseValidator, ValidationResult
    from flujo.exceptions import PausedException

from caudal import OptimizationConfig
from caudal.executor_core import ExecutorCore

logging.getLogger("flujo").setLevel(logging.CRITICAL)

TIMING = {"latency_s", "execution_time_ms", "start_time", "end_time", "timestamp"}


def plain(v, key=None):
    """v with what differs between two runs of one step by nature made
    equal: run ids, and objects the two step copies hold (by type)."""
    if key == "run_id":
        return "<run id>"
    if isinstance(v, dict):
        return {k: plain(x, k) for k, x in v.items() if k not in TIMING}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return f"<{type(v).__name__}>"


def fields(r):
    """Every field of a flujo StepResult but the ones that measure time."""
    assert isinstance(r, FlujoStepResult), type(r)
    d = plain(r.model_dump())
    d["metadata_"] = plain(r.metadata_ or {})
    d["step_history"] = [fields(h) for h in r.step_history]
    return d


async def both(make_step, data, **kwargs):
    """(flujo's result, caudal's result) for a step made twice by make_step."""
    ours = ExecutorCore()
    theirs = FlujoExecutorCore()
    r_flujo = await theirs.execute(make_step(), data, **kwargs)
    r_caudal = await ours.execute(make_step(), data, **kwargs)
    return r_flujo, r_caudal


async def same(make_step, data, **kwargs):
    r_flujo, r_caudal = await both(make_step, data, **kwargs)
    assert fields(r_caudal) == fields(r_flujo)
    return r_caudal


# --------------------------------------------------------------- agents
class Inc:
    async def run(self, data, **kwargs):
        return data + 1


class WithUsage:
    """An agent returning flujo's FlujoAgentResult, with its usage."""

    async def run(self, data, **kwargs):
        return FlujoAgentResult({"answer": 42}, cost_usd=0.0123, token_counts=150)


class Boom:
    def __init__(self):
        self.calls = 0

    async def run(self, data, **kwargs):
        self.calls += 1
        raise Exception("boom")


class FailTwice:
    def __init__(self):
        self.calls = 0

    async def run(self, data, **kwargs):
        self.calls += 1
        if self.calls <= 2:
            raise ConnectionError(f"flaky {self.calls}")
        return f"ok after {self.calls}"


class Pauses:
    async def run(self, data, **kwargs):
        raise PausedException("waiting for a human")


class Echo:
    async def run(self, data, **kwargs):
        return data


# 1. Agent results unpacked, usage kept
async def test_agent_result_is_unpacked_with_its_usage():
    r = await same(lambda: FlujoStep(name="llm", agent=WithUsage()), "q")
    assert (r.output, r.cost_usd, r.token_counts) == ({"answer": 42}, 0.0123, 150)


async def test_plain_agent_result():
    r = await same(lambda: FlujoStep(name="inc", agent=Inc()), 41)
    assert r.output == 42 and r.success and r.attempts == 1


# 3. flujo's StepResult and its feedback texts
async def test_failure_is_flujos_result_with_flujos_feedback():
    r = await same(lambda: FlujoStep(name="boom", agent=Boom()), 1)
    assert not r.success and isinstance(r, FlujoStepResult)
    assert "boom" in r.feedback


async def test_retries_count_as_flujo_counts_them():
    r = await same(
        lambda: FlujoStep(name="flaky", agent=FailTwice(), config=StepConfig(max_retries=2)), 1
    )
    assert r.success and r.output == "ok after 3"


async def test_retries_exhausted():
    await same(
        lambda: FlujoStep(name="flaky", agent=FailTwice(), config=StepConfig(max_retries=1)), 1
    )


# 2. flujo's keywords are accepted
@pytest.mark.parametrize(
    "kwargs",
    [
        {"limits": None},
        {"usage_limits": None},
        {"stream": False},
        {"on_chunk": None},
        {"context_setter": None},
        {"quota": None},
        {"cache_key": "k1"},
    ],
    ids=lambda kw: next(iter(kw)),
)
async def test_flujo_keywords_are_accepted(kwargs):
    await same(lambda: FlujoStep(name="inc", agent=Inc()), 1, **kwargs)


@pytest.mark.parametrize("form", ["step", "frame_or_step"])
async def test_flujos_keyword_forms_of_the_step(form):
    results = []
    for Executor in (FlujoExecutorCore, ExecutorCore):
        r = await Executor().execute(**{form: FlujoStep(name="inc", agent=Inc())}, data=1)
        results.append(fields(r))
    assert results[0] == results[1] and results[0]["output"] == 2


async def test_unknown_keyword_is_refused_as_flujo_refuses_it():
    with pytest.raises(TypeError, match="nonsense"):
        await FlujoExecutorCore().execute(FlujoStep(name="inc", agent=Inc()), 1, nonsense=1)
    with pytest.raises(TypeError, match="nonsense"):
        await ExecutorCore().execute(FlujoStep(name="inc", agent=Inc()), 1, nonsense=1)


# 6. validators, processors, plugins
class Reject(BaseValidator):
    async def validate(self, output_to_check, *, context=None):
        return ValidationResult(is_valid=False, feedback="too small", validator_name=self.name)


class Upper:
    name = "upper"

    async def process(self, data, context=None):
        return str(data).upper()


class FailingPlugin:
    async def validate(self, data, **kwargs):
        return PluginOutcome(success=False, feedback="plugin says no")


async def test_rejecting_validator_fails_the_step():
    r = await same(lambda: FlujoStep(name="v", agent=Inc(), validators=[Reject()]), 1)
    assert not r.success


async def test_output_processor_change_is_kept():
    def make():
        return FlujoStep(
            name="p", agent=Echo(), processors=AgentProcessors(output_processors=[Upper()])
        )

    r = await same(make, "abc")
    assert r.output == "ABC"


async def test_failing_plugin_triggers_the_fallback():
    def make():
        s = FlujoStep(name="main", agent=Echo(), plugins=[(FailingPlugin(), 0)])
        return s.fallback(FlujoStep(name="fb", agent=Inc()))

    r = await same(make, 1)
    assert r.success and r.output == 2


# 9. fallback semantics
async def test_fallback_after_failure():
    def make():
        return FlujoStep(name="main", agent=Boom()).fallback(FlujoStep(name="fb", agent=Inc()))

    r = await same(make, 1)
    assert r.success and r.output == 2


# 5. complex step kinds
async def test_loop_step():
    def make():
        body = FlujoPipeline.from_step(FlujoStep(name="inc", agent=Inc()))
        return FlujoStep.loop_until(
            name="loop",
            loop_body_pipeline=body,
            exit_condition_callable=lambda out, ctx: out >= 5,
            max_loops=10,
        )

    r = await same(make, 1)
    assert r.success and r.output == 5


async def test_conditional_step():
    def make():
        return FlujoStep.branch_on(
            name="cond",
            condition_callable=lambda data, ctx: "big" if data > 10 else "small",
            branches={
                "big": FlujoPipeline.from_step(FlujoStep(name="big", agent=Echo())),
                "small": FlujoPipeline.from_step(FlujoStep(name="small", agent=Inc())),
            },
        )

    r = await same(make, 3)
    assert r.output == 4


async def test_parallel_step():
    def make():
        return FlujoStep.parallel(
            name="par",
            branches={
                "a": FlujoPipeline.from_step(FlujoStep(name="a", agent=Inc())),
                "b": FlujoPipeline.from_step(FlujoStep(name="b", agent=Echo())),
            },
        )

    r = await same(make, 3)
    assert r.success and r.output == {"a": 4, "b": 3}


# 10. PausedException is re-raised
async def test_paused_exception_propagates_like_flujo():
    with pytest.raises(PausedException):
        await FlujoExecutorCore().execute(FlujoStep(name="hitl", agent=Pauses()), 1)
    with pytest.raises(PausedException):
        await ExecutorCore().execute(FlujoStep(name="hitl", agent=Pauses()), 1)


# 8. flujo's defaults: its cache on, no breaker
async def test_results_are_cached_by_default_like_flujo():
    class Counting:
        calls = 0

        async def run(self, data, **kwargs):
            Counting.calls += 1
            return data * 2

    step = FlujoStep(name="dbl", agent=Counting())
    ex = ExecutorCore()
    a = await ex.execute(step, 21)
    b = await ex.execute(step, 21)
    assert (a.output, b.output, Counting.calls) == (42, 42, 1)
    c = await ex.execute(step, 22)  # another input: never the first one's output
    assert (c.output, Counting.calls) == (44, 2)


async def test_enable_cache_false_calls_the_agent_each_time():
    agent = FailTwice()
    step = FlujoStep(name="f", agent=agent, config=StepConfig(max_retries=0))
    ex = ExecutorCore(enable_cache=False)
    for _ in range(3):
        await ex.execute(step, 1)
    assert agent.calls == 3


async def test_no_breaker_by_default_the_agent_is_called_every_time():
    agent = Boom()
    step = FlujoStep(name="down", agent=agent, config=StepConfig(max_retries=0))
    ex = ExecutorCore()
    results = [await ex.execute(step, i) for i in range(12)]
    assert agent.calls == 12
    assert all(not r.success and "boom" in r.feedback for r in results)


async def test_a_breaker_when_configured():
    agent = Boom()
    step = FlujoStep(name="down", agent=agent, config=StepConfig(max_retries=0))
    config = OptimizationConfig(
        enable_circuit_breaker=True,
        circuit_breaker_failure_threshold=3,
        circuit_breaker_minimum_calls=3,
    )
    ex = ExecutorCore(config)
    results = [await ex.execute(step, i) for i in range(10)]
    assert agent.calls < 10
    assert not any(r.success for r in results)


# 4. constructor parameters
def test_flujo_constructor_parameters_are_accepted():
    ExecutorCore(enable_cache=True, cache_size=10, cache_ttl=5, concurrency_limit=4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"cache_size": 0}, "cache_size"),
        ({"cache_ttl": -1}, "cache_ttl"),
        ({"concurrency_limit": 0}, "concurrency_limit"),
    ],
)
def test_bad_constructor_values_raise_value_error_like_flujo(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlujoExecutorCore(**kwargs)
    with pytest.raises(ValueError, match=match):
        ExecutorCore(**kwargs)


def test_unknown_constructor_parameter_is_named():
    with pytest.raises(TypeError, match="cache_sise"):
        ExecutorCore(cache_sise=3)


async def test_custom_cache_backend_is_used():
    from flujo.application.core.executor_core import InMemoryLRUBackend

    backend = InMemoryLRUBackend()
    ex = ExecutorCore(cache_backend=backend)
    await ex.execute(FlujoStep(name="inc", agent=Inc()), 1)
    assert len(backend._store) == 1


# 7. generic subscription
def test_executor_core_is_subscriptable_like_flujos():
    from flujo.domain.models import PipelineContext

    ex = ExecutorCore[PipelineContext]()
    assert isinstance(ex, ExecutorCore)


# 12. members
def test_cache_members():
    """flujo's clear_cache_sync works outside an event loop only; caudal's
    ExecutorCore (flujo's import path) clears flujo's cache and its own."""
    from caudal import Step

    calls = []

    async def count(x):
        calls.append(x)
        return x

    class Counting:
        async def run(self, data, **kwargs):
            calls.append(data)
            return data

    counted = Step(count, name="count", cache=True, cache_key="count-v1")

    async def run(ex, caudal_step):
        await ex.execute(FlujoStep(name="c", agent=Counting()), 1)
        if caudal_step:
            await ex.execute(counted, 2)

    async def in_loop(ex):
        with pytest.raises(RuntimeError, match="running event loop"):
            ex.clear_cache_sync()
        await ex.wait_for_background_tasks()
        assert type(ex.cache).__name__ == "_LRUCache"

    for ex, caudal_step in ((FlujoExecutorCore(), False), (ExecutorCore(), True)):
        calls.clear()
        asyncio.run(run(ex, caudal_step))
        asyncio.run(run(ex, caudal_step))
        assert calls == ([1, 2] if caudal_step else [1])  # the second run: cache hits
        asyncio.run(in_loop(ex))
        ex.clear_cache_sync()
        asyncio.run(run(ex, caudal_step))
        assert calls == ([1, 2, 1, 2] if caudal_step else [1, 1])
        asyncio.run(ex.aclose())


# caudal's machinery does the agent calls: stats name the flujo step
async def test_agent_calls_run_through_caudal_and_show_in_its_stats():
    ex = ExecutorCore()
    await ex.execute(FlujoStep(name="inc", agent=Inc()), 1)
    await ex.execute(FlujoStep(name="inc", agent=Inc()), 2)
    steps = ex.get_optimization_stats()["execution"]["steps"]
    assert steps["inc"]["executions"] == 2


async def test_concurrent_flujo_executions_never_mix_inputs():
    class Slow:
        async def run(self, data, **kwargs):
            await asyncio.sleep(0.001 * (data % 3))
            return data * 10

    ex = ExecutorCore()
    step = FlujoStep(name="slow", agent=Slow())
    rs = await asyncio.gather(*(ex.execute(step, i) for i in range(200)))
    assert [r.output for r in rs] == [i * 10 for i in range(200)]


async def test_cancelling_a_flujo_execution_propagates():
    class Hang:
        async def run(self, data, **kwargs):
            await asyncio.Event().wait()

    ex = ExecutorCore()
    t = asyncio.ensure_future(ex.execute(FlujoStep(name="hang", agent=Hang()), 1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t


# caudal's own steps keep caudal's result on the same executor
async def test_caudal_steps_still_return_caudal_results():
    from caudal import StepResult

    async def double(x):
        return 2 * x

    r = await ExecutorCore().execute(double, 4)
    assert isinstance(r, StepResult) and r.output == 8


async def test_flujo_keywords_with_a_caudal_step_are_refused():
    async def double(x):
        return 2 * x

    with pytest.raises(TypeError, match="flujo"):
        await ExecutorCore().execute(double, 4, limits=None)


# 11. ExecutionFrame in, StepOutcome out: caudal under flujo's runner
async def test_execution_frame_gives_flujos_step_outcome():
    from flujo.application.core.types import ExecutionFrame
    from flujo.domain.models import StepOutcome

    outcomes = []
    for ex in (FlujoExecutorCore(), ExecutorCore()):
        frame = ExecutionFrame(
            step=FlujoStep(name="inc", agent=Inc()),
            data=1,
            context=None,
            resources=None,
            limits=None,
            stream=False,
            on_chunk=None,
            context_setter=lambda result, ctx: None,
        )
        out = await ex.execute(frame)
        assert isinstance(out, StepOutcome)
        outcomes.append(out)
    assert type(outcomes[0]) is type(outcomes[1])
    assert fields(outcomes[1].step_result) == fields(outcomes[0].step_result)


def pipeline():
    """Five steps of flujo's kinds: plain, with a validator and a fallback, a
    loop, an output processor and a step whose agent reports usage."""

    def body():
        return FlujoPipeline.from_step(FlujoStep(name="inc_in_loop", agent=Inc()))

    class Positive(BaseValidator):
        async def validate(self, output_to_check, *, context=None):
            ok = output_to_check > 0
            return ValidationResult(
                is_valid=ok, feedback=None if ok else "<= 0", validator_name=self.name
            )

    class Str:
        name = "str"

        async def process(self, data, context=None):
            return {"n": data}

    class Usage:
        async def run(self, data, **kwargs):
            return FlujoAgentResult(data, cost_usd=0.5, token_counts=7)

    return (
        FlujoStep(name="first", agent=Inc())
        >> FlujoStep(name="checked", agent=Inc(), validators=[Positive()]).fallback(
            FlujoStep(name="fixed", agent=Echo())
        )
        >> FlujoStep.loop_until(
            name="loop",
            loop_body_pipeline=body(),
            exit_condition_callable=lambda out, ctx: out >= 10,
            max_loops=20,
        )
        >> FlujoStep(name="usage", agent=Usage())
        >> FlujoStep(
            name="wrap", agent=Echo(), processors=AgentProcessors(output_processors=[Str()])
        )
    )


def run_result(fields_of):
    return {
        "steps": [fields(s) for s in fields_of.step_history],
        "cost": fields_of.total_cost_usd,
        "tokens": fields_of.total_tokens,
    }


@pytest.fixture(autouse=True)
def _no_state_files_in_the_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # flujo's runner may write flujo_ops.db in the cwd


def Flujo(pipeline, **kwargs):
    """flujo's runner with its run state in memory."""
    from flujo import Flujo as FlujoRunner
    from flujo.state.backends.memory import InMemoryBackend

    return FlujoRunner(pipeline, state_backend=InMemoryBackend(), **kwargs)


async def _run(runner, data):
    result = None
    async for item in runner.run_async(data):
        result = item
    return result


async def test_flujo_runner_with_caudals_executor_factory_gives_flujos_results():
    from caudal.integrations.flujo import ExecutorFactory

    theirs = await _run(Flujo(pipeline()), 1)
    factory = ExecutorFactory()
    ours = await _run(Flujo(pipeline(), executor_factory=factory), 1)
    assert run_result(ours) == run_result(theirs)
    assert ours.step_history[-1].output == {"n": 10}
    assert (ours.total_cost_usd, ours.total_tokens) == (0.5, 7)
    # every agent call went through caudal's engine, under its step's name
    steps = factory.caudal_executor.get_optimization_stats()["execution"]["steps"]
    assert {"first", "checked", "inc_in_loop", "usage", "wrap"} <= set(steps)
    assert steps["inc_in_loop"]["executions"] == 7  # 3 -> 10


async def test_flujo_runner_with_a_local_backend_over_caudals_executor():
    from flujo.infra.backends import LocalBackend

    theirs = await _run(Flujo(pipeline()), 1)
    ex = ExecutorCore()
    ours = await _run(Flujo(pipeline(), backend=LocalBackend(executor=ex)), 1)
    assert run_result(ours) == run_result(theirs)
    assert ex.get_optimization_stats()["execution"]["steps"]["first"]["executions"] == 1


# 5. the other complex kinds: cache, router, human-in-the-loop, import
async def test_cache_step():
    class Counting:
        def __init__(self):
            self.calls = 0

        async def run(self, data, **kwargs):
            self.calls += 1
            return data * 3

    for Executor in (FlujoExecutorCore, ExecutorCore):
        agent = Counting()
        step = FlujoStep.cached(FlujoStep(name="triple", agent=agent))
        ex = Executor()
        a = await ex.execute(step, 2)
        b = await ex.execute(step, 2)
        assert (a.output, b.output, agent.calls) == (6, 6, 1), Executor
    await same(lambda: FlujoStep.cached(FlujoStep(name="triple", agent=Inc())), 5)


async def test_dynamic_router_step():
    class Router:
        async def run(self, data, **kwargs):
            return ["b"] if data > 10 else ["a"]

    def make():
        return FlujoStep.dynamic_parallel_branch(
            name="router",
            router_agent=Router(),
            branches={
                "a": FlujoStep(name="a", agent=Inc()),
                "b": FlujoStep(name="b", agent=Echo()),
            },
        )

    r = await same(make, 3)
    assert r.success


async def test_human_in_the_loop_step_pauses_like_flujo():
    outcomes = []
    for ex in (FlujoExecutorCore(), ExecutorCore()):
        try:
            r = await ex.execute(FlujoStep.human_in_the_loop(name="ask", message_for_user="ok?"), 1)
            outcomes.append(("result", fields(r)))
        except PausedException as e:
            outcomes.append(("paused", str(e)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == "paused" and "ok?" in outcomes[0][1]


async def test_import_step():
    from flujo.domain.dsl.import_step import ImportStep

    def make():
        child = FlujoPipeline.from_step(FlujoStep(name="child_echo", agent=Echo()))
        return ImportStep(name="imported", pipeline=child)

    r = await same(make, "hello")
    assert r.success


async def test_flujos_components_are_taken_and_used():
    from flujo.application.core.executor_core import (
        Blake3Hasher,
        DefaultTelemetry,
        OrjsonSerializer,
        ThreadSafeMeter,
    )

    snapshots = []
    for Executor in (FlujoExecutorCore, ExecutorCore):
        meter = ThreadSafeMeter()
        ex = Executor(
            usage_meter=meter,
            telemetry=DefaultTelemetry(),
            serializer=OrjsonSerializer(),
            hasher=Blake3Hasher(),
        )
        r = await ex.execute(FlujoStep(name="llm", agent=WithUsage()), "q")
        snapshots.append((fields(r), await meter.snapshot()))
    assert snapshots[0] == snapshots[1]


async def test_a_custom_agent_runner_is_kept_inside_caudals():
    class Doubling:
        async def run(self, agent, payload, **kwargs):
            return payload * 2

    results = []
    for Executor in (FlujoExecutorCore, ExecutorCore):
        r = await Executor(agent_runner=Doubling()).execute(FlujoStep(name="x", agent=Inc()), 4)
        results.append(fields(r))
    assert results[0] == results[1] and results[0]["output"] == 8
