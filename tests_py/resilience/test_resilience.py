"""Circuit breaker, retry strategies and error patterns through ExecutorCore."""

import asyncio
import pickle

import pytest

from _probes import drive, settle, until
from caudal import (
    CircuitOpenError,
    ExecutorCore,
    OptimizationConfig,
    RetryStrategy,
    Step,
)
from caudal.resilience import immediate_retries
from caudal.testing import ManualClock


class Backend:
    """A backend that fails while `down` is set; counts its calls."""

    def __init__(self, down=True, exc=ConnectionError):
        self.down = down
        self.calls = 0
        self.exc = exc

    async def __call__(self, x):
        self.calls += 1
        if self.down:
            raise self.exc("backend down")
        return x


def breaker_config(threshold=3, recovery=30, **kw):
    return OptimizationConfig(
        circuit_breaker_failure_threshold=threshold,
        circuit_breaker_recovery_timeout_seconds=recovery,
        **kw,
    )


async def test_breaker_opens_rejects_without_calling_then_recovers():
    clock = ManualClock()
    ex = ExecutorCore(breaker_config(threshold=3, recovery=30), clock=clock)
    backend = Backend()
    step = Step(backend, "api")
    for _ in range(3):
        r = await ex.execute(step, 1)
        assert isinstance(r.error, ConnectionError)
    # Open: the step is not called, the error says which breaker and when.
    r = await ex.execute(step, 1)
    assert not r.success and isinstance(r.error, CircuitOpenError)
    assert r.error.breaker == "api" and r.error.retry_after_s == pytest.approx(30)
    assert r.attempts == 0 and backend.calls == 3
    stats = ex.get_optimization_stats()["circuit_breaker"]
    assert stats["state"] == "OPEN" and stats["open_count"] == 1
    assert stats["breakers"]["api"]["rejected_count"] == 1
    # After the recovery timeout one probe goes through; success closes it.
    backend.down = False
    clock.advance(29.9)
    assert isinstance((await ex.execute(step, 7)).error, CircuitOpenError)
    clock.advance(0.1)
    r = await ex.execute(step, 7)
    assert r.success and r.output == 7 and backend.calls == 4
    stats = ex.get_optimization_stats()["circuit_breaker"]
    assert stats["state"] == "CLOSED"
    assert [(t["from"], t["to"]) for t in stats["transitions"]] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_failed_probe_reopens():
    clock = ManualClock()
    ex = ExecutorCore(breaker_config(threshold=1, recovery=30), clock=clock)
    backend = Backend()
    await ex.execute(backend, 1)
    clock.advance(30)
    r = await ex.execute(backend, 1)  # the probe, fails
    assert isinstance(r.error, ConnectionError) and backend.calls == 2
    r = await ex.execute(backend, 1)
    assert isinstance(r.error, CircuitOpenError) and backend.calls == 2


async def test_tripping_calls_own_error_is_returned_not_circuit_open():
    # Failing fast on an open breaker (the setting that turns waiting off).
    clock = ManualClock()
    ex = ExecutorCore(
        breaker_config(threshold=2, recovery=60, circuit_breaker_wait_for_probe=False),
        clock=clock,
    )
    backend = Backend()
    r = await drive(clock, ex.execute(Step(backend, "trip", max_retries=5), 1))
    # Attempt 2 trips the breaker; attempt 3 is refused, so the execution
    # ends with attempt 2's own ConnectionError.
    assert type(r.error) is ConnectionError and r.attempts == 2 and backend.calls == 2
    assert r.metadata["retry_stopped"] == "breaker_open"


