"""Numbers given to the Python API are bounded where they are given: a value
the core cannot hold (an int past C's int, seconds whose nanoseconds
overflow int64, NaN, infinities) raises a ValueError naming the parameter
at construction, with the same maxima as OptimizationConfig and the YAML
loader (caudal._bounds)."""

from __future__ import annotations

import math

import pytest

import caudal
from caudal import (
    ExecutorCore,
    OptimizationConfig,
    PipelineDefinitionError,
    RetryStrategy,
    Step,
    _bounds,
    load_pipeline,
)
from caudal.resilience import immediate_retries

NAN, INF = math.nan, math.inf
HUGE = 10**400  # an int no float can hold


def short(v):  # test ids: not 400 digits
    return "huge" if v in (HUGE, -HUGE) else None


# ------------------------------------------------------------ RetryStrategy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attempts", 10**20),  # past a C int
        ("max_attempts", 2**31),
        ("max_attempts", _bounds.MAX_ATTEMPTS + 1),
        ("max_attempts", 0),
        ("max_attempts", -(2**63)),
        ("base_delay", NAN),
        ("base_delay", INF),
        ("base_delay", -0.5),
        ("base_delay", 1e10),  # more seconds than the core counts in ns
        ("base_delay", HUGE),
        ("max_backoff", NAN),
        ("max_backoff", INF),
        ("max_backoff", -1),
        ("max_backoff", 1e300),
        ("max_backoff", HUGE),
        ("backoff_factor", NAN),
        ("backoff_factor", INF),
        ("backoff_factor", 0.5),
        ("backoff_factor", HUGE),
        ("jitter", NAN),
        ("jitter", INF),
        ("jitter", -0.1),
        ("jitter", 1.5),
        ("jitter", HUGE),
    ],
    ids=short,
)
def test_retry_strategy_numbers_out_of_bounds_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^RetryStrategy\.{field} must be ") as exc:
        RetryStrategy(**{field: value})
    assert "incompatible function arguments" not in str(exc.value)


@pytest.mark.parametrize(
    ("strategy", "field", "value"),
    [
        ("fixed", "backoff_factor", NAN),  # unused by fixed, still not a number
        ("linear", "backoff_factor", INF),
        ("fixed", "backoff_factor", -1.0),
    ],
)
def test_an_unused_backoff_factor_is_still_a_finite_number(strategy, field, value):
    with pytest.raises(ValueError, match=rf"RetryStrategy\.{field}"):
        RetryStrategy(strategy=strategy, **{field: value})


def test_retry_strategy_maxima_are_the_configs():
    assert _bounds.MAX_SECONDS == 1e9 and _bounds.MAX_ATTEMPTS == 1001
    s = RetryStrategy(
        max_attempts=_bounds.MAX_ATTEMPTS,
        base_delay=_bounds.MAX_SECONDS,
        max_backoff=_bounds.MAX_SECONDS,
        backoff_factor=1e308,
        jitter=1,
    )
    assert s.delay(_bounds.MAX_RETRIES) <= _bounds.MAX_SECONDS
    assert RetryStrategy(max_attempts=1, base_delay=0, max_backoff=0, jitter=0).max_attempts == 1
    with pytest.raises(ValueError, match=r"from 1 to 1001, got 1002"):
        RetryStrategy(max_attempts=1002)
    with pytest.raises(ValueError, match=r"at most 1000000000 .*got 1000000000\.5"):
        RetryStrategy(max_backoff=1e9 + 0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attempts", 3.0),
        ("max_attempts", True),
        ("max_attempts", "3"),
        ("base_delay", "0.1"),
        ("jitter", None),
        ("backoff_factor", False),
    ],
)
def test_retry_strategy_wrong_types_are_type_errors(field, value):
    with pytest.raises(TypeError, match=rf"RetryStrategy\.{field} must be"):
        RetryStrategy(**{field: value})


@pytest.mark.parametrize("strategy", [["fixed"], None, 2])
def test_retry_strategy_kind_must_be_a_name(strategy):
    with pytest.raises((TypeError, ValueError), match=r"RetryStrategy\.strategy"):
        RetryStrategy(strategy=strategy)


