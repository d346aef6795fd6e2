"""Steps: what the executor runs, and the once-per-step analysis of them.

``analyse(step)`` is called by the native engine the first time it meets a
step object; the result is cached natively in the executor's step table, so
the inspection below never runs per execution (flujo's "step
optimization").
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from caudal._bounds import MAX_RETRIES, check_count, check_duration
from caudal._identity import namespace

# Mirrors of the C++ enums in cpp/caudal/executor/step_spec.h.
KIND_ASYNC, KIND_SYNC = 0, 1
SHAPE_NO_ARGS, SHAPE_DATA, SHAPE_DATA_CONTEXT, SHAPE_RUN_KWARGS = 0, 1, 2, 3

_CONTEXT_NAMES = ("context", "ctx")


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
        from caudal.resilience import RetryStrategy, _normalise_spec

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
        from caudal.pipeline import Pipeline

        return Pipeline.of(self) >> other

    def __rrshift__(self, other: Any) -> Any:
        from caudal.pipeline import Pipeline

        return Pipeline.of(other) >> self


def _check_placement(
    name: str,
    backend: Any,
    num_cpus: Any,
    num_gpus: Any,
    resources: Any,
    actors: Any,
) -> tuple[str | None, float | None, float | None, dict[str, float] | None, int | None]:
    """Validate the backend keywords of Step ``name``."""
    from caudal.backends import check_backend

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


class ExecutorDefaults:
    """What an executor's step analysis falls back on: the default
    RetryStrategy and backend. The native engine passes it to ``analyse``
    untouched (through ``Engine.set_default_retry``, the one opaque slot the
    binding has for analysis defaults)."""

    __slots__ = ("backend", "retry")

    def __init__(self, retry: Any = None, backend: str | None = None) -> None:
        self.retry = retry
        self.backend = backend

    def __repr__(self) -> str:
        return f"ExecutorDefaults(retry={self.retry!r}, backend={self.backend!r})"


def _local_instance(make: Callable[[], Any], is_async: bool) -> Callable[..., Any]:
    """A class step with ``actors=`` running locally: instantiated once (its
    set-up, ``make()``), on first use, and the instance called per attempt —
    what each Ray actor does, in the driver."""
    lock = threading.Lock()
    box: list[Any] = []

    def instance() -> Any:
        if not box:
            with lock:
                if not box:
                    box.append(make())
        return box[0]

    if is_async:

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await instance()(*args, **kwargs)

        call: Callable[..., Any] = call_async
    else:

        def call_sync(*args: Any, **kwargs: Any) -> Any:
            return instance()(*args, **kwargs)

        call = call_sync
    call.__name__ = call.__qualname__ = _name_of(make)
    return call


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


def _is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class attribute
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _shape_of(fn: Any, *, as_run: bool) -> tuple[int, bool, bool]:
    """(shape, pass_context_kw, pass_resources_kw) for calling ``fn``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature
        return SHAPE_DATA, False, False
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    names = {p.name for p in params}
    ctx_kw = var_kw or any(n in names for n in _CONTEXT_NAMES)
    res_kw = var_kw or "resources" in names
    if as_run:
        return SHAPE_RUN_KWARGS, ctx_kw and ("context" in names or var_kw), res_kw
    if not positional and not var_pos:
        if ctx_kw or res_kw:
            return SHAPE_RUN_KWARGS, "context" in names, "resources" in names
        return SHAPE_NO_ARGS, False, False
    if len(positional) >= 2:
        second = positional[1]
        if second.name in _CONTEXT_NAMES or second.default is second.empty:
            return SHAPE_DATA_CONTEXT, False, False
    if "context" in names or "resources" in names:
        return SHAPE_RUN_KWARGS, "context" in names, "resources" in names
    return SHAPE_DATA, False, False


def _flujo_settings(obj: Any) -> tuple[int | None, float | None]:
    cfg = getattr(obj, "config", None)
    retries = getattr(cfg, "max_retries", None) if cfg is not None else None
    timeout = getattr(cfg, "timeout_s", None) if cfg is not None else None
    return (
        int(retries) if isinstance(retries, int) and retries >= 0 else None,
        float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None,
    )


