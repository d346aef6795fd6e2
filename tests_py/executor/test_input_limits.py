"""Hostile and out-of-range input: YAML pipeline definitions, the executor's
config, the ``caudal`` command's imports and the automatic optimization of
the cache. Every bad input is a PipelineDefinitionError / ConfigurationError
saying where; nothing hangs, crashes or raises another exception."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from caudal import (
    ConfigurationError,
    ExecutorCore,
    OptimizationConfig,
    PipelineDefinitionError,
    Step,
    load_pipeline,
)


async def echo(x):
    return x


def twice(x, **kw):
    return (x, kw)


REG = {"echo": echo, "twice": twice}


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def refused(text: str, **kw) -> PipelineDefinitionError:
    with pytest.raises(PipelineDefinitionError) as e:
        load_pipeline(text, REG, **kw)
    exc = e.value
    assert exc.line is not None, exc.problems
    assert exc.problems[0].startswith(f"<string>:{exc.line}:"), exc.problems
    return exc


# A child process runs load_pipeline on the text from stdin and prints the
# outcome: a hang fails the test (timeout) instead of hanging the suite.
_CHILD = textwrap.dedent(
    """
    import json, sys
    from caudal import load_pipeline, PipelineDefinitionError
    async def echo(x):
        return x
    text = sys.stdin.read()
    try:
        load_pipeline(text, {"echo": echo})
    except PipelineDefinitionError as exc:
        print(json.dumps({"type": "PipelineDefinitionError", "line": exc.line,
                          "field": exc.field, "problems": exc.problems}))
    except BaseException as exc:
        print(json.dumps({"type": type(exc).__name__, "problems": [str(exc)[:300]]}))
    else:
        print(json.dumps({"type": None}))
    """
)


def load_in_child(text: str, timeout: float = 60) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bomb(levels: int, indent: str = "      ") -> str:
    lines = [f"{indent}l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*l{i - 1}"] * 9)
        lines.append(f"{indent}l{i}: &l{i} [{refs}]")
    return "\n".join(lines)


# ---------------------------------------------------------------- aliases


def test_alias_bomb_in_with_is_refused_with_its_line():
    text = "steps:\n  - name: a\n    uses: echo\n    with:\n" + bomb(9) + "\n"
    out = load_in_child(text)
    assert out["type"] == "PipelineDefinitionError", out
    assert "alias" in out["problems"][0] and "nodes" in out["problems"][0]
    assert out["line"] is not None and 5 <= out["line"] <= 14, out


def test_alias_bomb_under_context_is_refused():
    text = "context:\n" + bomb(9, "  ") + "\nsteps:\n  - name: a\n    uses: echo\n"
    out = load_in_child(text)
    assert out["type"] == "PipelineDefinitionError", out
    assert "alias" in out["problems"][0]


def test_recursive_alias_is_a_clear_error():
    exc = refused(
        doc(
            """
            steps:
              - name: a
                uses: twice
                with:
                  loop: &x [1, *x]
            """
        )
    )
    assert "refers to itself" in exc.message
    assert exc.line == 5


def test_recursive_alias_under_context():
    exc = refused("context: &c {me: *c}\nsteps: [{name: a, uses: echo}]\n")
    assert "refers to itself" in exc.message and exc.line == 1


def test_deep_nesting_is_refused_not_a_recursion_error():
    text = "steps:\n  - name: a\n    uses: twice\n    with:\n      x: " + "[" * 3000 + "]" * 3000
    exc = refused(text + "\n")
    assert "nested" in exc.message and exc.line == 5


def test_ordinary_aliases_still_load():
    p = load_pipeline(
        doc(
            """
            context:
              defaults: &d {model: small, temperature: 0.5}
              other: *d
            steps:
              - name: a
                uses: twice
                with: {opts: *d, more: [*d, *d]}
            """
        ),
        REG,
    )
    out = asyncio.run(p.run(1))
    assert out.result == (
        1,
        {
            "opts": {"model": "small", "temperature": 0.5},
            "more": [
                {"model": "small", "temperature": 0.5},
                {"model": "small", "temperature": 0.5},
            ],
        },
    )


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_s", ".nan"),
        ("timeout_s", ".inf"),
        ("cache_ttl_s", ".inf"),
        ("cache_ttl_s", ".NaN"),
        ("num_cpus", ".nan"),
        ("timeout_s", "1.0e+10"),  # more than the core can count in ns
        ("max_retries", "100000000000000000000"),
        ("max_retries", "1.0e+20"),
        ("max_retries", "1e20"),
    ],
)
def test_step_numbers_are_finite_and_bounded(field, value):
    exc = refused(f"steps:\n  - name: a\n    uses: echo\n    {field}: {value}\n")
    assert exc.field == f"steps[0].{field}" and exc.line == 4, exc.problems


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attempts", "100000000000000000000"),
        ("base_delay", ".nan"),
        ("max_backoff", ".inf"),
        ("backoff_factor", ".inf"),
        ("jitter", ".nan"),
    ],
)
def test_retry_numbers_are_finite_and_bounded(field, value):
    exc = refused(f"steps:\n  - name: a\n    uses: echo\n    retry:\n      {field}: {value}\n")
    assert exc.field == f"steps[0].retry.{field}" and exc.line == 5, exc.problems


def test_limits_are_finite():
    exc = refused("limits: {max_cost_usd: .inf}\nsteps: [{name: a, uses: echo}]\n")
    assert exc.field == "limits.max_cost_usd" and exc.line == 1


def test_largest_allowed_step_numbers_load():
    p = load_pipeline(
        "steps:\n  - {name: a, uses: echo, max_retries: 1000, timeout_s: 1000000000}\n", REG
    )
    assert len(p) == 1


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "steps:\n  - name: a\n    uses: twice\n    with:\n"
            "      cmd: !!python/object/apply:os.system [echo hi]\n",
            5,
        ),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      x: !!python/name:os.system\n", 5),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      x: !custom 3\n", 5),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      x: !!set {a, b}\n", 5),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      !!python/tuple [k]: 1\n", 5),
        (
            "context:\n  x: !!python/object/apply:os.system [ls]\nsteps: [{name: a, uses: echo}]\n",
            2,
        ),
        ("context: {x: !!python/name:os.getcwd }\nsteps: [{name: a, uses: echo}]\n", 1),
        ("steps:\n  - name: a\n    uses: !!python/name:os.system\n", 3),
        ("name: !!python/str x\nsteps: [{name: a, uses: echo}]\n", 1),
        ("steps: !!omap [{name: a}]\n", 1),
    ],
)
def test_every_unsupported_tag_is_refused_with_its_line(text, line):
    exc = refused(text)
    assert "tag" in exc.message and exc.line == line, exc.problems


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("steps:\n  - name: a\n    uses: echo\n    timeout_s: !!float soon\n", 4),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      n: !!int abc\n", 5),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      b: !!bool maybe\n", 5),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      d: 2020-13-45\n", 5),
        ("steps:\n  - name: a\n    uses: twice\n    with:\n      d: !!timestamp nope\n", 5),
        ("context:\n  d: 2020-02-31\nsteps: [{name: a, uses: echo}]\n", 2),
        ("context:\n  ? [1, 2]\n  : x\nsteps: [{name: a, uses: echo}]\n", 2),
        ("context:\n  <<: 3\nsteps: [{name: a, uses: echo}]\n", 2),
        ("steps:\n  - name: !!binary aGVsbG8=\n    uses: echo\n", 2),
    ],
)
def test_values_that_do_not_convert_are_refused_with_their_line(text, line):
    exc = refused(text)
    assert exc.line == line, exc.problems


def test_standard_tags_still_work():
    p = load_pipeline(
        doc(
            """
            context: {when: 2020-01-02, n: !!int "3"}
            steps:
              - name: a
                uses: twice
                timeout_s: !!float "2"
                with: {s: !!str 12, f: !!float 1, none: !!null "", ok: !!bool "yes", eq: =}
            """
        ),
        REG,
    )
    out = asyncio.run(p.run(0))
    assert out.result[1] == {"s": "12", "f": 1.0, "none": None, "ok": True, "eq": "="}


# ----------------------------------------------------------- bytes, NULs


def test_nul_byte_is_reported_with_its_line():
    exc = refused("steps:\n  - name: a\n    uses: echo\n    description: x\x00y\n")
    assert exc.line == 4 and "#x0000" in exc.message


def test_control_character_in_a_file_is_reported_with_its_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("steps:\n  - name: a\n\n    uses: echo\x07\n")
    with pytest.raises(PipelineDefinitionError) as e:
        load_pipeline(f, REG)
    assert e.value.line == 4 and e.value.file == str(f)


def test_bad_utf8_in_a_file_is_reported_with_its_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes(b"steps:\n  - name: a\n    uses: echo\n    description: caf\xe9\n")
    with pytest.raises(PipelineDefinitionError) as e:
        load_pipeline(f, REG)
    assert e.value.line == 4 and "UTF-8" in e.value.message


# ---------------------------------------------------------- config bounds

# field -> (largest valid value, a value above it)
MAXIMA = {
    "object_pool_max_size": (65_536, 10**9),
    "max_concurrent_executions": (16_777_215, 2**31),
    "concurrency_max_limit": (16_777_215, 2**40),
    "worker_pool_size": (1024, 10**6),
    "worker_pool_queue_size": (100_000_000, 2**62),
    "worker_pool_task_timeout_seconds": (1e9, 9.3e9),
    "max_tracked_steps": (100_000_000, 2**40),
    "telemetry_batch_size": (1_000_000, 2**40),
    "telemetry_flush_interval_seconds": (1e9, 1e10),
    "telemetry_buffer_size": (1_000_000, 2**62),
    "error_cache_size": (1_000_000, 2**62),
    "circuit_breaker_failure_threshold": (1_000_000, 2**32 + 1),
    "circuit_breaker_recovery_timeout_seconds": (1e9, 1e10),
    "retry_after_max_seconds": (1e9, 1e10),
    "circuit_breaker_half_open_max_calls": (1_000_000, 2**32 + 1),
    "circuit_breaker_success_threshold": (1_000_000, 2**32 + 1),
    "circuit_breaker_window_size": (100_000, 2**32 + 10),
    "error_pattern_min_observations": (1_000_000, 2**32 + 1),
    "cache_ttl_seconds": (1e9, 1e300),
    "cache_max_size": (100_000_000, 2**63 - 1),
    "cache_max_bytes": (2**50, 2**63 - 1),
    "slow_execution_threshold_ms": (1e12, 1e300),
    "memory_pressure_threshold_mb": (1e9, 1e300),
    "optimization_analysis_interval_seconds": (1e9, 1e10),
    "performance_degradation_threshold": (1000.0, 1e6),
    "performance_window_seconds": (1e9, 1e10),
}


def test_every_numeric_field_has_a_maximum():
    numeric = [f["name"] for f in OptimizationConfig.fields() if f["type"] != "bool"]
    bounded_elsewhere = {  # fractions, percents, and limits bounded by another field
        "object_pool_cleanup_threshold",
        "concurrency_initial_limit",
        "concurrency_min_limit",
        "concurrency_latency_tolerance",
        "telemetry_sampling_rate",
        "circuit_breaker_minimum_calls",
        "circuit_breaker_failure_rate_threshold",
        "cpu_usage_threshold_percent",
    }
    assert sorted(set(numeric) - bounded_elsewhere) == sorted(MAXIMA)
    for f in OptimizationConfig.fields():
        if f["type"] != "bool":
            assert "at most" in f["rule"] or "between" in f["rule"], f


@pytest.mark.parametrize("field", sorted(MAXIMA))
async def test_values_above_a_fields_maximum_are_refused(field):
    ok, over = MAXIMA[field]
    c = OptimizationConfig(**{field: over})
    problems = c.validate()
    assert any(p.startswith(f"{field} must be at most") for p in problems), problems
    with pytest.raises(ConfigurationError, match=field):
        ExecutorCore(c)
    ex = ExecutorCore()
    before = ex.optimization_config
    with pytest.raises(ConfigurationError, match=field):
        await ex.apply_optimization_config(c)
    with pytest.raises(ConfigurationError) as e:
        await ex.import_config(json.dumps({field: over}))
    assert any(field in p for p in e.value.problems), e.value.problems
    assert ex.optimization_config == before
    assert not [p for p in OptimizationConfig(**{field: ok}).validate() if field in p.split()[0]]
    await ex.aclose()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cache_max_size", 2**63),
        ("cache_max_size", -(2**63) - 1),
        ("max_concurrent_executions", 2**64),
        ("cache_ttl_seconds", 10**400),
    ],
)
def test_values_the_field_cannot_hold_are_configuration_errors(field, value):
    with pytest.raises(ConfigurationError, match=field):
        OptimizationConfig(**{field: value})
    c = OptimizationConfig()
    with pytest.raises(ConfigurationError, match=field):
        setattr(c, field, value)
    assert c == OptimizationConfig()
    with pytest.raises(ConfigurationError) as e:
        OptimizationConfig.from_dict({field: value, "nope": 1})
    assert any(p.startswith(f"{field}:") for p in e.value.problems), e.value.problems


async def test_a_huge_task_timeout_no_longer_breaks_sync_steps():
    c = OptimizationConfig(worker_pool_task_timeout_seconds=9.3e9)
    assert any("worker_pool_task_timeout_seconds" in p for p in c.validate())
    # The largest allowed one works.
    ex = ExecutorCore(OptimizationConfig(worker_pool_task_timeout_seconds=1e9))
    r = await ex.execute(lambda x: x + 1, 1)
    assert r.success and r.output == 2, r.error
    await ex.aclose()


@pytest.mark.parametrize("size", [10**9, 2**63 - 1])
def test_a_huge_object_pool_is_a_configuration_error(size):
    with pytest.raises(ConfigurationError, match="object_pool_max_size must be at most"):
        ExecutorCore(OptimizationConfig(object_pool_max_size=size))


async def test_the_largest_object_pool_works():
    ex = ExecutorCore(OptimizationConfig(object_pool_max_size=65_536))
    assert (await ex.execute(echo, 3)).output == 3
    await ex.aclose()


# -------------------------------------------------------- import_config


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"cache_max_size": "\xff"}', "UTF-8"),
        (bytearray(b'{"cache_max_size": 7, \x80}'), "UTF-8"),
        ('{\n  "cache_max_size": 5,\n  oops\n}', "line 3, column 3"),
        ('{"cache_max_size": 1e400}', "$.cache_max_size"),
        ('{"cache_ttl_seconds": 1e400}', "$.cache_ttl_seconds"),
        ('{"cache_max_size": 99999999999999999999999}', "$.cache_max_size"),
        ('{"cache_max_size": 5, "cache_max_size": 6}', "$.cache_max_size: duplicate key"),
        ('{"a": {"b": 1, "b": 2}}', "duplicate key"),
        ("\ud800", "Unicode"),
        ("[" * 100_000, "nested deeper"),
        ("[" * 10_000 + "]" * 10_000, "nested deeper"),
        ("[" * 10 + "]" * 10, "$: expected a JSON object"),
        ("", "malformed JSON"),
        ('{"cache_max_size": 5}\x00', "malformed JSON"),
        ('{"cache_max_size": NaN}', "malformed JSON"),
        ('{"enable_object_pool": 1}', "$.enable_object_pool: expected a boolean"),
        ('{"max_concurrent_executions": [1]}', "$.max_concurrent_executions"),
    ],
)
async def test_import_config_raises_configuration_error_for_malformed_input(text, expect):
    ex = ExecutorCore(OptimizationConfig(cache_max_size=42))
    with pytest.raises(ConfigurationError) as e:
        await ex.import_config(text)
    assert any(expect in p for p in e.value.problems), e.value.problems
    assert ex.optimization_config.cache_max_size == 42
    await ex.aclose()


def test_from_json_reports_line_and_column():
    with pytest.raises(ConfigurationError) as e:
        OptimizationConfig.from_json('{\n "cache_max_size": 5,\n}')
    (p,) = e.value.problems
    assert p.startswith("$: malformed JSON at line 3, column 1"), p


async def test_import_config_accepts_utf8_bytes():
    ex = ExecutorCore()
    await ex.import_config(b'{"cache_max_size": 77}')
    assert ex.optimization_config.cache_max_size == 77
    await ex.aclose()


# ------------------------------------------------------ CLI and sys.path

HOSTILE = 'raise RuntimeError("the yaml.py of the working directory was imported")\n'


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    (tmp_path / "yaml.py").write_text(HOSTILE)
    (tmp_path / "myreg.py").write_text(
        "import helper\n\nasync def one(x):\n    return helper.VALUE\n\nREGISTRY = {'one': one}\n"
    )
    (tmp_path / "helper.py").write_text("VALUE = 41\n")
    (tmp_path / "pipe.yaml").write_text("steps:\n  - name: a\n    uses: one\n")
    return tmp_path


def _cli(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CAUDAL_STORE"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_cli_validate_does_not_import_modules_from_the_working_directory(hostile_dir):
    exe = shutil.which("caudal", path=os.path.dirname(sys.executable))
    assert exe is not None
    p = _cli(hostile_dir, exe, "validate", "pipe.yaml", "--registry", "myreg:REGISTRY")
    assert p.returncode == 0, p.stderr
    assert "pipe.yaml: ok (1 steps" in p.stdout


def test_cli_run_does_not_import_modules_from_the_working_directory(hostile_dir):
    exe = shutil.which("caudal", path=os.path.dirname(sys.executable))
    p = _cli(
        hostile_dir,
        exe,
        "run",
        "pipe.yaml",
        "--registry",
        "myreg:REGISTRY",
        "--store",
        "runs.db",
        "--input",
        "1",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    assert '"result": 41' in p.stdout


def test_python_dash_m_cli_does_not_import_modules_from_the_working_directory(hostile_dir):
    p = _cli(
        hostile_dir,
        sys.executable,
        "-m",
        "caudal.cli",
        "validate",
        "pipe.yaml",
        "--registry",
        "myreg:REGISTRY",
    )
    assert p.returncode == 0, p.stderr


# ------------------------------------------------- automatic optimization


def cached_executor() -> tuple[ExecutorCore, Step]:
    ex = ExecutorCore(OptimizationConfig(enable_cache_optimization=True, cache_max_size=100))
    ex._engine._set_rss_source(lambda: 10 * 2**20)
    return ex, Step(echo, "cached", cache=True)


async def test_the_tuner_does_not_keep_growing_a_cache_whose_inputs_never_come_back():
    ex, step = cached_executor()
    fresh = iter(range(10**9))
    sizes = []
    for _ in range(12):
        # New inputs every time, each asked three times in a row: two hits
        # in three lookups, an eviction per input, and none ever comes back.
        for _ in range(1000):
            i = next(fresh)
            for _ in range(3):
                await ex.execute(step, i)
        await ex.run_optimization_analysis()
        sizes.append(ex.optimization_config.cache_max_size)
    # At most one raise (a probe): it brought no hits, so no more.
    assert sizes[-1] <= 200 and len(set(sizes)) <= 2, sizes
    last = ex.get_optimization_stats()["automatic_optimization"]["last_analysis"]
    (held,) = [h for h in last["held"] if h["field"] == "cache_max_size"]
    assert "did not raise the hit rate" in held["reason"], held
    await ex.aclose()


async def test_the_tuner_grows_a_cache_when_evicted_inputs_come_back():
    ex, step = cached_executor()
    sizes = []
    for _ in range(8):
        # A working set of 150 inputs, each asked twice in a row: at 100
        # entries half the lookups hit; once 150 fit, all of them.
        for i in range(150):
            await ex.execute(step, i)
            await ex.execute(step, i)
        await ex.run_optimization_analysis()
        sizes.append(ex.optimization_config.cache_max_size)
    assert sizes[0] == 200 and sizes[-1] == 200, sizes
    await ex.aclose()


# ------------------------------------------------------------------ fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(
    max_examples=150,
    deadline=5000,  # ms per example: generous, a hang still fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
FIELD_NAMES = [f["name"] for f in OptimizationConfig.fields()]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def mutate(data: st.DataObject, text: bytes, alphabet: list[bytes]) -> bytes:
    """A few random edits of `text`: insertions from `alphabet`, deletions
    and byte flips."""
    buf = bytearray(text)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf)))
        op = data.draw(st.sampled_from(["insert", "delete", "flip"]))
        if op == "insert":
            buf[pos:pos] = data.draw(st.sampled_from(alphabet))
        elif op == "delete" and buf:
            del buf[pos : pos + data.draw(st.integers(1, 8))]
        elif buf:
            buf[min(pos, len(buf) - 1)] = data.draw(st.integers(0, 255))
    return bytes(buf)


def check_config_outcome(text: str | bytes) -> None:
    try:
        cfg = OptimizationConfig.from_json(text)
    except ConfigurationError as exc:
        for p in exc.problems:
            assert p.startswith("$") or p.split()[0].split(":")[0] in FIELD_NAMES, p
        return
    assert cfg.validate() == []
    assert OptimizationConfig.from_json(cfg.to_json()) == cfg


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), json_values))
def test_fuzzed_config_objects(obj):
    check_config_outcome(json.dumps(obj))


@FUZZ
@given(st.data())
def test_fuzzed_config_text(data):
    base = OptimizationConfig(cache_max_size=1000, max_concurrent_executions=8).to_json()
    alphabet = [
        b"{",
        b"}",
        b"[",
        b'"',
        b",",
        b":",
        b"1e999",
        b"-",
        b"null",
        b"\\u0000",
        b"\xff",
        b"\xc3",
        b"9" * 25,
        b"NaN",
        b'"cache_max_size": 1,',
        b"\x00",
    ]
    text = mutate(data, base.encode(), alphabet)
    check_config_outcome(text)


async def test_fuzzed_valid_configs_make_working_executors():
    # The largest valid value of every bounded field at once.
    c = OptimizationConfig(**{f: ok for f, (ok, _) in MAXIMA.items() if f != "worker_pool_size"})
    c.concurrency_initial_limit = 20
    assert c.validate() == []
    ex = ExecutorCore(c)
    assert (await ex.execute(lambda x: x * 2, 4)).output == 8
    await ex.aclose()


VALID_DOCS = [
    Path(__file__).resolve().parents[2].joinpath("examples", "pipeline_demo.yaml").read_text(),
    doc(
        """
        name: small
        context: {a: &a [1, 2, {k: v}], b: *a, when: 2021-03-04}
        limits: {max_tokens: 10}
        steps:
          - name: first
            uses: twice
            timeout_s: 1.5
            cache_ttl_s: 30
            max_retries: 2
            tags: [x, y]
            with: {p: *a, q: "text", n: -3, f: 1.0e+3}
          - {name: second, uses: echo, depends_on: first, optional: true, cache: false}
        """
    ),
]
FUZZ_REG = {
    **REG,
    **{n: echo for n in ("fetch", "clean", "summarise", "translate", "flaky_extra", "report")},
}


def check_yaml_outcome(text: str) -> None:
    try:
        load_pipeline(text, FUZZ_REG, require_resolver=False)
    except PipelineDefinitionError as exc:
        assert exc.file == "<string>" and exc.line is not None, exc.problems
        assert exc.problems and all(p.startswith("<string>:") for p in exc.problems)


@FUZZ
@given(st.data())
def test_fuzzed_yaml_mutations(data):
    base = data.draw(st.sampled_from(VALID_DOCS)).encode()
    alphabet = [
        b"&x ",
        b"*x",
        b"&y [*x, *x, *x]",
        b"!!python/object/apply:os.system [ls] ",
        b"!t ",
        b"!!set ",
        b"!!int ",
        b"!!float ",
        b"!!binary ",
        b"\x00",
        b"\t",
        b"\n",
        b"  ",
        b"- ",
        b": ",
        b"[",
        b"]",
        b"{",
        b"}",
        b"?",
        b"<<: ",
        b".nan",
        b".inf",
        b"99999999999999999999999",
        b"2020-13-45",
        b"<AUTO>",
        b"</AUTO>",
        b'"',
        b"'",
        b"|",
        b">",
        b"%YAML 1.1\n",
        b"---\n",
        b"\xff",
        b"\xe2\x80\xa8",
        b"#",
    ]
    raw = mutate(data, base, alphabet)
    check_yaml_outcome(raw.decode("utf-8", "surrogateescape").encode("utf-8", "replace").decode())


yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(max_size=10),
)
yaml_trees = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "uses",
                    "with",
                    "steps",
                    "timeout_s",
                    "max_retries",
                    "retry",
                    "depends_on",
                    "context",
                    "limits",
                    "x",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


@FUZZ
@given(yaml_trees)
def test_fuzzed_yaml_structures(tree):
    import yaml

    check_yaml_outcome(yaml.safe_dump(tree, allow_unicode=True) or "x")
    check_yaml_outcome(
        yaml.safe_dump({"steps": [{"name": "a", "uses": "twice", "with": {"v": tree}}]})
    )


def test_duplicate_keys_under_context_are_reported():
    exc = refused("context:\n  a: 1\n  b: 2\n  a: 3\nsteps: [{name: a, uses: echo}]\n")
    assert exc.line == 4 and "duplicate key 'a' (first on line 2)" in exc.message
    # Merge keys still override without complaint.
    p = load_pipeline(
        "context:\n  base: &b {x: 1}\n  more: {<<: *b, x: 2}\nsteps: [{name: a, uses: echo}]\n",
        REG,
    )
    assert p.defaults["context"]["more"] == {"x": 2}


def test_merge_keys_under_with():
    p = load_pipeline(
        doc(
            """
            context: {defaults: &d {model: small, temperature: 0.5}}
            steps:
              - name: a
                uses: twice
                with: {<<: *d, temperature: 0.9}
            """
        ),
        REG,
    )
    assert asyncio.run(p.run(1)).result == (1, {"model": "small", "temperature": 0.9})
    exc = refused("steps:\n  - name: a\n    uses: twice\n    with:\n      <<: [1]\n")
    assert exc.line == 5 and "<< merges mappings" in exc.message


def test_nesting_through_chained_aliases_is_refused():
    # Each anchor is 60 levels deep and holds the previous one: the file
    # nests 61 levels, its expansion 60 per anchor.
    lines = ["context:"]
    for i in range(40):
        inner = f"*a{i - 1}" if i else "1"
        lines.append(f"  k{i}: &a{i} " + "[" * 60 + inner + "]" * 60)
    lines.append("steps: [{name: a, uses: echo, with: {deep: *a39}}]")
    out = load_in_child("\n".join(lines) + "\n")
    assert out["type"] == "PipelineDefinitionError", out
    assert "levels deep" in out["problems"][0] and out["line"] == 3, out