async def test_a_refused_retry_waits_for_the_probe_and_ends_with_its_own_error():
    # Waiting (the default): the refused retry waits for the half-open
    # probe; here every probe fails, and the budget (attempts + waits) ends
    # the execution with the last attempt's own error.
    clock = ManualClock()
    ex = ExecutorCore(breaker_config(threshold=2, recovery=30), clock=clock)
    backend = Backend()
    step = Step(backend, "trip", retry=RetryStrategy(max_attempts=6, base_delay=0.001))
    r = await drive(clock, ex.execute(step, 1), tick=1)
    # Attempts 1 and 2 fail (the second trips the breaker); the refused
    # retry waits for the probe (attempt 3), which fails and reopens it; the
    # next refusal waits again for attempt 4: 4 attempts + 2 waits = 6.
    assert type(r.error) is ConnectionError
    assert backend.calls == r.attempts == 4
    snap = ex.get_optimization_stats()["circuit_breaker"]
    assert snap["breakers"]["trip"]["rejected_count"] == 2


async def test_steps_sharing_a_breaker_key_share_its_state():
    ex = ExecutorCore(breaker_config(threshold=2, recovery=60))
    a, b = Backend(), Backend(down=False)
    await ex.execute(Step(a, "a", breaker="llm-provider"), 1)
    await ex.execute(Step(a, "a2", breaker="llm-provider"), 1)
    r = await ex.execute(Step(b, "b", breaker="llm-provider"), 1)
    assert isinstance(r.error, CircuitOpenError) and r.error.breaker == "llm-provider"
    assert b.calls == 0
    # Opting out: breaker=False.
    r = await ex.execute(Step(b, "c", breaker=False), 1)
    assert r.success


async def test_excluded_exceptions_do_not_trip_the_breaker():
    ex = ExecutorCore(breaker_config(threshold=2, recovery=60))
    backend = Backend(exc=KeyError)
    step = Step(backend, "lookup", breaker_exclude=KeyError)
    for _ in range(5):
        r = await ex.execute(step, 1)
        assert isinstance(r.error, KeyError)
    assert backend.calls == 5
    assert ex.get_optimization_stats()["circuit_breaker"]["state"] == "CLOSED"
    # A predicate works too.
    step2 = Step(Backend(exc=ValueError), "v", breaker_exclude=lambda e: "down" in str(e))
    for _ in range(3):
        await ex.execute(step2, 1)
    assert ex.get_optimization_stats()["circuit_breaker"]["breakers"]["v"]["state"] == "closed"


async def test_breaker_disabled_by_config():
    ex = ExecutorCore(breaker_config(threshold=1, enable_circuit_breaker=False))
    backend = Backend()
    for _ in range(4):
        await ex.execute(backend, 1)
    assert backend.calls == 4


async def test_cancelled_half_open_probe_gives_its_slot_back():
    clock = ManualClock()
    ex = ExecutorCore(breaker_config(threshold=1, recovery=30), clock=clock)
    started = asyncio.Event()

    async def slow(x):
        started.set()
        await asyncio.sleep(3600)  # cancelled by the test

    step = Step(Backend(), "slow")
    await ex.execute(step, 1)  # opens the breaker of "slow"
    clock.advance(30)
    probe = asyncio.create_task(ex.execute(Step(slow, "slow"), 1))
    await started.wait()
    # While the probe runs, others are refused.
    r = await ex.execute(Step(slow, "slow"), 1)
    assert isinstance(r.error, CircuitOpenError)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # The slot came back: the next call is admitted as a probe and closes it.
    r = await ex.execute(Step(Backend(down=False), "slow"), 5)
    assert r.success and r.output == 5


async def test_fallback_runs_when_the_breaker_is_open():
    async def cached_answer(x):
        return "stale"

    ex = ExecutorCore(breaker_config(threshold=1, recovery=60))
    step = Step(Backend(), "fb", fallback=cached_answer)
    r = await ex.execute(step, 1)
    assert r.success and r.output == "stale"  # primary failed
    r = await ex.execute(step, 1)
    assert r.success and r.output == "stale"  # breaker open: straight to fallback
    assert isinstance(r.metadata["original_error"], CircuitOpenError)
    assert ex.get_optimization_stats()["execution"]["steps"]["fb"]["rejected"] == 1


