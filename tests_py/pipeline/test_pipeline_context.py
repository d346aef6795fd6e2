"""Copy-on-write contexts in pipelines (enable_context_optimization):
each step and each parallel branch gets a snapshot of the run context, and
what it changed is merged back under a conflict policy."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping

import pydantic
import pytest

from caudal import (
    Context,
    ContextConflictError,
    ExecutorCore,
    MemoryStore,
    OptimizationConfig,
    Pipeline,
    Step,
)
from caudal.pipeline.context import DELETED, ContextView, RunContext


def executor(cow: bool = True) -> ExecutorCore:
    return ExecutorCore(OptimizationConfig(enable_context_optimization=cow))


async def test_dict_context_is_copy_on_write_by_default():
    seen = {}

    async def a(x, context):
        seen["type"] = type(context)
        seen["mapping"] = isinstance(context, MutableMapping)
        context["a"] = 1
        del context["gone"]
        return x

    async def b(x, context):
        assert context["a"] == 1 and "gone" not in context
        assert dict(context) == {"start": 0, "a": 1}
        context["b"] = context.get("a") + 1
        return x

    ctx = {"start": 0, "gone": True}
    run = await (Step(a) >> Step(b)).run(1, store=False, context=ctx, executor=executor())
    assert run.status == "completed"
    assert seen == {"type": ContextView, "mapping": True}
    assert type(run.context) is dict  # the caller's type comes back
    assert run.context == {"start": 0, "a": 1, "b": 2}
    assert ctx == {"start": 0, "gone": True}  # never mutated


async def test_optimization_off_gives_steps_plain_dicts():
    seen = []

    async def a(x, context):
        seen.append(type(context))
        context["a"] = 1
        return x

    run = await Pipeline.of(Step(a)).run(1, store=False, context={}, executor=executor(cow=False))
    assert seen == [dict] and run.context == {"a": 1}


async def test_context_run_context_shares_structure():
    big = Context({f"k{i}": i for i in range(10_000)})

    async def reader(x, context):
        return context["k5"]

    async def writer(x, context):
        context["k7"] = "new"
        return x

    run = await Pipeline.of(Step(reader)).run(1, store=False, context=big, executor=executor())
    assert run.context is big  # nothing written: the very same Context
    run = await Pipeline.of(Step(writer)).run(
        1, store=False, context=big, executor=executor(cow=False)
    )
    assert isinstance(run.context, Context)  # a Context is always copy-on-write
    assert run.context["k7"] == "new" and big["k7"] == 7 and len(run.context) == 10_000


async def test_parallel_branches_get_snapshots_and_merge():
    async def left(x, context):
        assert "right" not in context
        context["left"] = "L"
        await asyncio.sleep(0.001)
        return x

    async def right(x, context):
        assert "left" not in context
        await asyncio.sleep(0.002)
        context["right"] = "R"
        return x

    async def after(x, context):
        return (context["left"], context["right"])

    p = Pipeline.parallel(Step(left), Step(right)) >> Step(after)
    run = await p.run(1, store=False, context={"base": 0}, executor=executor())
    assert run.status == "completed"
    assert run.context == {"base": 0, "left": "L", "right": "R"}
    assert run.result == ("L", "R")


async def w1(x, context):
    await asyncio.sleep(0.001)
    context["k"] = "one"
    return x


async def w2(x, context):
    await asyncio.sleep(0.005)
    context["k"] = "two"
    return x


async def test_conflict_policies():
    p = Pipeline.parallel(Step(w1), Step(w2))
    run = await p.run(1, store=False, context={}, executor=executor())
    assert isinstance(run.error, ContextConflictError)
    assert run.error.key == "k" and run.error.steps == ("w1", "w2")

    run = await p.run(
        1, store=False, context={}, executor=executor(), context_conflicts="last_writer_wins"
    )
    assert run.status == "completed" and run.context == {"k": "two"}

    calls = []

    def combine(key, current, new):
        calls.append((key, current, new))
        return f"{current}+{new}"

    run = await p.run(1, store=False, context={}, executor=executor(), context_conflicts=combine)
    assert run.context == {"k": "one+two"} and calls == [("k", "one", "two")]

    with pytest.raises(ValueError, match="context_conflicts"):
        await p.run(1, store=False, context={}, context_conflicts="first")


async def test_pydantic_context_still_works():
    class Ctx(pydantic.BaseModel):
        user: str
        seen: tuple[str, ...] = ()

    async def a(x, context):
        assert isinstance(context, Ctx)
        context.seen = (*context.seen, "a")
        return x

    original = Ctx(user="u1")
    run = await (Step(a) >> Step(a, "a2")).run(
        1, store=False, context=original, executor=executor()
    )
    assert isinstance(run.context, Ctx)
    assert run.context.seen == ("a", "a") and run.context.user == "u1"
    assert original.seen == ()


async def test_checkpoints_resume_across_the_setting():
    """A run checkpointed with copy-on-write contexts resumes with plain
    dict snapshots (the changes stored are the same either way)."""
    store = MemoryStore()
    fail = {"b": True}

    async def a(x, context):
        context["a"] = "from a"
        del context["tmp"]
        return x

    async def b(x, context):
        if fail["b"]:
            raise RuntimeError("b")
        assert type(context) is dict  # resumed with the optimization off
        return (context["a"], "tmp" in context)

    p = Step(a) >> Step(b)
    run = await p.run(1, store=store, context={"tmp": 1}, run_id="r", executor=executor())
    assert run.status == "failed"
    fail["b"] = False
    run = await p.resume("r", store=store, executor=executor(cow=False))
    assert run.result == ("from a", False) and run.context == {"a": "from a"}


def test_run_context_changes_are_only_what_changed():
    rc = RunContext({f"k{i}": i for i in range(1000)}, cow=True)
    assert rc.copy_on_write
    base, view, seq = rc.begin()
    assert isinstance(base, Context) and view.context() is base
    view["k1"] = 1  # the same value: not a change
    view["k2"] = "two"
    del view["k3"]
    view["new"] = None
    assert rc.changes(base, view) == {"k2": "two", "k3": DELETED, "new": None}
    rc.merge("s", rc.changes(base, view), seq)
    assert rc.result()["k2"] == "two" and "k3" not in rc.result()
    assert type(rc.result()) is dict and len(rc.result()) == 1000
