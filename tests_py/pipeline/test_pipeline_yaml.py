"""YAML pipelines: schema errors with file, line and field; settings mapped
to Steps; <AUTO> tags parsed, nested, resolved at run time and cached."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

import caudal
from caudal import PipelineDefinitionError, RetryStrategy, Step, load_pipeline
from caudal.pipeline.yaml import AutoTag, AutoTemplate, parse_auto_tags


def ident(x):
    return x


async def add(x, n=1):
    return x + n


REGISTRY = {"ident": ident, "add": add, "step_obj": Step(add, max_retries=2, timeout_s=9)}


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# (id, yaml, expected line, expected field, expected message fragment)
MALFORMED = [
    ("not-yaml", "steps: [a, b\n", 2, None, "invalid YAML"),
    ("tab-indent", "steps:\n\t- name: a\n", 2, None, "invalid YAML"),
    ("top-not-mapping", "- a\n- b\n", 1, None, "expected a mapping, got a list"),
    ("empty", "", 1, None, "empty pipeline definition"),
    ("no-steps", "name: x\n", 1, "steps", "missing required field 'steps'"),
    ("unknown-top", "name: x\nstepz: []\nsteps: []\n", 2, "stepz", "unknown field 'stepz'"),
    ("steps-not-list", "steps: {a: 1}\n", 1, "steps", "expected a list of steps"),
    ("steps-empty", "steps: []\n", 1, "steps", "at least one step"),
    (
        "step-not-mapping",
        y("""
        steps:
          - name: a
            uses: ident
          - just a string
        """),
        4,
        "steps[1]",
        "expected a mapping, got 'just a string'",
    ),
    (
        "missing-uses",
        y("""
        steps:
          - name: a
        """),
        2,
        "steps[0]",
        "missing required field 'uses'",
    ),
    (
        "unknown-registry-name",
        y("""
        steps:
          - name: a
            uses: nothing_here
        """),
        3,
        "steps[0].uses",
        "'nothing_here' is not in the registry (known: add, ident, step_obj)",
    ),
    (
        "bad-timeout",
        y("""
        steps:
          - name: a
            uses: ident
            timeout_s: soon
        """),
        4,
        "steps[0].timeout_s",
        "expected a positive number, got 'soon'",
    ),
    (
        "negative-timeout",
        y("""
        steps:
          - name: a
            uses: ident
            timeout_s: -1
        """),
        4,
        "steps[0].timeout_s",
        "expected a positive number, got '-1'",
    ),
    (
        "bad-retries",
        y("""
        steps:
          - name: a
            uses: ident
            max_retries: 1.5
        """),
        4,
        "steps[0].max_retries",
        "expected an integer >= 0, got '1.5'",
    ),
    (
        "bad-optional",
        y("""
        steps:
          - name: a
            uses: ident
            optional: maybe
        """),
        4,
        "steps[0].optional",
        "expected true or false, got 'maybe'",
    ),
    (
        "unknown-step-field",
        y("""
        steps:
          - name: a
            uses: ident
            timeout: 3
        """),
        4,
        "steps[0].timeout",
        "unknown field 'timeout'",
    ),
    (
        "duplicate-key",
        y("""
        steps:
          - name: a
            uses: ident
            uses: add
        """),
        4,
        "steps[0].uses",
        "duplicate key 'uses' (first on line 3)",
    ),
    (
        "duplicate-step",
        y("""
        steps:
          - name: a
            uses: ident
          - name: a
            uses: add
        """),
        4,
        "steps[1].name",
        "duplicate step name 'a' (first defined on line 2)",
    ),
    (
        "bad-step-name",
        y("""
        steps:
          - name: "has space"
            uses: ident
        """),
        2,
        "steps[0].name",
        "is not a valid step name",
    ),
    (
        "retry-bad-strategy",
        y("""
        steps:
          - name: a
            uses: ident
            retry:
              max_attempts: 3
              strategy: sometimes
        """),
        6,
        "steps[0].retry.strategy",
        "expected exponential, linear or fixed, got 'sometimes'",
    ),
    (
        "retry-unknown-field",
        y("""
        steps:
          - name: a
            uses: ident
            retry: {attempts: 3}
        """),
        4,
        "steps[0].retry.attempts",
        "unknown field 'attempts'",
    ),
    (
        "retry-and-max-retries",
        y("""
        steps:
          - name: a
            uses: ident
            max_retries: 2
            retry: {max_attempts: 3}
        """),
        5,
        "steps[0].retry",
        "give max_retries or retry, not both",
    ),
    (
        "with-not-mapping",
        y("""
        steps:
          - name: a
            uses: ident
            with: [1, 2]
        """),
        4,
        "steps[0].with",
        "expected a mapping of parameters, got a list",
    ),
    (
        "limits-bad",
        y("""
        limits:
          max_tokens: lots
        steps:
          - name: a
            uses: ident
        """),
        2,
        "limits.max_tokens",
        "expected an integer >= 0, got 'lots'",
    ),
    (
        "missing-dependency",
        y("""
        steps:
          - name: a
            uses: ident
          - name: b
            uses: ident
            depends_on: [a, ghost]
        """),
        6,
        "steps[1].depends_on",
        "step 'b' depends on 'ghost', which is not a step",
    ),
    (
        "cycle",
        y("""
        steps:
          - name: a
            uses: ident
            depends_on: c
          - name: b
            uses: ident
            depends_on: a
          - name: c
            uses: ident
            depends_on: b
        """),
        2,
        "steps[0].depends_on",
        "circular dependency: a -> c -> b -> a",
    ),
    (
        "unclosed-auto",
        y("""
        steps:
          - name: a
            uses: add
            with:
              n: "<AUTO>pick a number"
        """),
        5,
        "steps[0].with.n",
        "unclosed <AUTO> tag",
    ),
    (
        "unclosed-auto-in-block-scalar",
        y("""
        steps:
          - name: a
            uses: add
            with:
              n: |
                first line
                <AUTO>outer <AUTO>inner</AUTO>
                never closed
        """),
        7,
        "steps[0].with.n",
        "unclosed <AUTO> tag",
    ),
    (
        "stray-closing-auto",
        y("""
        steps:
          - name: a
            uses: add
            with:
              n: "oops</AUTO>"
        """),
        5,
        "steps[0].with.n",
        "closing </AUTO> without an opening <AUTO>",
    ),
    (
        "auto-needs-resolver",
        y("""
        steps:
          - name: a
            uses: add
            with:
              n: "<AUTO>pick</AUTO>"
        """),
        5,
        None,
        "<AUTO> tags need a resolver",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [pytest.param(t, ln, f, m, id=i) for i, t, ln, f, m in MALFORMED],
)
def test_malformed_definitions_report_line_and_field(tmp_path, text, line, field, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PipelineDefinitionError) as ei:
        load_pipeline(path, REGISTRY)
    e = ei.value
    assert e.file == str(path)
    assert message in str(e)
    assert (e.line, e.field) == (line, field), str(e)
    prefix = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert e.problems[0].startswith(prefix), e.problems[0]


def test_all_problems_are_reported_in_line_order():
    text = y("""
    steps:
      - name: a
        uses: nope
        timeout_s: x
      - name: b
        uses: ident
        depends_on: zz
    """)
    with pytest.raises(PipelineDefinitionError) as ei:
        load_pipeline(text, REGISTRY)
    lines = [p.split(":")[1] for p in ei.value.problems]
    assert lines == ["3", "4", "7"]
    assert ei.value.file == "<string>"


def test_dependency_errors_keep_their_type():
    text = y("""
    steps:
      - name: a
        uses: ident
        depends_on: missing
    """)
    with pytest.raises(caudal.DependencyError) as ei:
        load_pipeline(text, REGISTRY)
    assert (ei.value.step, ei.value.missing, ei.value.line) == ("a", "missing", 4)


def test_settings_map_to_steps():
    text = y("""
    name: settings
    context: {user: ada}
    limits: {max_tokens: 10, max_cost_usd: 0.5}
    steps:
      - name: a
        uses: add
        with: {n: 5}
        retry: {max_attempts: 4, base_delay: 0.5, strategy: linear, jitter: 0.1}
        timeout_s: 3
        cache: false
        cache_ttl_s: 60
        tags: [t1, t2]
      - name: b
        uses: step_obj
        depends_on: a
        optional: true
      - name: c
        uses: step_obj
        depends_on: [a]
        max_retries: 0
        fallback: ident
    """)
    p = load_pipeline(text, REGISTRY)
    assert p.name == "settings"
    assert p.levels() == [["a"], ["b", "c"]]
    steps = {n.name: n.step for n in p._nodes}
    a, b, c = steps["a"], steps["b"], steps["c"]
    assert a.retry == RetryStrategy(max_attempts=4, base_delay=0.5, strategy="linear", jitter=0.1)
    assert (a.timeout_s, a.cache, a.cache_ttl_s, a.tags) == (3.0, False, 60.0, ("t1", "t2"))
    # A registry Step keeps its own settings unless the YAML overrides them.
    assert (b.max_retries, b.timeout_s, b.optional) == (2, 9.0, True)
    assert (c.max_retries, c.timeout_s, c.fallback) == (0, 9.0, ident)
    assert p.defaults["context"] == {"user": "ada"}
    assert p.defaults["limits"] == caudal.UsageLimits(max_tokens=10, max_cost_usd=0.5)
    assert p.source["yaml"] == text


async def test_yaml_pipeline_runs_with_params():
    text = y("""
    steps:
      - name: a
        uses: add
        with: {n: 10}
      - name: b
        uses: add
        depends_on: a
    """)
    run = await load_pipeline(text, REGISTRY).run(1, store=False)
    assert run.result == 12


def test_parse_auto_tags_nested():
    v, problem, _ = parse_auto_tags("x <AUTO>a <AUTO>b</AUTO> c</AUTO> y")
    assert problem is None
    assert isinstance(v, AutoTemplate)
    assert v.parts[0] == "x "
    outer = v.parts[1]
    assert isinstance(outer, AutoTag) and outer.parts[0] == "a "
    assert isinstance(outer.parts[1], AutoTag) and outer.parts[1].parts == ["b"]
    assert v.parts[2] == " y"
    assert parse_auto_tags("plain") == ("plain", None, 0)
    assert parse_auto_tags("<AUTO>a")[1].startswith("unclosed")
    assert parse_auto_tags("a</AUTO>")[1].startswith("closing")


async def test_auto_tags_resolved_at_run_time_nested_and_cached_per_run():
    calls = []

    async def resolver(text, context):
        calls.append(text)
        await asyncio.sleep(0.001)
        return {"inner": "INNER", "count": 3}.get(text, f"<{text}>|{context['who']}")

    async def show(x, q, n, context=None):
        return (x, q, n, context["who"])

    text = y("""
    context: {who: ctx}
    steps:
      - name: a
        uses: show
        with:
          q: "ask <AUTO>outer <AUTO>inner</AUTO> text</AUTO>!"
          n: "<AUTO>count</AUTO>"
      - name: b
        uses: show
        with:
          q: "<AUTO>outer <AUTO>inner</AUTO> text</AUTO>"
          n: "<AUTO>count</AUTO>"
    """)
    p = load_pipeline(text, {"show": show}, resolver=resolver)
    run = await p.run("in", store=False)
    assert run.status == "completed", run.error
    assert run.result["a"] == ("in", "ask <outer INNER text>|ctx!", 3, "ctx")
    # A value that is exactly one tag takes the answer as is (here a string).
    assert run.result["b"] == ("in", "<outer INNER text>|ctx", 3, "ctx")
    # Each distinct text asked once per run, even by concurrent steps.
    assert sorted(calls) == sorted(["inner", "outer INNER text", "count"])
    calls.clear()
    await p.run("in", store=False)
    assert len(calls) == 3  # a new run asks again


async def test_failing_resolver_fails_the_step_and_is_not_cached():
    n = {"calls": 0}

    async def resolver(text, context):
        n["calls"] += 1
        if n["calls"] == 1:
            raise ConnectionError("llm down")
        return 5

    text = y("""
    steps:
      - name: a
        uses: add
        max_retries: 1
        with: {n: "<AUTO>five</AUTO>"}
    """)
    run = await load_pipeline(text, REGISTRY, resolver=resolver).run(1, store=False)
    assert run.status == "completed" and run.result == 6
    assert run.steps["a"].attempts == 2


async def test_fallback_and_tags_nested_in_lists():
    async def broken(x, items):
        raise RuntimeError("primary down")

    async def backup(x, items=None):
        return ("backup", x)

    async def listy(x, items):
        return items

    async def resolver(text, context):
        return text.upper()

    text = y("""
    steps:
      - name: a
        uses: broken
        with: {items: []}
        fallback: backup
      - name: b
        uses: listy
        depends_on: a
        with:
          items: ["<AUTO>x</AUTO>", {k: "v <AUTO>y</AUTO>"}, 3]
    """)
    reg = {"broken": broken, "backup": backup, "listy": listy}
    run = await load_pipeline(text, reg, resolver=resolver).run(1, store=False)
    assert run.status == "completed", run.error
    assert run.outputs["a"] == ("backup", 1)
    assert run.result == ["X", {"k": "v Y"}, 3]


class _NotAStepClass:
    def run(self, data):
        return data


def _gen_step(x):
    yield x


@pytest.mark.parametrize(
    ("uses", "message"),
    [("cls", "pass an instance"), ("gen", "generator functions are not steps")],
)
def test_uses_naming_a_class_or_generator_is_refused_at_its_line(tmp_path, uses, message):
    path = tmp_path / "p.yaml"
    path.write_text(
        y(f"""
    steps:
      - name: a
        uses: ident
      - name: b
        uses: {uses}
    """)
    )
    with pytest.raises(PipelineDefinitionError) as ei:
        load_pipeline(path, {"ident": ident, "cls": _NotAStepClass, "gen": _gen_step})
    assert (ei.value.line, ei.value.field) == (5, "steps[1].uses"), str(ei.value)
    assert message in str(ei.value)
