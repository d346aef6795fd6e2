"""Step: the unit of work users hand to an executor or a pipeline, its
settings and the checks they get when the step is built.

How the executor runs a step (the once-per-step analysis) is in
:mod:`caudal._steps`; composing steps with ``>>`` is in
:mod:`caudal._compose`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from caudal import _compose
from caudal._backends import check_backend
from caudal._bounds import MAX_RETRIES, check_count, check_duration
from caudal.resilience import RetryStrategy, _normalise_spec


class Step:
    """A unit of work for the executor.

    ``fn`` may be an ``async def`` or a plain ``def`` (run in a worker thread so
    it never blocks the event loop), taking ``(data)``, ``(data, context)`` or
    nothing. Settings:

    - ``max_retries``: retries after the first attempt, with the default
      back-off (``RetryStrategy(max_attempts=max_retries + 1)``: 0.1 s,
      doubling; a server's Retry-After is honoured). For another back-off
      use ``retry=RetryStrategy(...)`` instead; with neither, the
      executor's default strategy applies (none: a single attempt). flujo
      steps keep flujo's meaning of their ``config.max_retries``: immediate
      retries.
    - ``retry``: a :class:`caudal.RetryStrategy`.
    - ``timeout_s``: per-attempt timeout in seconds (None = none).
    - ``fallback``: a step (or callable) run with the same input when every
      attempt failed.
    - ``cache``: True/False to force result caching on or off for this step;
      None follows ``OptimizationConfig.enable_cache_optimization``.
    - ``cache_ttl_s``: per-step override of ``cache_ttl_seconds``.
    - ``cache_key``: a name for this step's results in the cache, used in
      place of the identity caudal computes from ``fn`` (its module,
      qualname and code, a partial's bound arguments, a bound method's
      instance, captured variables; docs/cache.md, "Cache identity"). Give
      it when that identity cannot be established (the step is then run
      uncached, and ``stats["cache"]["uncacheable_steps"]`` says why), or to
      share results between processes running different code on purpose.
      Steps with the same name and the same ``cache_key`` share results.
    - ``tags``: cache tags for invalidation.
    - ``cache_context``: names of context fields the step's output depends
      on; their values join the input in the cache key.
    - ``single_flight``: concurrent executions with the same key share one
      run (the default); False runs each.
    - ``breaker``: the circuit breaker this step reports to: None (its own,
      named after the step), a string shared by every step that hits the
      same backend, or False (no breaker).
    - ``breaker_exclude``: exception types (or a predicate) that the breaker
      ignores — neither failures nor successes.
    - ``depends_on``: names of the steps whose outputs this step needs, when
      it is part of a :class:`caudal.Pipeline` (the executor ignores it).
    - ``optional``: in a pipeline, a failure of this step does not fail the
      run; its output is None for its dependents (the executor ignores it).
    - ``concurrency_key``: the concurrency limit this step counts against
      (a backend): None (its own, named after the step) or a string shared
      by every step that calls the same backend.
    - ``max_concurrency``: a fixed limit on executions of this key in
      flight; None leaves it to the executor (adaptive when
      ``enable_concurrency_optimization`` is on and
      ``max_concurrent_executions`` is None, else no per-key limit).
    - ``backend``: where attempts run: ``"local"``, ``"ray"`` (a Ray task,
      awaited from asyncio; needs ``pip install 'caudal[ray]'``) or None
      (the executor's default, itself local unless
      ``ExecutorCore(backend="ray")``). Cache, breaker, limits, retries,
      timeouts and statistics stay in the driver either way
      (docs/scale-out.md).
    - ``num_cpus``, ``num_gpus``, ``resources``: what one attempt reserves
      on the Ray cluster (``resources`` are Ray custom resources, e.g.
      ``{"embedder": 1}``, not the ``resources=`` passed to ``execute``).
    - ``actors``: run attempts on a pool of this many Ray actors instead of
      tasks, for steps with costly set-up: if ``fn`` is a class, each actor
      instantiates it once and calls the instance per attempt.

    ``a >> b`` builds a two-step :class:`caudal.Pipeline` (b after a).

    Steps are immutable (the executor caches their analysis); use
    ``replace(**changes)`` for a modified copy.
    """

    __slots__ = (
        "__weakref__",
        "actors",
        "backend",
        "breaker",
        "breaker_exclude",
        "cache",
        "cache_context",
        "cache_key",
        "cache_ttl_s",
        "concurrency_key",
        "depends_on",
        "fallback",
        "fn",
        "max_concurrency",
        "max_retries",
        "name",
        "num_cpus",
        "num_gpus",
        "optional",
        "resources",
        "retry",
        "single_flight",
        "tags",
        "timeout_s",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        *,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        fallback: Any = None,
        cache: bool | None = None,
        cache_ttl_s: float | None = None,
        tags: Iterable[str] = (),
        retry: Any = None,
        breaker: str | bool | None = None,
        breaker_exclude: Any = None,
        cache_context: Iterable[str] = (),
        single_flight: bool = True,
        depends_on: Iterable[str] | str = (),
        optional: bool = False,
        concurrency_key: str | None = None,
        max_concurrency: int | None = None,
        backend: str | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: Mapping[str, float] | None = None,
        actors: int | None = None,
        cache_key: str | None = None,
    ) -> None:
        _refuse_non_steps(fn, "Step", actors)
        if not callable(fn):
            raise TypeError(f"Step: fn must be callable, got {type(fn).__name__}")
        if name is None:
            name = _name_of(fn)
        if not isinstance(name, str) or not name:
            raise TypeError(f"Step: name must be a non-empty str, got {name!r}")
        if cache_key is not None and (not isinstance(cache_key, str) or not cache_key):
            raise TypeError(
                f"Step {name!r}: cache_key must be a non-empty str or None, got {cache_key!r}"
            )
        if max_retries is not None:
            check_count(f"Step {name!r}: max_retries", max_retries, MAX_RETRIES, minimum=0)
        if retry is not None and not isinstance(retry, RetryStrategy):
            raise TypeError(f"Step {name!r}: retry must be a caudal.RetryStrategy, got {retry!r}")
        if retry is not None and max_retries is not None:
            raise ValueError(f"Step {name!r}: give max_retries or retry, not both")
        if breaker is not None and not isinstance(breaker, bool | str):
            raise TypeError(
                f"Step {name!r}: breaker must be None, a str or a bool, got {breaker!r}"
            )
        if breaker is True:
            breaker = None
        if isinstance(breaker, str) and not breaker:
            raise ValueError(f"Step {name!r}: breaker name must not be empty")
        breaker_exclude = _normalise_spec(breaker_exclude, f"Step {name!r}: breaker_exclude")
        if isinstance(cache_context, str):
            cache_context = (cache_context,)
        cache_context = tuple(cache_context)
        if not all(isinstance(f, str) for f in cache_context):
            raise TypeError(f"Step {name!r}: cache_context must be field names (str)")
        if not isinstance(single_flight, bool):
            raise TypeError(f"Step {name!r}: single_flight must be a bool")
        # NaN would mean "no timeout" / "the config's TTL"; past 1e9 s the
        # core's nanoseconds overflow.
        timeout_s = check_duration(
            f"Step {name!r}: timeout_s", timeout_s, positive=True, none_ok=True
        )
        if cache is not None and not isinstance(cache, bool):
            raise TypeError(f"Step {name!r}: cache must be True, False or None, got {cache!r}")
        cache_ttl_s = check_duration(
            f"Step {name!r}: cache_ttl_s", cache_ttl_s, positive=True, none_ok=True
        )
        if isinstance(tags, str):
            tags = (tags,)
        tags = tuple(tags)
        for t in tags:
            if not isinstance(t, str):
                raise TypeError(f"Step {name!r}: tags must be strings, got {t!r}")
        if fallback is not None and not isinstance(fallback, Step):
            _refuse_non_steps(fallback, f"Step {name!r}: fallback", None)
            if not (callable(fallback) or hasattr(fallback, "run")):
                raise TypeError(f"Step {name!r}: fallback must be a step or a callable")
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        depends_on = tuple(depends_on)
        for d in depends_on:
            if not isinstance(d, str) or not d:
                raise TypeError(f"Step {name!r}: depends_on must name steps, got {d!r}")
        if not isinstance(optional, bool):
            raise TypeError(f"Step {name!r}: optional must be True or False, got {optional!r}")
        if concurrency_key is not None and (
            not isinstance(concurrency_key, str) or not concurrency_key
        ):
            raise TypeError(
                f"Step {name!r}: concurrency_key must be a non-empty str or None, "
                f"got {concurrency_key!r}"
            )
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or not 1 <= max_concurrency <= 16_777_215
        ):
            raise ValueError(
                f"Step {name!r}: max_concurrency must be an int >= 1 or None, "
                f"got {max_concurrency!r}"
            )
        backend, num_cpus, num_gpus, resources, actors = _check_placement(
            name, backend, num_cpus, num_gpus, resources, actors
        )
        setter = object.__setattr__
        setter(self, "fn", fn)
        setter(self, "depends_on", depends_on)
        setter(self, "optional", optional)
        setter(self, "name", name)
        setter(self, "max_retries", max_retries)
        setter(self, "timeout_s", None if timeout_s is None else float(timeout_s))
        setter(self, "fallback", fallback)
        setter(self, "cache", cache)
        setter(self, "cache_ttl_s", None if cache_ttl_s is None else float(cache_ttl_s))
        setter(self, "tags", tags)
        setter(self, "retry", retry)
        setter(self, "breaker", breaker)
        setter(self, "breaker_exclude", breaker_exclude)
        setter(self, "cache_context", cache_context)
        setter(self, "single_flight", single_flight)
        setter(self, "concurrency_key", concurrency_key)
        setter(self, "max_concurrency", max_concurrency)
        setter(self, "backend", backend)
        setter(self, "num_cpus", num_cpus)
        setter(self, "num_gpus", num_gpus)
        setter(self, "resources", resources)
        setter(self, "actors", actors)
        setter(self, "cache_key", cache_key)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(
            f"Step is immutable (its analysis is cached by executors); "
            f"use step.replace({key}=...) instead"
        )

    def replace(self, **changes: Any) -> Step:
        """A copy with some settings changed."""
        kw = {s: getattr(self, s) for s in self.__slots__ if s not in ("fn", "name", "__weakref__")}
        kw.update(changes)
        fn = kw.pop("fn", self.fn)
        name = kw.pop("name", self.name)
        return Step(fn, name, **kw)

    def __repr__(self) -> str:
        extra = []
        if self.max_retries is not None:
            extra.append(f"max_retries={self.max_retries}")
        if self.retry is not None:
            extra.append(f"retry={self.retry!r}")
        if self.breaker is not None:
            extra.append(f"breaker={self.breaker!r}")
        if self.timeout_s is not None:
            extra.append(f"timeout_s={self.timeout_s}")
        if self.fallback is not None:
            extra.append(f"fallback={_name_of(self.fallback)!r}")
        if self.cache is not None:
            extra.append(f"cache={self.cache}")
        if self.cache_ttl_s is not None:
            extra.append(f"cache_ttl_s={self.cache_ttl_s}")
        if self.cache_key is not None:
            extra.append(f"cache_key={self.cache_key!r}")
        if self.tags:
            extra.append(f"tags={self.tags!r}")
        if self.depends_on:
            extra.append(f"depends_on={self.depends_on!r}")
        if self.optional:
            extra.append("optional=True")
        if self.concurrency_key is not None:
            extra.append(f"concurrency_key={self.concurrency_key!r}")
        if self.max_concurrency is not None:
            extra.append(f"max_concurrency={self.max_concurrency}")
        for f in ("backend", "num_cpus", "num_gpus", "resources", "actors"):
            v = getattr(self, f)
            if v is not None:
                extra.append(f"{f}={v!r}")
        return f"Step({self.name!r}{''.join(', ' + e for e in extra)})"

    def __rshift__(self, other: Any) -> Any:
        """``a >> b``: a Pipeline running ``b`` on ``a``'s output."""
        return _compose.chain(self, other)

    def __rrshift__(self, other: Any) -> Any:
        return _compose.chain(other, self)


def _check_placement(
    name: str,
    backend: Any,
    num_cpus: Any,
    num_gpus: Any,
    resources: Any,
    actors: Any,
) -> tuple[str | None, float | None, float | None, dict[str, float] | None, int | None]:
    """Validate the backend keywords of Step ``name``."""
    where = f"Step {name!r}"
    backend = check_backend(backend, where)

    def amount(field: str, v: Any) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise ValueError(f"{where}: {field} must be a number >= 0 or None, got {v!r}")
        return v

    num_cpus = amount("num_cpus", num_cpus)
    num_gpus = amount("num_gpus", num_gpus)
    if resources is not None:
        if not isinstance(resources, Mapping):
            raise TypeError(
                f"{where}: resources must map Ray resource names to amounts, got {resources!r}"
            )
        checked = {}
        for k, v in resources.items():
            if not isinstance(k, str) or not k:
                raise TypeError(f"{where}: resources: names must be non-empty str, got {k!r}")
            if k in ("CPU", "GPU"):
                raise ValueError(
                    f"{where}: resources: give {k!r} with num_{k.lower()}s=, not resources="
                )
            checked[k] = amount(f"resources[{k!r}]", v)
        resources = checked or None
    if actors is not None and (
        isinstance(actors, bool) or not isinstance(actors, int) or actors < 1
    ):
        raise ValueError(f"{where}: actors must be an int >= 1 or None, got {actors!r}")
    if backend == "local":
        given = [
            f
            for f, v in (
                ("num_cpus", num_cpus),
                ("num_gpus", num_gpus),
                ("resources", resources),
                ("actors", actors),
            )
            if v is not None
        ]
        if given:
            raise ValueError(
                f"{where}: {', '.join(given)} {'applies' if len(given) == 1 else 'apply'} "
                f"only to backend='ray' "
                f"(this step has backend='local')"
            )
    return backend, num_cpus, num_gpus, resources, actors


def step(fn: Callable[..., Any] | None = None, /, **settings: Any) -> Any:
    """Decorator form of :class:`Step`: ``@caudal.step`` or
    ``@caudal.step(name="x", max_retries=2, ...)``; takes every keyword
    :class:`Step` takes, and checks them the same way."""

    def wrap(f: Callable[..., Any]) -> Step:
        return Step(f, **settings)

    return wrap(fn) if fn is not None else wrap


def _name_of(obj: Any) -> str:
    if isinstance(obj, Step):
        return obj.name
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(obj, functools.partial):
        return _name_of(obj.func)
    n = getattr(obj, "__name__", None)
    if isinstance(n, str):
        return n
    return type(obj).__name__


def _refuse_non_steps(fn: Any, where: str, actors: int | None) -> None:
    """TypeError for what would run and "succeed" with a useless output, or
    fail with a puzzling one: a coroutine or generator object (the result
    of calling the function), a generator function, a class (outside
    ``actors=``). Built-in types (``str``, ``int``...) stay allowed: they
    convert the input."""
    if inspect.iscoroutine(fn):
        called = getattr(fn, "__name__", None) or "fn"
        fn.close()  # unusable now; closing avoids a "never awaited" warning
        raise TypeError(
            f"{where}: got a coroutine object, the result of calling {called}(): "
            f"pass the function itself: Step({called}), not Step({called}())"
        )
    if inspect.isgenerator(fn) or inspect.isasyncgen(fn):
        raise TypeError(
            f"{where}: got a generator object; generators are not steps (a step "
            f"returns its output): write a function that returns a value, e.g. "
            f"the items collected into a list"
        )
    base = fn
    while isinstance(base, functools.partial):
        base = base.func
    if inspect.isclass(base):
        if actors is not None or base.__module__ == "builtins":
            return
        qn = base.__qualname__
        if any(k in c.__dict__ for c in base.__mro__[:-1] for k in ("run", "__call__")):
            raise TypeError(
                f"{where}: {qn} is a class, not a step (calling it would only "
                f"construct an instance); pass an instance: Step({qn}())"
            )
        raise TypeError(
            f"{where}: {qn} is a class, not a step (calling it would only "
            f"construct an instance); pass a function, or pass an instance of a "
            f"class with a run() or __call__ method (for a new instance as the "
            f"output, pass a function that builds it)"
        )
    _refuse_generator(fn, where)


def _refuse_generator(fn: Any, where: str) -> None:
    call = fn
    if not inspect.isroutine(fn) and not isinstance(fn, functools.partial):
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - an instance's
    if inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call):
        raise TypeError(
            f"{where}: {_name_of(fn)} is a generator function; generator functions "
            f"are not steps (the output would be the generator object): return a "
            f"value instead, e.g. collect the items into a list"
        )


__all__ = ["Step", "step"]