def test_delay_preview_bounds_its_arguments():
    s = RetryStrategy(max_attempts=4, base_delay=0.5, max_backoff=1.5)
    for retry in (0, -1, 10**20, 2**31, _bounds.MAX_RETRIES + 1):
        with pytest.raises(ValueError, match=r"RetryStrategy\.delay: retry must be"):
            s.delay(retry)
    with pytest.raises(TypeError, match=r"RetryStrategy\.delay: retry must be an int"):
        s.delay(1.0)
    with pytest.raises(TypeError, match=r"retry_after must be a number or None"):
        s.delay(1, retry_after="soon")
    with pytest.raises(TypeError, match=r"retry_after must be a number or None"):
        s.delay(1, retry_after=True)
    # As in an execution: a negative or non-finite hint is ignored, a large
    # one capped by max_backoff.
    assert s.delay(1, retry_after=NAN) == 0.5
    assert s.delay(1, retry_after=-3) == 0.5
    assert s.delay(1, retry_after=HUGE) == s.delay(1, retry_after=INF) == 0.5
    assert s.delay(1, retry_after=1e300) == 1.5
    assert s.delay(_bounds.MAX_RETRIES) == 1.5


@pytest.mark.parametrize("n", [10**20, 2**31, _bounds.MAX_RETRIES + 1, -1])
def test_immediate_retries_names_max_retries(n):
    with pytest.raises(ValueError, match=r"max_retries must be an int from 0 to 1000"):
        immediate_retries(n)


def test_immediate_retries_at_the_maximum():
    assert immediate_retries(_bounds.MAX_RETRIES).max_attempts == _bounds.MAX_ATTEMPTS


async def test_a_step_with_too_many_retries_fails_with_a_clear_error():
    # Step(...) itself does not bound max_retries yet: the executor's
    # compile of the step does, naming the parameter (not pybind11's
    # "incompatible function arguments").
    ex = ExecutorCore(OptimizationConfig())

    async def echo(x):
        return x

    with pytest.raises(ValueError, match=r"max_retries must be an int from 0 to 1000"):
        await ex.execute(Step(echo, "many", max_retries=10**20), 1)
    await ex.aclose()


# ------------------------------------------------------------- the helpers


@pytest.mark.parametrize("value", [NAN, INF, -INF, -1, 0, 1e9 + 1, HUGE, -HUGE], ids=short)
def test_check_duration_refuses(value):
    with pytest.raises(ValueError, match=r"^Step 'x': timeout_s must be a finite number of s"):
        _bounds.check_duration("Step 'x': timeout_s", value, positive=True)


@pytest.mark.parametrize("value", [0, 0.0, 1e9, 10**9])
def test_check_duration_accepts_zero_unless_positive(value):
    assert _bounds.check_duration("d", value) == float(value)
    assert type(_bounds.check_duration("d", value)) is float


def test_check_duration_types_and_none():
    for bad in (True, "1", [1]):
        with pytest.raises(TypeError, match=r"^d must be a number"):
            _bounds.check_duration("d", bad)
    with pytest.raises(TypeError, match=r"or None"):
        _bounds.check_duration("d", "1", none_ok=True)
    assert _bounds.check_duration("d", None, none_ok=True) is None
    with pytest.raises(ValueError, match=r"or None, got nan"):
        _bounds.check_duration("d", NAN, none_ok=True)


@pytest.mark.parametrize("value", [0, -1, 1025, 10**20, 2**63])
def test_check_count_refuses(value):
    with pytest.raises(ValueError, match=r"^WorkerPool: workers must be an int from 1 to 1024"):
        _bounds.check_count("WorkerPool: workers", value, 1024)


def test_check_count_types():
    assert _bounds.check_count("n", 1024, 1024) == 1024
    assert _bounds.check_count("n", 0, 10, minimum=0) == 0
    for bad in (True, 1.0, "1", None):
        with pytest.raises(TypeError, match=r"^n must be an int"):
            _bounds.check_count("n", bad, 10)


def test_check_number_bounds_are_inclusive_and_finite():
    assert _bounds.check_number("j", 1, minimum=0, maximum=1) == 1.0
    for bad in (NAN, -0.01, 1.01, INF):
        with pytest.raises(ValueError, match=r"^j must be a finite number >= 0, at most 1, got"):
            _bounds.check_number("j", bad, minimum=0, maximum=1)
    # No maximum: any finite number from the minimum on.
    assert _bounds.check_number("f", 1e308, minimum=1) == 1e308
    with pytest.raises(ValueError, match=r"^f must be a finite number >= 1, got inf"):
        _bounds.check_number("f", INF, minimum=1)


