"""The typed boundary between the step analysis and the engine.

caudal._steps.analyse answers with a caudal._core.StepAnalysis (checked
field by field when made), a retry policy crosses as a caudal._core.RetryPolicy
(named fields), and the executor's defaults reach the engine as named
constructor arguments.
"""

from __future__ import annotations

import math

import pytest

import caudal._steps
from caudal import ExecutorCore, OptimizationConfig, RetryStrategy, Step
from caudal._core import CallShape, Engine, RetryPolicy, StepAnalysis, StepKind
from caudal._steps import analyse
from caudal.errors import ConfigurationError


def fine(**override):
    """The keywords of a valid StepAnalysis, with `override` applied."""
    kw = dict(
        name="s",
        fn=lambda x: x,
        kind=StepKind.ASYNC,
        shape=CallShape.DATA,
        retry=RetryPolicy(),
        cache_ns="s:abc",
    )
    kw.update(override)
    return kw


# ---- StepAnalysis: a bad field is named ----


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 1),
        ("fn", "not callable"),
        ("kind", 0),  # an int, not a StepKind
        ("shape", CallShape),
        ("retry", (2, 3, 0.1, 2.0, 60.0, 0.0)),  # the old positional tuple
        ("context_kw", 1),
        ("resources_kw", None),
        ("retry_on", ValueError),  # a bare type: the analysis passes a tuple
        ("retry_on", (ValueError, int)),
        ("timeout_s", "5"),
        ("timeout_s", 0.0),
        ("timeout_s", math.inf),
        ("timeout_s", 2e9),
        ("cache", "yes"),
        ("cache_ttl_s", -1.0),
        ("tags", "a"),
        ("tags", ["a", 2]),
        ("breaker", 3),
        ("breaker", ""),
        ("breaker_exclude", 42),
        ("cache_context", ["user"]),
        ("cache_context", ("user", 1)),
        ("single_flight", None),
        ("concurrency_key", b"k"),
        ("max_concurrency", 0),
        ("max_concurrency", 2**40),
        ("max_concurrency", True),
    ],
)
def test_a_bad_field_is_a_configuration_error_naming_it(field, value):
    with pytest.raises(ConfigurationError, match=rf"StepAnalysis\.{field} must be"):
        StepAnalysis(**fine(**{field: value}))


def test_the_namespace_is_exactly_one_of_three():
    with pytest.raises(ConfigurationError, match="exactly one of identity_of"):
        StepAnalysis(**fine(cache_ns=None))
    with pytest.raises(ConfigurationError, match="exactly one of identity_of"):
        StepAnalysis(**fine(uncacheable="why"))
    with pytest.raises(ConfigurationError, match=r"StepAnalysis\.uncacheable must be"):
        StepAnalysis(**fine(cache_ns=None, uncacheable=""))


def test_a_required_field_is_required():
    kw = fine()
    del kw["retry"]
    with pytest.raises(TypeError):
        StepAnalysis(**kw)


def test_the_fields_read_back_as_given():
    def fn(x):
        return x

    a = StepAnalysis(
        name="fetch",
        fn=fn,
        kind=StepKind.SYNC,
        shape=CallShape.RUN_KWARGS,
        retry=RetryPolicy(kind="linear", max_attempts=4, base_delay_s=0.5),
        context_kw=True,
        retry_on=(KeyError,),
        timeout_s=2.5,
        cache=False,
        cache_ttl_s=0.0,
        tags=("a", "b"),
        breaker="shared",
        cache_context=("user",),
        single_flight=False,
        concurrency_key="api",
        max_concurrency=3,
        identity_of=fn,
    )
    assert (a.name, a.fn, a.kind, a.shape) == ("fetch", fn, StepKind.SYNC, CallShape.RUN_KWARGS)
    assert (a.retry.kind, a.retry.max_attempts, a.retry.base_delay_s) == ("linear", 4, 0.5)
    assert (a.context_kw, a.resources_kw, a.retry_on) == (True, False, (KeyError,))
    assert (a.timeout_s, a.cache, a.cache_ttl_s, a.tags) == (2.5, False, 0.0, ["a", "b"])
    assert (a.fallback, a.breaker, a.breaker_exclude) == (None, "shared", None)
    assert (a.cache_context, a.single_flight) == (("user",), False)
    assert (a.concurrency_key, a.max_concurrency) == ("api", 3)
    assert (a.cache_ns, a.uncacheable, a.identity_of) == (None, None, fn)
    off = StepAnalysis(**fine(breaker=False, cache_ns=None, uncacheable="no identity"))
    assert (off.breaker, off.timeout_s, off.cache, off.cache_ttl_s) == (False, None, None, None)
    assert (off.cache_ns, off.uncacheable, off.identity_of) == (None, "no identity", None)