def analyse(obj: Any, default_retry: Any = None) -> dict[str, Any]:
    """Describe how to run ``obj``; called once per step object by the engine.

    Accepts a caudal Step, a flujo-style Step (an object with ``agent.run``
    and a ``config``), an agent (an object with a ``run`` method), or a plain
    callable. ``default_retry`` is the executor's default RetryStrategy, or
    an :class:`ExecutorDefaults` (default retry and backend).
    """
    from caudal.resilience import RetryStrategy, immediate_retries

    default_backend = None
    if isinstance(default_retry, ExecutorDefaults):
        default_retry, default_backend = default_retry.retry, default_retry.backend

    max_retries, retry, timeout_s, cache, cache_ttl_s, tags, fallback = (
        None,
        None,
        None,
        None,
        None,
        (),
        None,
    )
    breaker, breaker_exclude, cache_context, single_flight = None, None, (), True
    concurrency_key, max_concurrency, cache_key = None, None, None
    backend, num_cpus, num_gpus, resources, actors = None, None, None, None, None
    if isinstance(obj, Step):
        target = obj.fn
        name = obj.name
        max_retries, retry, timeout_s = obj.max_retries, obj.retry, obj.timeout_s
        cache, cache_ttl_s, tags, fallback = obj.cache, obj.cache_ttl_s, obj.tags, obj.fallback
        breaker, breaker_exclude = obj.breaker, obj.breaker_exclude
        cache_context, single_flight = obj.cache_context, obj.single_flight
        concurrency_key, max_concurrency = obj.concurrency_key, obj.max_concurrency
        backend, num_cpus, num_gpus, resources, actors = (
            obj.backend,
            obj.num_cpus,
            obj.num_gpus,
            obj.resources,
            obj.actors,
        )
        cache_key = obj.cache_key
    elif hasattr(obj, "agent") and hasattr(obj, "config") and hasattr(obj.agent, "run"):
        # flujo Step: the work is agent.run(data, context=..., resources=...).
        target = obj.agent
        name = _name_of(obj)
        _refuse_non_steps(target, f"Step {name!r}: agent", None)
        max_retries, timeout_s = _flujo_settings(obj)
        fallback = getattr(obj, "fallback_step", None)
    else:
        target = obj
        name = _name_of(obj)
        _refuse_non_steps(target, f"Step {name!r}", None)

    if backend is None:
        backend = default_backend or "local"
    # A class (or a functools.partial of one, for set-up arguments) with
    # actors=: set-up in __init__ (once per actor), work in __call__.
    cls = target.func if isinstance(target, functools.partial) else target
    is_class = actors is not None and inspect.isclass(cls)
    if is_class:
        if cls.__call__ is type.__call__ or cls.__call__ is object.__call__:
            raise TypeError(f"Step {name!r}: a class used with actors= must define __call__")
        fn = target
        as_run = False
    elif not callable(target) or (
        hasattr(target, "run") and not inspect.isroutine(target) and not _is_async_callable(target)
    ):
        run = getattr(target, "run", None)
        if run is None or not callable(run):
            raise TypeError(
                f"cannot execute {type(obj).__name__!r}: expected a caudal.Step, a callable, "
                f"an object with a run() method, or a flujo Step"
            )
        fn = run
        as_run = True
        if not isinstance(obj, Step) and name == type(obj).__name__:
            name = _name_of(target)
    else:
        fn = target
        as_run = False
    if not is_class:
        _refuse_generator(fn, f"Step {name!r}")
    # What the results belong to (docs/cache.md, "Cache identity"). A name
    # the user gave is the namespace now; a computed identity is left to the
    # engine (identity_of), which asks caudal._identity.namespace once, when
    # the step is first executed with caching on.
    identity_of = None
    if cache is False:
        cache_ns, uncacheable = name, None  # never used
    elif cache_key is not None:
        cache_ns, uncacheable = namespace(name, None, cache_key)
    else:
        cache_ns, uncacheable = None, None
        identity_of = target if is_class else fn

    if retry is None:
        if max_retries is not None and isinstance(obj, Step):
            # caudal's Step: N retries with the default back-off (a flaky
            # API must not meet N retries within a millisecond).
            retry = RetryStrategy(max_attempts=max_retries + 1)
        elif max_retries is not None:
            retry = immediate_retries(max_retries)  # flujo's own meaning
        elif default_retry is not None:
            retry = default_retry
        else:
            retry = immediate_retries(0)
    retry_on = retry.retry_on
    if retry_on == (Exception,):
        retry_on = None  # the common case: no per-error check needed

    if is_class:
        call = functools.partial(cls.__call__, None)  # the signature without self
        kind = KIND_ASYNC if inspect.iscoroutinefunction(cls.__call__) else KIND_SYNC
        shape, ctx_kw, res_kw = _shape_of(call, as_run=False)
    else:
        kind = KIND_ASYNC if _is_async_callable(fn) else KIND_SYNC
        shape, ctx_kw, res_kw = _shape_of(fn, as_run=as_run)
    if backend == "ray":
        from caudal.backends.ray import ray_attempt

        fn = ray_attempt(
            obj,
            fn,
            name=name,
            shape=shape,
            context_kw=ctx_kw,
            is_class=is_class,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=resources,
            actors=actors,
        )
        kind = KIND_ASYNC
    elif is_class:
        fn = _local_instance(target, kind == KIND_ASYNC)
    return {
        "name": name,
        "kind": kind,
        "shape": shape,
        "context_kw": ctx_kw,
        "resources_kw": res_kw,
        "retry": retry._native(),
        "retry_on": retry_on,
        "timeout_s": timeout_s,
        "cache": cache,
        "cache_ttl_s": cache_ttl_s,
        "tags": list(tags),
        "fallback": fallback,
        "fn": fn,
        "breaker": breaker,
        "breaker_exclude": breaker_exclude,
        "cache_context": tuple(cache_context) if cache_context else None,
        "single_flight": single_flight,
        "concurrency_key": concurrency_key,
        "max_concurrency": max_concurrency,
        "cache_ns": cache_ns,
        "uncacheable": uncacheable,
        "identity_of": identity_of,
    }


__all__ = ["ExecutorDefaults", "Step", "analyse", "step"]
