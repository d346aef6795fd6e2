"""Reprs for the terminal and the notebook: StepResult, OptimizationConfig,
stats, recommendations, pipeline runs. The stats and recommendations stay
plain-dict/list compatible."""

import asyncio
import json
import pickle

import caudal
from caudal import ExecutorCore, OptimizationConfig, Pipeline, Step, StepResult
from caudal._display import OptimizationStats, Recommendations, StatsSection


async def double(x):
    return x * 2


async def fails(x):
    raise ValueError("bad <input> & more")


def test_step_result_repr_is_short_and_readable():
    r = StepResult(name="fetch", output="x" * 5000, attempts=2, latency_s=0.0123456789)
    text = repr(r)
    assert text.startswith("StepResult(name='fetch', success=True, output='xxx")
    assert "attempts=2" in text and "latency_s=0.01235" in text
    assert len(text) < 200  # a 5,000-character output is abridged
    bad = StepResult(name="f", success=False, feedback="ValueError: no")
    assert "success=False, feedback='ValueError: no'" in repr(bad)


def test_step_result_html_escapes_user_content():
    r = StepResult(name="<b>step</b>", output="<script>alert(1)</script>", cache_hit=True)
    page = r._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;step&lt;/b&gt;" in page
    assert "<table" in page and "cache hit" in page and "yes" in page


async def test_failed_result_html_names_the_error():
    r = await ExecutorCore().execute(Step(fails), 1)
    page = r._repr_html_()
    assert "failed" in page and "ValueError" in page and "bad &lt;input&gt; &amp; more" in page


def test_config_html_highlights_changed_fields():
    cfg = OptimizationConfig(cache_max_size=1234, enable_cache_optimization=True)
    page = cfg._repr_html_()
    assert "2 field(s) changed from the default" in page
    names = [f["name"] for f in OptimizationConfig.fields()]
    assert all(f"<code>{n}</code>" in page for n in names)  # every field is listed
    # The changed rows carry the highlight, an unchanged one does not.
    row = page.rsplit("<code>cache_max_size</code>", 1)[0].rsplit("<tr>", 1)[1]
    assert "background:#fff3b0" in row
    row = page.rsplit("<code>object_pool_max_size</code>", 1)[0].rsplit("<tr>", 1)[1]
    assert "background" not in row
    assert "all fields at their defaults" in OptimizationConfig()._repr_html_()
    assert repr(cfg) == "OptimizationConfig(enable_cache_optimization=True, cache_max_size=1234)"


async def test_stats_stay_dicts_and_show_tables():
    ex = ExecutorCore(optimization_config=OptimizationConfig(enable_cache_optimization=True))
    step = Step(double, name="dbl<1>", cache=True)
    await ex.execute_many(step, [1, 2, 1, 2, 3])
    stats = ex.get_optimization_stats()
    assert isinstance(stats, dict) and isinstance(stats["cache"], dict)
    assert stats["cache"]["hit_rate"] == stats["cache"]["hits"] / 5
    assert stats["execution"]["steps"]["dbl<1>"]["executions"] == 5
    plain = json.loads(json.dumps(stats))
    assert plain == stats.to_dict() == stats
    assert pickle.loads(pickle.dumps(stats)) == stats
    assert type(pickle.loads(pickle.dumps(stats))) is OptimizationStats

    text = repr(stats)
    assert "[execution]" in text and "[cache]" in text
    assert "hit_rate" in text and "%" in text  # rates as percentages
    assert "p95_ms" in text and "dbl<1>" in text  # the per-step table
    assert repr(stats["cache"]).startswith("[cache]\n")

    page = stats._repr_html_()
    assert page.count("<table") >= len(stats)  # a table per section (and nested ones)
    assert "dbl&lt;1&gt;" in page and "dbl<1>" not in page
    assert isinstance(stats["execution"], StatsSection)
    assert "<table" in stats["execution"]._repr_html_()