# ---- RetryPolicy: named fields, checked by the core's rules ----


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("kind", "random", "must be 'exponential', 'linear' or 'fixed'"),
        ("kind", 0, "must be 'exponential'"),
        ("max_attempts", "3", "must be an int >= 1"),
        ("max_attempts", 0, "must be an int >= 1"),
        ("base_delay_s", None, "must be a number"),
        ("base_delay_s", math.nan, "must be a finite number >= 0"),
        ("backoff_factor", 0.5, "must be a finite number >= 1.0"),
        ("max_backoff_s", -1.0, "must be a finite number >= 0"),
        ("jitter", 2.0, "must be between 0.0 and 1.0"),
        ("jitter", True, "must be a number"),
    ],
)
def test_a_bad_retry_policy_field_is_named(field, value, rule):
    with pytest.raises(ConfigurationError, match=rf"RetryPolicy\.{field} {rule}"):
        RetryPolicy(**{field: value})


def test_a_retry_strategy_crosses_as_a_retry_policy():
    s = RetryStrategy(
        max_attempts=5,
        base_delay=0.25,
        backoff_factor=3,
        max_backoff=9,
        jitter=0.5,
        strategy="linear",
    )
    p = s._native()
    assert isinstance(p, RetryPolicy)
    assert (p.kind, p.max_attempts, p.base_delay_s) == ("linear", 5, 0.25)
    assert (p.backoff_factor, p.max_backoff_s, p.jitter) == (3.0, 9.0, 0.5)
    assert p.delay_before_attempt(3, None, 1 << 63) == s.delay(2)


def test_the_analysis_carries_the_steps_retry_policy():
    a = analyse(Step(lambda x: x, retry=RetryStrategy(max_attempts=7, strategy="fixed")))
    assert isinstance(a, StepAnalysis) and isinstance(a.retry, RetryPolicy)
    assert (a.retry.kind, a.retry.max_attempts) == ("fixed", 7)
    one = analyse(lambda x: x)
    assert (one.retry.kind, one.retry.max_attempts, one.retry.base_delay_s) == ("fixed", 1, 0.0)


# ---- the executor's defaults reach the engine by name ----


def test_the_engine_names_a_bad_default():
    with pytest.raises(TypeError, match=r"Engine: retry must be a caudal\.RetryStrategy"):
        Engine(OptimizationConfig(), retry=(3, 0.1))
    with pytest.raises(ValueError, match="Engine: backend must be one of"):
        Engine(OptimizationConfig(), backend="mars")


async def test_the_defaults_reach_the_analysis(monkeypatch):
    seen = []
    real = caudal._steps.analyse

    def spy(obj, default_retry=None, default_backend="local"):
        seen.append((default_retry, default_backend))
        return real(obj, default_retry, default_backend)

    monkeypatch.setattr(caudal._steps, "analyse", spy)
    strategy = RetryStrategy(max_attempts=3, base_delay=0.0)
    ex = ExecutorCore(retry_strategy=strategy)
    calls = []

    async def flaky(x):
        calls.append(x)
        raise ValueError("no")

    r = await ex.execute(flaky, 1)
    assert not r.success and len(calls) == 3
    assert seen == [(strategy, "local")]
    await ex.aclose()
    plain = ExecutorCore()
    await plain.execute(lambda x: x, 1)
    assert seen[-1] == (None, "local")
    await plain.aclose()


async def test_an_analysis_that_is_not_a_step_analysis_is_refused(monkeypatch):
    monkeypatch.setattr(caudal._steps, "analyse", lambda obj, *defaults: {"name": "x"})
    ex = ExecutorCore()
    with pytest.raises(TypeError, match=r"must return a caudal\._core\.StepAnalysis, got dict"):
        await ex.execute(lambda x: x, 1)
    await ex.aclose()