# ------------------------------------------------------------------ retries


def test_retry_strategy_validation_and_preview():
    s = RetryStrategy(max_attempts=4, base_delay=0.5, backoff_factor=2.0, max_backoff=1.5)
    assert [s.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 1.5]
    assert RetryStrategy(base_delay=0.5, strategy="linear").delay(2) == 1.0
    assert RetryStrategy(base_delay=0.5, strategy="fixed").delay(3) == 0.5
    # A hint is spread upwards by up to 20 % (the preview: its midpoint).
    assert s.delay(1, retry_after=1.2) == pytest.approx(1.32)
    assert s.delay(1, retry_after=99) == 1.5
    with pytest.raises(ValueError, match="max_attempts"):
        RetryStrategy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryStrategy(jitter=2.0)
    with pytest.raises(ValueError, match="strategy"):
        RetryStrategy(strategy="random")
    with pytest.raises(TypeError, match="retry_on"):
        RetryStrategy(retry_on="ValueError")
    with pytest.raises(ValueError, match="not both"):
        Step(lambda x: x, max_retries=1, retry=RetryStrategy())


async def test_backoff_sleeps_the_policys_delays(monkeypatch):
    slept = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay, *args, **kwargs):
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    calls = []

    async def flaky(x):
        calls.append(x)
        if len(calls) < 4:
            raise ConnectionError("again")
        return x

    step = Step(
        flaky,
        retry=RetryStrategy(max_attempts=4, base_delay=0.02, backoff_factor=2.0, max_backoff=0.05),
    )
    r = await ExecutorCore().execute(step, 1)
    assert r.success and r.attempts == 4
    assert slept == [0.02, 0.04, 0.05]  # exponential, capped by max_backoff


async def test_retry_on_limits_which_errors_are_retried():
    backend = Backend(exc=ValueError)
    step = Step(
        backend, retry=RetryStrategy(max_attempts=5, base_delay=0, retry_on=ConnectionError)
    )
    r = await ExecutorCore().execute(step, 1)
    assert backend.calls == 1 and r.metadata["retry_stopped"] == "not_retryable"
    backend2 = Backend(exc=ValueError)
    step2 = Step(
        backend2,
        retry=RetryStrategy(
            max_attempts=3, base_delay=0, retry_on=lambda e: isinstance(e, ValueError)
        ),
    )
    await ExecutorCore().execute(step2, 1)
    assert backend2.calls == 3


async def test_retry_after_hint_is_honoured():
    class RateLimited(Exception):
        retry_after = 10

    calls = []

    async def limited(x):
        calls.append(x)
        if len(calls) == 1:
            raise RateLimited("429")
        return x

    # The base delay is an hour; the hint says 10 s (waited up to 20 % more).
    clock = ManualClock()
    step = Step(limited, retry=RetryStrategy(max_attempts=2, base_delay=3600, max_backoff=3600))
    task = asyncio.create_task(ExecutorCore(clock=clock).execute(step, 1))
    await settle()
    clock.advance(9.9)
    await settle()
    assert len(calls) == 1 and not task.done()  # not before the hint
    clock.advance(2.2)
    await settle()
    r = await task
    assert r.success and r.attempts == 2


async def test_cancellation_during_backoff():
    backend = Backend()
    clock = ManualClock()
    ex = ExecutorCore(clock=clock)
    step = Step(backend, "sleepy", retry=RetryStrategy(max_attempts=3, base_delay=3600))
    task = asyncio.create_task(ex.execute(step, 1))
    await until(lambda: backend.calls == 1, what="the first attempt")
    await settle()  # now in the back-off sleep, which the clock never ends
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = ex.get_optimization_stats()["execution"]
    assert backend.calls == 1 and s["in_flight"] == 0 and s["cancelled"] == 1