# ------------------------------------------- the YAML loader, same helper

BIG = "9" * 400  # a YAML integer no float can hold


async def echo(x):
    return x


def yaml_refused(fields: str, line: int, field: str) -> str:
    with pytest.raises(PipelineDefinitionError) as e:
        load_pipeline(f"steps:\n  - name: a\n    uses: echo\n{fields}", {"echo": echo})
    exc = e.value
    assert (exc.field, exc.line) == (field, line), exc.problems
    return exc.problems[0]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("max_retries", "expected at most 1000"),
        ("timeout_s", "expected at most 1000000000"),
        ("cache_ttl_s", "expected at most 1000000000"),
        ("num_cpus", "expected at most 1.79769e+308"),
        ("actors", "expected at most 1.79769e+308"),
    ],
)
def test_yaml_integers_no_float_holds_are_refused_with_their_line(field, expected):
    problem = yaml_refused(f"    {field}: {BIG}\n", 4, f"steps[0].{field}")
    assert f"steps[0].{field}: {expected}, got '{BIG}'" in problem


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_attempts", BIG, "expected at most 1001"),
        ("base_delay", BIG, "expected at most 1000000000"),
        ("backoff_factor", BIG, "expected at most 1.79769e+308"),
        ("jitter", "1.5", "expected at most 1"),
    ],
)
def test_yaml_retry_numbers_are_refused_at_their_own_line(field, value, expected):
    problem = yaml_refused(f"    retry:\n      {field}: {value}\n", 5, f"steps[0].retry.{field}")
    assert f"{expected}, got '{value}'" in problem


def test_yaml_limits_too_large_for_a_float():
    with pytest.raises(PipelineDefinitionError) as e:
        load_pipeline(
            f"limits: {{max_cost_usd: {BIG}}}\nsteps: [{{name: a, uses: echo}}]\n", {"echo": echo}
        )
    assert (e.value.field, e.value.line) == ("limits.max_cost_usd", 1), e.value.problems


# --------------------------------------------------- Step and UsageLimits
def _f(x):
    return x


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"timeout_s": float("nan")}, ValueError, "timeout_s must be a finite number"),
        ({"timeout_s": float("inf")}, ValueError, "timeout_s must be a finite number"),
        ({"timeout_s": 1e10}, ValueError, "timeout_s must be .* at most 1000000000"),
        ({"timeout_s": 0}, ValueError, "timeout_s must be"),
        ({"timeout_s": True}, TypeError, "timeout_s must be a number"),
        ({"cache_ttl_s": float("nan")}, ValueError, "cache_ttl_s must be a finite number"),
        ({"cache_ttl_s": True}, TypeError, "cache_ttl_s must be a number"),
        ({"cache_ttl_s": 10**400}, ValueError, "cache_ttl_s must be"),
        ({"max_retries": 10**20}, ValueError, "max_retries must be an int from 0 to 1000"),
        ({"max_retries": -1}, ValueError, "max_retries must be an int from 0 to 1000"),
        ({"max_retries": 2.0}, TypeError, "max_retries must be an int"),
    ],
)
def test_step_numbers_are_bounded_when_the_step_is_made(kw, exc, match):
    with pytest.raises(exc, match=match) as ei:
        caudal.Step(_f, "s", **kw)
    assert str(ei.value).startswith("Step 's': ")


def test_step_numbers_in_bounds_are_kept():
    s = caudal.Step(_f, timeout_s=1e9, cache_ttl_s=0.5, max_retries=1000)
    assert (s.timeout_s, s.cache_ttl_s, s.max_retries) == (1e9, 0.5, 1000)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_cost_usd": float("nan")}, "max_cost_usd must be a finite number"),
        ({"max_cost_usd": -1}, "max_cost_usd must be"),
        ({"max_tokens": 10**400}, "max_tokens must be a finite number"),
    ],
)
def test_usage_limits_refuse_values_that_would_never_hold(kw, match):
    with pytest.raises(ValueError, match=match):
        caudal.UsageLimits(**kw)
