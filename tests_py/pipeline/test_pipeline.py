"""caudal.Pipeline: composition, data flow, concurrency, failures, context,
usage limits, checkpoints and resume (SQLite and in-memory stores)."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3

import pytest

import caudal
from caudal import (
    CircularDependencyError,
    ContextConflictError,
    DependencyError,
    DuplicateStepError,
    ExecutorCore,
    MemoryStore,
    Pipeline,
    RetryStrategy,
    SqliteStore,
    Step,
    Usage,
    UsageLimitExceededError,
    UsageLimits,
    WithUsage,
    _core,
)


async def inc(x):
    return x + 1


async def dbl(x):
    return x * 2


# ------------------------------------------------------------ native graph


def test_dag_binding_levels_order_and_errors():
    d = _core.Dag([("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])])
    assert len(d) == 4
    assert d.levels() == [[0], [1, 2], [3]]
    assert d.order() == [0, 1, 2, 3]
    assert d.roots() == [0] and d.sinks() == [3]
    assert d.index("c") == 2
    with pytest.raises(KeyError):
        d.index("zz")
    with pytest.raises(IndexError):
        d.deps(9)
    r = _core.DagRun(d)
    assert r.ready() == [0]
    assert r.mark_done(0) == [1, 2]
    assert r.mark_failed("b") == [3]
    assert r.state(3) == "skipped"
    assert r.mark_done(2) == []
    assert r.completed()
    with pytest.raises(ValueError, match="is done, not ready"):
        r.mark_done(2)


def test_dag_binding_resume_set_checked():
    d = _core.Dag([("a", []), ("b", ["a"])])
    assert _core.DagRun(d, [0]).ready() == [1]
    with pytest.raises(caudal.CheckpointError, match="dependency 'a' is not"):
        _core.DagRun(d, [1])


def test_circular_dependency_error_has_the_cycle():
    with pytest.raises(CircularDependencyError) as ei:
        Pipeline(
            [Step(inc, "a"), Step(inc, "b"), Step(inc, "c")],
            depends_on={"a": "b", "b": "c", "c": "a"},
        )
    e = ei.value
    assert e.cycle == ["a", "b", "c", "a"]
    assert str(e) == "circular dependency: a -> b -> c -> a"
    assert isinstance(e, caudal.CaudalError) and isinstance(e, ValueError)
    assert pickle.loads(pickle.dumps(e)).cycle == e.cycle


def test_missing_dependency_and_duplicates():
    with pytest.raises(DependencyError) as ei:
        Pipeline([Step(inc, "a", depends_on="ghost")])
    assert (ei.value.step, ei.value.missing) == ("a", "ghost")
    assert isinstance(ei.value, ValueError)
    with pytest.raises(DuplicateStepError):
        Step(inc, "a") >> Step(dbl, "a")
    with pytest.raises(caudal.PipelineDefinitionError, match="depends_on names 'x'"):
        Pipeline([Step(inc, "a")], depends_on={"x": ["a"]})


# ------------------------------------------------------------- composition


async def test_rshift_chains_and_passes_outputs():
    p = Step(inc) >> Step(dbl) >> (lambda x: x - 1)
    assert p.step_names == ["inc", "dbl", "<lambda>"]
    run = await p.run(3, store=False)
    assert run.status == "completed"
    assert run.result == 7
    assert run.outputs == {"inc": 4, "dbl": 8, "<lambda>": 7}


async def test_plain_function_on_the_left_of_a_step():
    def first(x):
        return x + 10

    p = first >> Step(dbl)
    assert (await p.run(1, store=False)).result == 22


async def test_parallel_branches_get_the_same_input_and_merge_into_a_dict():
    p = (
        Step(inc)
        >> Pipeline.parallel(Step(dbl), Step(lambda x: -x, "neg"))
        >> Step(lambda d: d, "join")
    )
    assert p.levels() == [["inc"], ["dbl", "neg"], ["join"]]
    run = await p.run(1, store=False)
    assert run.result == {"dbl": 4, "neg": -2}


async def test_general_dag_with_depends_on_and_several_sinks():
    async def a(x):
        return [x]

    async def b(x):
        return [*x, "b"]

    async def c(x):
        return [*x, "c"]

    async def d(inputs):
        return sorted(inputs)

    p = Pipeline(
        [Step(a), Step(b), Step(c), Step(d), Step(lambda x: "side", "side")],
        depends_on={"b": ["a"], "c": "a", "d": ["b", "c"], "side": ["a"]},
    )
    run = await p.run(0, store=False)
    assert run.result == {"d": ["b", "c"], "side": "side"}
    assert run.steps["d"].status == "completed"


async def test_independent_steps_run_concurrently():
    started = []
    gate = asyncio.Event()

    async def wait_all(x):
        started.append(x)
        if len(started) == 5:
            gate.set()
        await asyncio.wait_for(gate.wait(), 2)
        return x

    p = Pipeline([Step(wait_all, f"s{i}") for i in range(5)])
    run = await p.run(1, store=False)
    assert run.status == "completed" and len(started) == 5


async def test_max_concurrency_bounds_steps_in_flight():
    live = {"now": 0, "max": 0}

    async def work(x):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        await asyncio.sleep(0.002)
        live["now"] -= 1
        return x

    p = Pipeline([Step(work, f"w{i}") for i in range(12)])
    run = await p.run(0, store=False, max_concurrency=3)
    assert run.status == "completed"
    assert live["max"] == 3


async def test_step_level_depends_on():
    p = Pipeline([Step(inc, "a"), Step(dbl, "b", depends_on=("a",))])
    assert (await p.run(1, store=False)).result == 4


# ---------------------------------------------------------------- failures


async def test_failure_skips_dependents_and_fails_the_run():
    async def boom(x):
        raise ValueError("bad input")

    p = Pipeline(
        [Step(inc, "a"), Step(boom, "b"), Step(dbl, "c"), Step(dbl, "other")],
        depends_on={"b": "a", "c": "b", "other": "a"},
    )
    run = await p.run(1, store=False)
    assert run.status == "failed"
    assert run.steps["b"].status == "failed"
    assert run.steps["b"].error == "ValueError: bad input"
    assert isinstance(run.steps["b"].exception, ValueError)
    assert run.steps["c"].status == "skipped"
    assert run.steps["other"].status == "completed"  # independent work finishes
    with pytest.raises(ValueError, match="bad input"):
        run.unwrap()


async def test_retries_happen_inside_the_step():
    calls = {"n": 0}

    async def flaky(x):
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("again")
        return x

    p = Step(flaky, retry=RetryStrategy(max_attempts=3, base_delay=0)) >> Step(inc)
    run = await p.run(1, store=False)
    assert run.status == "completed" and run.result == 2
    assert run.steps["flaky"].attempts == 3


async def test_optional_failure_passes_none_and_run_completes():
    async def extra(x):
        raise RuntimeError("down")

    async def join(d):
        return d

    p = Pipeline(
        [Step(inc, "a"), Step(extra, "extra", optional=True), Step(join, "join")],
        depends_on={"extra": "a", "join": ["a", "extra"]},
    )
    run = await p.run(1, store=False)
    assert run.status == "completed"
    assert run.result == {"a": 2, "extra": None}
    assert run.steps["extra"].status == "failed" and run.steps["extra"].optional


async def test_fail_fast_cancels_running_steps():
    started = asyncio.Event()

    async def slow(x):
        started.set()
        await asyncio.sleep(5)  # cancelled by fail_fast

    async def boom(x):
        await started.wait()  # fails while slow runs
        raise ValueError("x")

    p = Pipeline([Step(slow, "slow"), Step(boom, "boom")])
    run = await asyncio.wait_for(p.run(1, store=False, fail_fast=True), 2)
    assert run.status == "failed"
    assert run.steps["slow"].status == "cancelled"


async def test_cancelling_the_run_cancels_steps_and_marks_the_store():
    store = MemoryStore()
    started = asyncio.Event()
    calls = []

    async def slow(x):
        calls.append(x)
        if len(calls) == 1:
            started.set()
            await asyncio.sleep(10)  # cancelled by the test
        return x * 10

    p = Step(inc) >> Step(slow)
    task = asyncio.create_task(p.run(1, store=store, run_id="r1"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await store.load_run("r1")
    assert stored.info.status == "cancelled"
    assert list(stored.steps) == ["inc", "slow"]
    # The step in flight is recorded as cancelled, with no output.
    cp = stored.steps["slow"]
    assert cp.status == "cancelled" and cp.payload is None, cp
    assert cp.started_at is not None and cp.finished_at >= cp.started_at
    # A resume restores inc and runs the cancelled step again.
    run = await p.resume("r1", store=store)
    assert run.status == "completed" and run.result == 20
    assert run.steps["inc"].restored and not run.steps["slow"].restored
    assert calls == [2, 2]
    assert (await store.load_run("r1")).steps["slow"].status == "completed"


# ----------------------------------------------------------------- context


async def test_context_snapshots_and_merge():
    async def a(x, context):
        context["a"] = 1
        return x

    async def b(x, context):
        assert context["a"] == 1  # a dependency's writes are visible
        context["b"] = 2
        return x

    async def c(x, context):
        assert "b" not in context  # a concurrent branch's are not
        context["c"] = 3
        return x

    ctx = {"start": 0}
    p = Step(a) >> Pipeline.parallel(Step(b), Step(c))
    run = await p.run(1, store=False, context=ctx)
    assert run.status == "completed"
    assert run.context == {"start": 0, "a": 1, "b": 2, "c": 3}
    assert ctx == {"start": 0}  # the caller's dict is never mutated


async def test_concurrent_writes_to_one_key_are_a_conflict():
    w1_wrote = asyncio.Event()

    async def w1(x, context):
        await asyncio.sleep(0)
        context["k"] = "one"
        w1_wrote.set()
        return x

    async def w2(x, context):
        await w1_wrote.wait()  # both run at once; w1 writes first
        context["k"] = "two"
        return x

    run = await Pipeline.parallel(Step(w1), Step(w2)).run(1, store=False, context={})
    assert run.status == "failed"
    assert isinstance(run.error, ContextConflictError)
    assert run.error.key == "k" and run.error.steps == ("w1", "w2")


async def test_equal_concurrent_writes_are_not_a_conflict_and_deletes_merge():
    async def w(x, context):
        context["k"] = "same"
        context.pop("gone", None)
        return x

    run = await Pipeline.parallel(Step(w, "w1"), Step(w, "w2")).run(
        1, store=False, context={"gone": 1}
    )
    assert run.status == "completed"
    assert run.context == {"k": "same"}


async def test_attribute_context():
    class Ctx:
        def __init__(self):
            self.seen = ()

    async def a(x, context):
        context.seen = (*context.seen, "a")
        return x

    p = Step(a) >> Step(a, "a2")
    run = await p.run(1, store=False, context=Ctx())
    assert run.context.seen == ("a", "a")


def test_context_adapter_seam():
    from caudal.pipeline.context import RunContext

    class Frozen:
        def __init__(self, d):
            self.d = d

    class Adapter:
        def snapshot(self, ctx):
            return dict(ctx.d)

        def changes(self, base, view):
            return {k: v for k, v in view.items() if base.d.get(k) != v}

        def merge(self, ctx, changes):
            return Frozen({**ctx.d, **changes})

    caudal.register_context_adapter(Frozen, Adapter())
    rc = RunContext(Frozen({"a": 1}))
    base, view, since = rc.begin()
    view["b"] = 2
    rc.merge("s", rc.changes(base, view), since)
    assert rc.value.d == {"a": 1, "b": 2}


# ------------------------------------------------------------------- usage


async def test_usage_from_with_usage_result_fields_and_attributes():
    class LlmOut:
        def __init__(self):
            self.token_counts, self.cost_usd = 7, 0.5

    async def a(x):
        return WithUsage(x + 1, tokens=10, cost_usd=0.25)

    async def b(x):
        return LlmOut()

    p = Step(a) >> Step(b)
    run = await p.run(1, store=False)
    assert run.steps["a"].output == 2  # unwrapped for dependents
    assert (run.steps["a"].tokens, run.steps["a"].cost_usd) == (10, 0.25)
    assert (run.steps["b"].tokens, run.steps["b"].cost_usd) == (7, 0.5)
    assert run.usage == Usage(17, 0.75)
    assert run.total_tokens == 17 and run.total_cost_usd == 0.75


async def test_usage_limit_stops_the_run_naming_limit_and_step():
    async def spend(x):
        return WithUsage(x, tokens=40)

    p = Step(spend, "s1") >> Step(spend, "s2") >> Step(spend, "s3")
    with pytest.raises(UsageLimitExceededError) as ei:
        await p.run(1, store=False, limits=UsageLimits(max_tokens=100))
    e = ei.value
    assert (e.limit, e.step, e.used, e.limit_value) == ("max_tokens", "s3", 120, 100)
    assert "max_tokens=100" in str(e) and "'s3'" in str(e)
    assert e.run.status == "limit_exceeded"
    assert e.run.steps["s3"].status == "completed"


async def test_cost_limit_and_resume_with_a_higher_limit():
    store = MemoryStore()
    calls = []

    async def spend(x):
        calls.append(x)
        return WithUsage(x + 1, cost_usd=0.4)

    p = Step(spend, "s1") >> Step(spend, "s2") >> Step(spend, "s3")
    with pytest.raises(UsageLimitExceededError) as ei:
        await p.run(0, store=store, run_id="r", limits=UsageLimits(max_cost_usd=0.5))
    assert ei.value.step == "s2" and ei.value.limit == "max_cost_usd"
    assert (await store.load_run("r")).info.status == "limit_exceeded"
    # Same limit: stops again at once, nothing runs.
    with pytest.raises(UsageLimitExceededError):
        await p.resume("r", store=store, limits=UsageLimits(max_cost_usd=0.5))
    assert calls == [0, 1]
    run = await p.resume("r", store=store, limits=UsageLimits(max_cost_usd=2))
    assert run.status == "completed" and run.result == 3
    assert calls == [0, 1, 2]
    assert run.total_cost_usd == pytest.approx(1.2)


def test_usage_limits_validation():
    with pytest.raises(ValueError):
        UsageLimits(max_tokens=-1)


# --------------------------------------------------- checkpoints and resume


async def test_resume_runs_only_what_had_not_completed(tmp_path):
    calls = []
    fail = {"c": True}

    async def rec(x, name):
        calls.append(name)
        if fail.get(name):
            raise RuntimeError("c is broken")
        return [*x, name]

    def make(name):
        async def fn(x):
            return await rec(x if isinstance(x, list) else [], name)

        return Step(fn, name)

    p = Pipeline(
        [make("a"), make("b"), make("c"), make("d")],
        depends_on={"b": "a", "c": "a", "d": ["b", "c"]},
    )
    db = tmp_path / "cp.db"
    run = await p.run([], store=db, run_id="r1")
    assert run.status == "failed" and run.steps["d"].status == "skipped"
    assert sorted(calls) == ["a", "b", "c"]
    fail["c"] = False
    calls.clear()
    run2 = await p.resume("r1", store=db)
    assert run2.status == "completed"
    assert sorted(calls) == ["c", "d"]
    assert run2.steps["a"].restored and run2.steps["b"].restored
    assert not run2.steps["c"].restored
    assert run2.result == {"b": ["a", "b"], "c": ["a", "c"]} or run2.result is not None
    # A completed run resumes to itself without running anything.
    calls.clear()
    run3 = await p.resume("r1", store=db)
    assert calls == [] and run3.status == "completed"
    async with SqliteStore(db) as st:
        info = (await st.load_run("r1")).info
    assert info.status == "completed" and info.resumes == 1


async def test_checkpoint_is_durable_before_the_dependent_starts(tmp_path):
    db = tmp_path / "cp.db"
    seen = {}

    async def first(x):
        return "first-output"

    def second(x):
        # A separate connection sees first's committed checkpoint already.
        conn = sqlite3.connect(db)
        rows = conn.execute("SELECT step, status, payload FROM caudal_steps").fetchall()
        conn.close()
        decode = SqliteStore(db).decode_payload
        seen["rows"] = [(s, st, decode("r", "step", p, s)[0]) for s, st, p in rows]
        return x

    await (Step(first) >> Step(second)).run(1, store=db, run_id="r")
    assert seen["rows"] == [("first", "completed", "first-output")]


async def test_context_is_restored_on_resume():
    store = MemoryStore()
    broken = {"on": True}

    async def a(x, context):
        context["a"] = "from a"
        return x

    async def b(x, context):
        if broken["on"]:
            raise RuntimeError("b")
        return context["a"]

    p = Step(a) >> Step(b)
    run = await p.run(1, store=store, context={}, run_id="r")
    assert run.status == "failed"
    broken["on"] = False
    run = await p.resume("r", store=store)
    assert run.result == "from a"
    assert run.context == {"a": "from a"}


async def test_resume_errors():
    store = MemoryStore()
    p = Step(inc) >> Step(dbl)
    with pytest.raises(caudal.RunNotFoundError):
        await p.resume("nope", store=store)
    await p.run(1, store=store, run_id="r")
    with pytest.raises(caudal.CheckpointError, match="already exists"):
        await p.run(1, store=store, run_id="r")
    other = Step(dbl, "x") >> Step(inc, "y")
    with pytest.raises(caudal.CheckpointError, match="does not define"):
        await other.resume("r", store=store)
    with pytest.raises(caudal.CheckpointError, match="needs a store"):
        await p.resume("r", store=False)


async def test_unpicklable_output_fails_the_run_with_a_clear_error():
    async def gen(x):
        return (i for i in range(3))

    run = await (Step(gen) >> Step(inc)).run(1, store=MemoryStore())
    # MemoryStore keeps objects, but the payload is still pickled.
    assert run.status == "failed"
    assert isinstance(run.error, caudal.CheckpointError)
    assert "'gen'" in str(run.error) and "pickle" in str(run.error)


async def test_default_store_is_a_sqlite_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAUDAL_STORE", raising=False)
    run = await (Step(inc) >> Step(dbl)).run(1)
    assert (tmp_path / ".caudal" / "checkpoints.db").exists()
    async with SqliteStore(tmp_path / ".caudal" / "checkpoints.db") as st:
        assert (await st.load_run(run.run_id)).info.status == "completed"


async def test_group_commit_batches_a_wide_level(tmp_path):
    async def leaf(x):
        await asyncio.sleep(0)
        return x

    p = Pipeline([Step(leaf, f"l{i}") for i in range(200)])
    st = SqliteStore(tmp_path / "g.db")
    run = await p.run(1, store=st)
    assert run.status == "completed"
    assert st.transactions < 200  # several checkpoints per transaction
    loaded = await st.load_run(run.run_id)
    assert len(loaded.steps) == 200
    await st.close()
    st1 = SqliteStore(tmp_path / "one.db", group_commit=False)
    await p.run(1, store=st1)
    assert st1.transactions == 200
    await st1.close()


async def test_shared_executor_and_on_step_callback():
    ex = ExecutorCore()
    seen = []
    p = Step(inc) >> Step(dbl)
    run = await p.run(
        1, executor=ex, store=False, on_step=lambda r: seen.append((r.name, r.status))
    )
    assert run.result == 4
    assert seen == [("inc", "completed"), ("dbl", "completed")]
    assert ex.get_optimization_stats()["execution"]["total_executions"] == 2


async def test_current_run_scope():
    async def who(x):
        scope = caudal.current_run()
        scope.memo["seen"] = True
        return scope.run_id

    run = await Pipeline([Step(who)]).run(None, store=False, run_id="rid")
    assert run.result == "rid"
    assert caudal.current_run() is None


async def test_parallel_branches_may_be_pipelines():
    async def a(x):
        return x + 1

    async def b(x):
        return x * 10

    async def c(x):
        return -x

    async def d(parts):
        return parts

    p = Step(inc) >> Pipeline.parallel(Step(a) >> Step(b), Step(c)) >> Step(d)
    assert p.dependencies() == {"inc": [], "a": ["inc"], "b": ["a"], "c": ["inc"], "d": ["b", "c"]}
    run = await p.run(1, store=False)
    assert run.result == {"b": 30, "c": -2}


async def test_step_depends_on_inside_a_chain_attaches_explicitly():
    async def side(x):
        return ("side", x)

    p = Step(inc, "a") >> Step(dbl, "b") >> Step(side, depends_on=("a",))
    assert p.dependencies()["side"] == ["a"]
    run = await p.run(1, store=False)
    assert run.result == {"b": 4, "side": ("side", 2)}