async def test_executor_default_retry_strategy():
    ex = ExecutorCore(retry_strategy=RetryStrategy(max_attempts=3, base_delay=0))
    backend = Backend()
    await ex.execute(backend, 1)
    assert backend.calls == 3
    backend2 = Backend()
    await ex.execute(Step(backend2, max_retries=0), 1)  # explicit wins
    assert backend2.calls == 1


# ------------------------------------------------------------ error patterns


async def test_errors_that_never_recover_fail_fast_and_are_visible():
    cfg = OptimizationConfig(error_pattern_min_observations=2, enable_circuit_breaker=False)
    ex = ExecutorCore(cfg)
    backend = Backend(exc=PermissionError)
    step = Step(backend, "auth", retry=immediate_retries(5))
    await ex.execute(step, 1)  # attempts 1..3: 2 retries, none recovered
    assert backend.calls == 3
    r = await ex.execute(step, 1)  # the pattern now fails fast
    assert backend.calls == 4 and r.metadata["retry_stopped"] == "fail_fast"
    eh = ex.get_optimization_stats()["error_handling"]
    assert eh["cached_patterns"] == 1 and eh["fail_fast"] >= 1
    (pattern,) = eh["patterns"]
    assert pattern["step"] == "auth" and pattern["exception"] == "builtins.PermissionError"
    assert pattern["recovered"] == 0 and pattern["failed_after_retry"] == 2


async def test_errors_that_recover_keep_their_retries():
    cfg = OptimizationConfig(error_pattern_min_observations=1, enable_circuit_breaker=False)
    clock = ManualClock()
    ex = ExecutorCore(cfg, clock=clock)
    state = {"n": 0}

    async def every_other(x):
        state["n"] += 1
        if state["n"] % 2:
            raise TimeoutError("transient")
        return x

    for _ in range(5):
        r = await drive(clock, ex.execute(Step(every_other, "t", max_retries=1), 1))
        assert r.success and r.attempts == 2
    eh = ex.get_optimization_stats()["error_handling"]
    assert eh["retry_recovery_rate"] == 1.0 and eh["fail_fast"] == 0


async def test_a_renamed_exception_class_is_recorded_under_its_new_name():
    # The qualified type name is cached per type; renaming the class (its
    # __qualname__ or __module__) is seen at the next failure.
    class Flaky(Exception):
        pass

    async def broken(x):
        raise Flaky("no")

    ex = ExecutorCore(OptimizationConfig(enable_circuit_breaker=False))
    step = Step(broken, "renamed", retry=immediate_retries(2))

    def names():
        return sorted(
            p["exception"] for p in ex.get_optimization_stats()["error_handling"]["patterns"]
        )

    first = f"{__name__}.{Flaky.__qualname__}"
    await ex.execute(step, 1)
    assert names() == [first]
    Flaky.__qualname__ = "Renamed"
    await ex.execute(step, 1)
    assert names() == sorted([first, f"{__name__}.Renamed"])
    Flaky.__module__ = "elsewhere"
    await ex.execute(step, 1)
    assert "elsewhere.Renamed" in names()


class _Loud(Exception):
    def __str__(self):
        return "loud " + super().__str__()


class _Tag(str):
    pass


class _Mute(Exception):
    def __str__(self):
        raise RuntimeError("no str")