async def test_recommendations_are_a_list_sorted_by_priority():
    # (A threshold the test process cannot reach: under ASan it holds more
    # than the 500 MB default, and a memory recommendation would join in.)
    cfg = OptimizationConfig(
        slow_execution_threshold_ms=0.0001,
        enable_circuit_breaker=False,
        memory_pressure_threshold_mb=1e6,
    )
    ex = ExecutorCore(optimization_config=cfg)

    async def slowish(x):
        await asyncio.sleep(0)
        if x % 2:
            raise ConnectionError("down")
        return x

    await ex.execute_many(Step(slowish, name="api"), range(20))
    recs = ex.get_performance_recommendations()
    assert isinstance(recs, list) and isinstance(recs, Recommendations) and recs
    assert all(isinstance(r, dict) and r["description"] for r in recs)
    prios = [r["priority"] for r in recs]
    assert prios == sorted(prios, key=["high", "medium", "low"].index)
    text = repr(recs)
    assert text.splitlines()[0] == f"Recommendations ({len(recs)}):"
    assert text.splitlines()[1].startswith("  [high] ")
    page = recs._repr_html_()
    assert page.count("<tr>") == len(recs) + 1
    assert page.index(">high<") < page.index(">medium<")
    # A list the user reorders is still shown by priority.
    shuffled = Recommendations(reversed(recs))
    assert repr(shuffled) == text
    assert "none" in repr(Recommendations())


async def test_pipeline_run_repr_and_html_show_the_step_table():
    async def fetch(x):
        await asyncio.sleep(0.001)
        return x

    async def broken(x):
        raise RuntimeError("<boom>")

    p = Pipeline(
        [Step(fetch, name="fetch"), Step(broken, name="parse<x>"), Step(double, name="report")],
        depends_on={"parse<x>": ["fetch"], "report": ["parse<x>"]},
    )
    run = await p.run(1, executor=ExecutorCore(), store=False)
    text = repr(run)
    lines = text.splitlines()
    assert lines[0] == f"PipelineRun({run.run_id!r}, failed)"
    assert "1 completed, 1 failed, 1 skipped" in lines[1]
    header = lines[2].split()
    assert header[:4] == ["step", "status", "start", "ms"]
    assert "attempts" in header and "cache" in header
    rows = {ln.split()[0]: ln for ln in lines[4:]}
    assert "completed" in rows["fetch"] and "skipped" in rows["report"]
    assert "RuntimeError: <boom>" in rows["parse<x>"]
    page = run._repr_html_()
    assert page.count("<tr>") == 4 and "parse&lt;x&gt;" in page and "&lt;boom&gt;" in page
    assert "<boom>" not in page


def test_display_helpers_are_reexported():
    assert caudal.OptimizationStats is OptimizationStats
    assert caudal.Recommendations is Recommendations


def test_stats_with_a_non_mapping_section_still_show():
    stats = OptimizationStats({"execution": {"p95_ms": 1.5}, "version": 3})
    assert repr(stats) == "[execution]\n  p95_ms  1.5 ms\n[version]\n  version  3"
    assert stats.to_dict() == {"execution": {"p95_ms": 1.5}, "version": 3}
    assert "<b>version</b>" in stats._repr_html_()


async def test_a_multi_line_error_message_keeps_the_terminal_table_whole():
    ex = ExecutorCore(OptimizationConfig(enable_optimized_error_handling=True))

    async def boom(x):
        raise ValueError("first line\nsecond line\n\tthird line " + "x" * 200)

    for i in range(3):
        assert not (await ex.execute(Step(boom, "boom"), i)).success
    text = repr(ex.get_optimization_stats()["error_handling"])
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split() == ["patterns"])
    header, rule, *rows = lines[start + 1 :]
    assert set(rule.strip()) <= {"-", " "}, rule
    assert rows and all(len(r) <= len(rule) + 1 for r in rows), text
    assert "first line ⏎ second line ⏎ third line" in text
    assert "…" in text and "x" * 100 not in text


async def test_stats_html_opens_with_a_summary_and_stays_within_the_page():
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True))

    async def echo(x):
        return x

    step = Step(echo, "echo", cache=True)
    for i in (1, 2, 1, 1):
        await ex.execute(step, i)
    stats = ex.get_optimization_stats()
    html_text = stats._repr_html_()
    head = html_text[: html_text.index("<table")]
    assert "caudal optimization stats</b>: 4 executions, 0 failed; p95 " in head, head
    assert "cache hits 2 of 4 lookups; 0 open breakers" in head, head
    # The sections people read first come first; memory counters later.
    assert html_text.index("<b>execution</b>") < html_text.index("<b>cache</b>")
    assert html_text.index("<b>cache</b>") < html_text.index("<b>memory</b>")
    # Every table is bounded by its box and scrolls inside it rather than
    # widening the page (test_display_browser.py measures it in Chromium).
    assert html_text.count("<table ") == html_text.count("max-width:100%;display:block")
    assert caudal._display_stats.stats_summary({}) == "no executions yet"
