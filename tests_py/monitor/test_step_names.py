"""Per-name state: max_tracked_steps reclaims idle step names into one
"(reclaimed)" row, and the read-outs still add up.

A name is idle once no step object using it is in the executor's step table
(which holds up to 4,096 of them), so these tests go past that many names."""

from __future__ import annotations

import gc

import pytest

from caudal import ExecutorCore, OptimizationConfig, Step
from caudal.errors import ConfigurationError

MANY = 4096 + 500  # more distinct steps than the step table holds


async def _echo(x):
    return x


async def _boom(x):
    raise ValueError(x)


@pytest.mark.parametrize("bad", [0, -3])
async def test_a_bound_below_one_is_refused_naming_the_field(bad):
    c = OptimizationConfig(max_tracked_steps=bad)
    assert any(p.startswith("max_tracked_steps must be positive") for p in c.validate())
    with pytest.raises(ConfigurationError, match="max_tracked_steps"):
        ExecutorCore(c)
    ex = ExecutorCore()
    with pytest.raises(ConfigurationError, match="max_tracked_steps"):
        await ex.apply_optimization_config(c)
    assert ex.optimization_config.max_tracked_steps is None


def test_the_default_keeps_every_name():
    assert OptimizationConfig().max_tracked_steps is None
    c = OptimizationConfig.from_json(OptimizationConfig(max_tracked_steps=50).to_json())
    assert c.max_tracked_steps == 50


async def test_without_a_bound_every_name_keeps_its_row():
    ex = ExecutorCore()
    for i in range(40):
        await ex.execute(Step(_echo, f"s{i}"), i)
    names = ex.get_optimization_stats()["execution"]["step_names"]
    assert names == {"tracked": 40, "reclaimed": 0, "max_tracked": None}
    assert "(reclaimed)" not in ex.get_optimization_stats()["execution"]["steps"]


async def test_idle_names_are_reclaimed_and_totals_add_up():
    ex = ExecutorCore(OptimizationConfig(max_tracked_steps=16, enable_cache_optimization=False))
    for i in range(MANY):
        step = Step(_boom if i % 10 == 0 else _echo, f"name-{i}")
        await ex.execute(step, i)
    gc.collect()
    stats = ex.get_optimization_stats()["execution"]
    names = stats["step_names"]
    assert names["max_tracked"] == 16
    assert names["reclaimed"] > 0
    assert names["tracked"] + names["reclaimed"] == MANY
    # What stays: the names of the steps still in the step table (it keeps
    # the 4,096 most recently used) and the bound's share.
    assert names["tracked"] <= 4096 + 16
    rows = stats["steps"]
    assert "(reclaimed)" in rows
    assert len(rows) == names["tracked"] + 1
    # Every execution is in exactly one row; rows add up to the totals.
    assert stats["total_executions"] == MANY
    assert sum(r["executions"] for r in rows.values()) == stats["total_executions"]
    assert sum(r["successes"] for r in rows.values()) == stats["successes"]
    failures = (MANY + 9) // 10
    assert sum(r["failures"] for r in rows.values()) == stats["failures"] == failures
    # The reclaimed row's latency is the sum of the reclaimed names'.
    buckets = ex.latency_buckets("(reclaimed)")
    assert sum(c for _, _, c in buckets) == rows["(reclaimed)"]["executions"]
    assert sum(c for _, _, c in ex.latency_buckets()) == MANY


async def test_a_reclaimed_name_that_runs_again_starts_a_fresh_row():
    ex = ExecutorCore(OptimizationConfig(max_tracked_steps=4))
    await ex.execute(Step(_echo, "again"), 1)
    for i in range(MANY):
        await ex.execute(Step(_echo, f"other-{i}"), i)
    gc.collect()
    assert "again" not in ex.get_optimization_stats()["execution"]["steps"]
    await ex.execute(Step(_echo, "again"), 2)
    rows = ex.get_optimization_stats()["execution"]["steps"]
    assert rows["again"]["executions"] == 1
    total = ex.get_optimization_stats()["execution"]["total_executions"]
    assert sum(r["executions"] for r in rows.values()) == total == MANY + 2


async def test_reset_stats_zeroes_the_reclaimed_row_too():
    ex = ExecutorCore(OptimizationConfig(max_tracked_steps=4))
    for i in range(MANY):
        await ex.execute(Step(_echo, f"n-{i}"), i)
    assert ex.get_optimization_stats()["execution"]["step_names"]["reclaimed"] > 0
    ex.reset_stats()
    stats = ex.get_optimization_stats()["execution"]
    assert stats["total_executions"] == 0
    assert all(r["executions"] == 0 for r in stats["steps"].values())


async def test_a_live_step_whose_name_was_reclaimed_runs_again_in_a_fresh_row():
    # The executor remembers a live Step's analysis (and this executor's
    # lookups for it) after the step table evicted it; that memory must not
    # keep the name's stats alive, nor point at stats the bound reclaimed.
    ex = ExecutorCore(OptimizationConfig(max_tracked_steps=8, enable_cache_optimization=False))
    steps = [Step(_echo, f"live-{i}") for i in range(MANY)]
    for i, step in enumerate(steps):
        await ex.execute(step, i)
    assert ex.get_optimization_stats()["execution"]["step_names"]["reclaimed"] > 0
    for i, step in enumerate(steps[:50]):  # evicted from the table, names reclaimed
        assert (await ex.execute(step, -i)).output == -i
    stats = ex.get_optimization_stats()["execution"]
    rows = stats["steps"]
    assert all(rows[f"live-{i}"]["executions"] == 1 for i in range(50))
    assert sum(r["executions"] for r in rows.values()) == stats["total_executions"] == MANY + 50