@pytest.mark.parametrize(
    "exc, sample",
    [
        (ValueError("not yet 3"), "not yet 3"),
        (ValueError("délai dépassé"), "délai dépassé"),
        (ValueError(), ""),
        (ValueError("a", 2), "('a', 2)"),
        (ValueError(7), "7"),
        (ValueError(_Tag("tagged")), "tagged"),
        (KeyError("k"), "'k'"),
        (_Loud("x"), "loud x"),
        (_Mute("x"), "<unprintable>"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
async def test_a_patterns_sample_is_the_exceptions_str(exc, sample):
    async def broken(x):
        raise exc

    ex = ExecutorCore(OptimizationConfig(enable_circuit_breaker=False))
    r = await ex.execute(Step(broken, "s", max_retries=0), 1)
    assert not r.success and r.error is exc
    if sample:
        assert r.feedback == f"{type(exc).__name__}: {sample}"
    (pattern,) = ex.get_optimization_stats()["error_handling"]["patterns"]
    assert pattern["sample"] == sample


async def test_probes_of_a_failed_attempt_never_fail():
    # Properties the failure facts probe (retry_after, status_code, status,
    # response) may raise: the probe finds nothing, the attempt is retried.
    class Odd(Exception):
        @property
        def retry_after(self):
            raise RuntimeError("no")

        @property
        def status_code(self):
            raise KeyError("no")

        @property
        def response(self):
            raise AttributeError("no")

    calls = {"n": 0}

    async def odd(x):
        calls["n"] += 1
        if calls["n"] < 3:
            raise Odd("odd")
        return x

    ex = ExecutorCore(OptimizationConfig(enable_circuit_breaker=False))
    r = await ex.execute(Step(odd, "odd", retry=immediate_retries(3)), 7)
    assert r.success and r.output == 7 and r.attempts == 3


async def test_a_retry_after_added_to_an_exception_class_later_is_honoured():
    # What an exception's type says is cached per type; changing the class
    # (or a base) is seen at the next failure.
    class Base(Exception):
        pass

    class Plain(Base):
        pass

    async def broken(x):
        raise Plain("no")

    ex = ExecutorCore(OptimizationConfig(enable_circuit_breaker=False))
    step = Step(broken, "plain", retry=immediate_retries(2))
    r = await ex.execute(step, 1)
    assert r.attempts == 3 and "retry_stopped" not in r.metadata
    Base.retry_after = 3600.0  # above retry_after_max_seconds: ends at once
    r = await ex.execute(step, 1)
    assert r.attempts == 1 and r.metadata["retry_stopped"] == "retry_after_too_long"


@pytest.mark.parametrize("attr", ["retry_after", "status_code"])
async def test_an_attribute_set_on_a_builtin_exception_is_seen(attr):
    async def broken(x):
        e = ValueError("no")
        setattr(e, attr, 3600.0 if attr == "retry_after" else 503)
        raise e

    async def plain(x):
        raise ValueError("no")

    cfg = OptimizationConfig(enable_circuit_breaker=False, error_pattern_min_observations=1)
    ex = ExecutorCore(cfg)
    r = await ex.execute(Step(plain, "plain", retry=immediate_retries(3)), 1)
    # A deterministic error, retried once in vain: it fails fast (and the
    # type's facts are cached now).
    assert r.attempts == 2 and r.metadata["retry_stopped"] == "fail_fast"
    r = await ex.execute(Step(broken, "attr", retry=immediate_retries(3)), 1)
    if attr == "retry_after":
        assert r.attempts == 1 and r.metadata["retry_stopped"] == "retry_after_too_long"
    else:  # a 503: overload, never judged by fail-fast; every attempt made
        assert r.attempts == 4 and "retry_stopped" not in r.metadata


def test_circuit_open_error_pickles():
    e = pickle.loads(pickle.dumps(CircuitOpenError("b", 1.5)))
    assert e.breaker == "b" and e.retry_after_s == 1.5


# ------------------------------------------------------- overload is not failure


class HTTPError(Exception):
    """An HTTP client's error: the status on its `.response`."""

    def __init__(self, status, attr="status_code"):
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {attr: status})()


def http_429():
    import httpx

    req = httpx.Request("POST", "https://api.example.com/v1/chat")
    resp = httpx.Response(429, request=req)
    return httpx.HTTPStatusError("429 Too Many Requests", request=req, response=resp)


@pytest.mark.parametrize(
    "make_exc",
    [http_429, lambda: HTTPError(503, attr="status"), lambda: HTTPError(429)],
    ids=["httpx-429", "status-503", "status_code-429"],
)
async def test_overload_is_retried_and_never_opens_the_breaker(make_exc):
    ex = ExecutorCore()  # default config: breaker and fail-fast on
    calls = {"n": 0}

    async def rate_limited(x):
        calls["n"] += 1
        if calls["n"] % 6:  # five overload answers, then a success
            raise make_exc()
        return x

    step = Step(rate_limited, retry=immediate_retries(5))
    for i in range(4):  # 20 overloads: twice the breaker's threshold
        r = await ex.execute(step, i)
        assert r.success and r.output == i and r.attempts == 6, r.error
    cb = ex.get_optimization_stats()["circuit_breaker"]
    assert cb["state"] == "CLOSED"
    assert cb["failure_count"] == 0 and cb["open_count"] == 0
    assert ex.get_optimization_stats()["error_handling"]["fail_fast"] == 0


async def test_plain_errors_still_open_the_breaker_per_its_threshold():
    ex = ExecutorCore(OptimizationConfig(circuit_breaker_wait_for_probe=False))
    calls = {"n": 0}

    async def broken(x):
        calls["n"] += 1
        raise RuntimeError("broken")

    step = Step(broken, retry=immediate_retries(5))
    while calls["n"] < 10:  # the default threshold: 10 failures in a row
        r = await ex.execute(step, 1)
        assert type(r.error) is RuntimeError
    cb = ex.get_optimization_stats()["circuit_breaker"]
    assert cb["state"] == "OPEN" and cb["open_count"] == 1
    r = await ex.execute(step, 1)
    assert isinstance(r.error, CircuitOpenError) and calls["n"] == 10


async def test_timeouts_are_never_judged_by_fail_fast_but_still_open_the_breaker():
    ex = ExecutorCore(
        breaker_config(threshold=14, recovery=60, circuit_breaker_wait_for_probe=False)
    )
    calls = {"n": 0}

    async def hanging_backend(x):
        calls["n"] += 1
        raise TimeoutError("read timed out")

    step = Step(hanging_backend, retry=immediate_retries(5))
    for _ in range(2):  # 12 timeouts: fail-fast (3 observations) never stops them
        r = await ex.execute(step, 1)
        assert type(r.error) is TimeoutError and r.attempts == 6
        assert "retry_stopped" not in r.metadata
    assert ex.get_optimization_stats()["error_handling"]["fail_fast"] == 0
    r = await ex.execute(step, 1)  # timeouts 13 and 14 open the breaker
    assert type(r.error) is TimeoutError and r.attempts == 2
    assert ex.get_optimization_stats()["circuit_breaker"]["state"] == "OPEN"


def _client_transport_errors():
    """The transport errors of common HTTP/LLM clients, none of which derive
    from Python's ConnectionError (httpx's, openai's) or only partly."""
    import httpx
    import openai
    import requests

    req = httpx.Request("GET", "http://127.0.0.1:9/")
    return [
        pytest.param(lambda: httpx.ConnectError("connection refused", request=req), id="httpx"),
        pytest.param(lambda: httpx.ReadTimeout("read timed out", request=req), id="httpx-timeout"),
        pytest.param(lambda: openai.APIConnectionError(request=req), id="openai"),
        pytest.param(lambda: requests.exceptions.ConnectionError("refused"), id="requests"),
    ]


@pytest.mark.parametrize("make_error", _client_transport_errors())
async def test_client_transport_errors_are_never_judged_by_fail_fast(make_error):
    # The same transport error, with the same message, five times and then
    # success: a network blip, not a deterministic error. Fail-fast (on by
    # default, 3 observations) must not stop the retries.
    ex = ExecutorCore(OptimizationConfig())
    calls = {"n": 0}

    async def flaky_backend(x):
        calls["n"] += 1
        if calls["n"] % 6:
            raise make_error()
        return x

    step = Step(flaky_backend, retry=immediate_retries(5))
    for i in range(3):
        r = await ex.execute(step, i)
        assert r.success and r.attempts == 6, (r.error, r.metadata)
    assert ex.get_optimization_stats()["error_handling"]["fail_fast"] == 0


async def test_a_data_error_fails_at_once_and_never_opens_the_breaker():
    """caudal.DataError (bad input or output, not a bad backend): no retry
    though retries are left, the breaker does not count it, the fallback
    still runs."""
    from caudal import DataError, SerializationError

    class BadInput(DataError):
        pass

    ex = ExecutorCore(breaker_config(threshold=2))
    backend = Backend(exc=BadInput)
    step = Step(backend, name="parse", max_retries=3)
    for i in range(5):
        r = await ex.execute(step, i)
        assert not r.success and type(r.error) is BadInput
        assert r.attempts == 1 and r.metadata["retry_stopped"] == "not_retryable"
    assert backend.calls == 5
    assert ex.get_optimization_stats()["circuit_breaker"]["state"] == "CLOSED"

    async def raise_serialization(x):
        raise SerializationError("send", "input", "_thread.lock", "cannot pickle")

    async def answer(x):
        return "fallback"

    r = await ex.execute(
        Step(raise_serialization, name="send", max_retries=3, fallback=answer), 1
    )
    assert r.success and r.output == "fallback" and r.metadata["fallback_triggered"]
    e = r.metadata["original_error"]
    assert "send" in str(e) and "_thread.lock" in str(e)
    assert isinstance(SerializationError("s", "output", "x"), TypeError)
    # an ordinary error (not a DataError) on the same settings opens it
    ex2 = ExecutorCore(breaker_config(threshold=2))
    down = Backend(exc=ValueError)
    for i in range(4):
        await ex2.execute(Step(down, name="parse"), i)
    assert ex2.get_optimization_stats()["circuit_breaker"]["state"] == "OPEN"


async def test_a_lost_worker_is_retried_by_default_and_never_opens_the_breaker():
    """RemoteWorkerDiedError (the process running the attempt died) is
    retried at once up to 3 times with no retry policy, beyond a policy's
    attempts, and the breaker does not count it."""
    from caudal import RemoteWorkerDiedError

    class DiesThenAnswers:
        def __init__(self, deaths):
            self.deaths = deaths
            self.calls = 0

        async def __call__(self, x):
            self.calls += 1
            if self.calls <= self.deaths:
                raise RemoteWorkerDiedError("w", "WorkerCrashedError")
            return x

    ex = ExecutorCore(breaker_config(threshold=1))
    fn = DiesThenAnswers(deaths=3)
    r = await ex.execute(Step(fn, name="w"), 7)
    assert r.success and r.output == 7 and r.attempts == 4
    fn = DiesThenAnswers(deaths=10)
    r = await ex.execute(Step(fn, name="w"), 7)
    assert not r.success and type(r.error) is RemoteWorkerDiedError and r.attempts == 4
    assert ex.get_optimization_stats()["circuit_breaker"]["state"] == "CLOSED"
    fn = DiesThenAnswers(deaths=5)  # 3 free retries, then the step's own 2
    r = await ex.execute(Step(fn, name="w2", retry=immediate_retries(2)), 7)
    assert r.success and r.attempts == 6


def test_cluster_lost_error_says_where_and_survives_pickling():
    """ClusterLostError is a lost worker for the executor (retried, not
    counted by the breaker) and names the step and the GCS address."""
    import pickle

    from caudal import ClusterLostError, RemoteWorkerDiedError

    e = ClusterLostError("fetch", "10.0.0.5:6379", 15.2)
    assert isinstance(e, RemoteWorkerDiedError)
    assert str(e) == (
        "step 'fetch': the Ray cluster was lost: its GCS at 10.0.0.5:6379 "
        "has not answered for 15 s"
    )
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is ClusterLostError and str(back) == str(e)
    assert (back.step, back.address, back.lost_for_s, back.reason) == (
        "fetch", "10.0.0.5:6379", 15.2, "cluster lost"
    )  # fmt: skip
