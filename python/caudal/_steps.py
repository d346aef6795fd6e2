"""How the executor runs a step: the once-per-step analysis.

``analyse(step)`` is called by the native engine the first time it meets a
step object (the binding looks it up here, as ``caudal._steps.analyse``);
the result is cached natively in the executor's step table, so the
inspection below never runs per execution (flujo's "step optimization").
The answer is a :class:`caudal._core.StepAnalysis`, whose constructor
checks every field (a wrong one raises ``ConfigurationError`` naming it);
the engine copies it into its step table without decoding anything. The
step itself (:class:`caudal.Step`) is defined in :mod:`caudal._step`.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

from caudal._core import CallShape, RetryPolicy, StepAnalysis, StepKind
from caudal._identity import namespace
from caudal._step import Step, _name_of, _refuse_generator, _refuse_non_steps
from caudal.resilience import RetryStrategy, immediate_retries

_CONTEXT_NAMES = ("context", "ctx")

# What a step with no retry setting gets when the executor has no default:
# one attempt (made once: most steps meet this path).
_ONE_ATTEMPT_POLICY: RetryPolicy = immediate_retries(0)._native()


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


def _is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class attribute
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _shape_of(fn: Any, *, as_run: bool) -> tuple[CallShape, bool, bool]:
    """(shape, pass_context_kw, pass_resources_kw) for calling ``fn``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature
        return CallShape.DATA, False, False
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    names = {p.name for p in params}
    ctx_kw = var_kw or any(n in names for n in _CONTEXT_NAMES)
    res_kw = var_kw or "resources" in names
    if as_run:
        return CallShape.RUN_KWARGS, ctx_kw and ("context" in names or var_kw), res_kw
    if not positional and not var_pos:
        if ctx_kw or res_kw:
            return CallShape.RUN_KWARGS, "context" in names, "resources" in names
        return CallShape.NO_ARGS, False, False
    if len(positional) >= 2:
        second = positional[1]
        if second.name in _CONTEXT_NAMES or second.default is second.empty:
            return CallShape.DATA_CONTEXT, False, False
    if "context" in names or "resources" in names:
        return CallShape.RUN_KWARGS, "context" in names, "resources" in names
    return CallShape.DATA, False, False


def _flujo_settings(obj: Any) -> tuple[int | None, float | None]:
    cfg = getattr(obj, "config", None)
    retries = getattr(cfg, "max_retries", None) if cfg is not None else None
    timeout = getattr(cfg, "timeout_s", None) if cfg is not None else None
    return (
        int(retries) if isinstance(retries, int) and retries >= 0 else None,
        float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None,
    )


def analyse(
    obj: Any, default_retry: RetryStrategy | None = None, default_backend: str = "local"
) -> StepAnalysis:
    """Describe how to run ``obj``; called once per step object by the engine.

    Accepts a caudal Step, a flujo-style Step (an object with ``agent.run``
    and a ``config``), an agent (an object with a ``run`` method), or a plain
    callable. ``default_retry`` and ``default_backend`` are the executor's
    defaults (the engine's ``retry`` and ``backend``), for the steps that do
    not set their own.
    """
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
        backend = default_backend
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
    policy = _ONE_ATTEMPT_POLICY if retry is None else retry._native()
    retry_on = None if retry is None else retry.retry_on
    if retry_on == (Exception,):
        retry_on = None  # the common case: no per-error check needed

    if is_class:
        call = functools.partial(cls.__call__, None)  # the signature without self
        kind = StepKind.ASYNC if inspect.iscoroutinefunction(cls.__call__) else StepKind.SYNC
        shape, ctx_kw, res_kw = _shape_of(call, as_run=False)
    else:
        kind = StepKind.ASYNC if _is_async_callable(fn) else StepKind.SYNC
        shape, ctx_kw, res_kw = _shape_of(fn, as_run=as_run)
    if backend == "ray":
        from caudal.integrations.ray import ray_attempt

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
        kind = StepKind.ASYNC
    elif is_class:
        fn = _local_instance(target, kind == StepKind.ASYNC)
    return StepAnalysis(
        name=name,
        fn=fn,
        kind=kind,
        shape=shape,
        retry=policy,
        context_kw=ctx_kw,
        resources_kw=res_kw,
        retry_on=retry_on,
        timeout_s=timeout_s,
        cache=cache,
        cache_ttl_s=cache_ttl_s,
        tags=tags,
        fallback=fallback,
        breaker=breaker,
        breaker_exclude=breaker_exclude,
        cache_context=tuple(cache_context) if cache_context else None,
        single_flight=single_flight,
        concurrency_key=concurrency_key,
        max_concurrency=max_concurrency,
        cache_ns=cache_ns,
        uncacheable=uncacheable,
        identity_of=identity_of,
    )


__all__ = ["Step", "analyse"]
