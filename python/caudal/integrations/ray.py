"""The Ray backend: a step's attempt runs as a Ray task, or as a call on a
pool of Ray actors, and the driver awaits it through Ray's asyncio support.

Seam: ``caudal._steps.analyse`` replaces the analysed ``fn`` of a step whose
backend is ``"ray"`` by the ``async def`` built here (``kind`` async, same
call shape). Everything the executor does around an attempt — cache lookup
and store, single flight, breaker, concurrency slots, retries and back-off,
timeouts, statistics — therefore happens in the driver exactly as for a
local step; only the call itself crosses to the cluster. The C++ core and
its bindings know nothing of Ray.

Per attempt the driver pays one ``.remote()`` submission and one awaited
ObjectRef (measured in ``benchmarks/bench_scale_out.py``). The remote
function (or the actor pool) is created once per Step object and cached
here, not per attempt.

Semantics (docs/scale-out.md):

- Ray's own retries are off (``max_retries=0`` for tasks, ``max_restarts=0``
  / ``max_task_retries=0`` for actors): whether to retry is the executor's
  decision, counted in its statistics.
- A remote exception reaches the caller as itself (``RayTaskError.cause``:
  same type, same message), with the remote traceback added as a note.
- A dead worker, node, actor or lost result becomes
  :class:`caudal.RemoteWorkerDiedError`, which the core retries at once up
  to 3 times by default (beyond the step's retries; never a breaker
  failure).
- A request the cluster cannot place (an actor pool larger than the
  cluster, a GPU or custom resource no node has) fails the first attempt
  with :class:`caudal.PlacementError` instead of waiting forever
  (``CAUDAL_RAY_PLACEMENT_CHECK=0`` turns the check off, for a cluster
  that autoscales).
- An input or output that cannot be serialised (pickled) becomes
  :class:`caudal.SerializationError` naming the step and the type, a
  :class:`caudal.DataError`: final at once, not counted by the breaker.
- Cancelling the awaiting coroutine (``task.cancel()``, a step timeout, a
  pipeline stopping) calls ``ray.cancel(ref, force=False)``: a queued task
  never runs, a running task gets ``KeyboardInterrupt`` (so its ``finally``
  blocks run). A running call on a (synchronous) actor is not interrupted
  by Ray; it sees ``ray.get_runtime_context().is_canceled()``.
- Context: the worker gets a copy of the step's context; the keys the step
  changed there come back with the output and are applied to the driver's
  context object, so pipelines merge and checkpoint them as for a local step.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import threading
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from caudal._backends import ray_missing_message
from caudal._core import CallShape
from caudal._step import Step
from caudal.errors import BackendUnavailableError
from caudal.integrations._ray_errors import (
    _reraise,
    _serialisation_failure,
    _translator,
    _unserialisable,
)
from caudal.integrations._ray_placement import _ActorPool, _placement
from caudal.integrations._ray_watch import _watch
from caudal.pipeline.context import DELETED

# How the step is called (the core's CallShape, as caudal._steps analysed it).
_SHAPE_DATA_CONTEXT, _SHAPE_RUN_KWARGS = CallShape.DATA_CONTEXT, CallShape.RUN_KWARGS


def import_ray(where: str) -> Any:
    """``import ray``, or a BackendUnavailableError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError(ray_missing_message(where), name="ray") from exc
    return ray


# ------------------------------------------------------------ worker side
# These run in the Ray worker process.


def _context_of(args: tuple, kwargs: dict, ctx_at: int | str | None) -> Any:
    if ctx_at is None:
        return None
    if isinstance(ctx_at, int):
        return args[ctx_at] if len(args) > ctx_at else None
    return kwargs.get(ctx_at)


def _fields(ctx: Any) -> MutableMapping | None:
    """The mutable key/value view of a context, or None for contexts a step
    cannot change in place (None, immutable mappings, caudal.Context)."""
    if isinstance(ctx, MutableMapping):
        return ctx
    d = getattr(ctx, "__dict__", None)
    return d if isinstance(d, dict) else None


class _WithChanges:
    """A remote attempt's output together with the context fields it
    changed. Only an attempt that changed its context returns one: the
    common case ships the bare output, with nothing more to pickle."""

    __slots__ = ("changes", "out")

    def __init__(self, out: Any, changes: dict) -> None:
        self.out, self.changes = out, changes

    def __reduce__(self) -> tuple:
        return (_WithChanges, (self.out, self.changes))


def _run_here(fn: Callable[..., Any], ctx_at: int | str | None, args: tuple, kwargs: dict) -> Any:
    """Call the step on this worker: its output, or a ``_WithChanges`` if
    it changed its context."""
    ctx = _context_of(args, kwargs, ctx_at)
    fields = _fields(ctx) if ctx is not None else None
    before = dict(fields) if fields is not None else None
    out = fn(*args, **kwargs)
    if inspect.isawaitable(out):
        out = asyncio.run(_awaited(out))
    if before is None:
        return out
    now = _fields(ctx)
    changes = {k: v for k, v in now.items() if k not in before or before[k] is not v}
    for k in before:
        if k not in now:
            changes[k] = DELETED
    return _WithChanges(out, changes) if changes else out


def _settle(out: Any, args: tuple, kwargs: dict, ctx_at: int | str | None) -> Any:
    """The attempt's output, its context changes applied on the driver."""
    if type(out) is _WithChanges:
        _apply_changes(_context_of(args, kwargs, ctx_at), out.changes)
        return out.out
    return out


async def _others_submit_first() -> None:
    """One pass of the event loop between submitting an attempt and waiting
    for its result. In a burst (a gather of many executions) every attempt
    is then submitted before any registers its wait, as with plain
    ``asyncio.gather(*(f.remote(x) for x in xs))``: Ray's driver gets
    through that order faster than submissions and waits taken in turn
    (benchmarks/bench_scale_out.py, the driver's ceiling). A cancellation
    that lands here cancels the submitted task, as one during the wait
    does."""
    await asyncio.sleep(0)


async def _awaited(aw: Any) -> Any:
    return await aw


def _task_body(
    fn: Callable[..., Any], ctx_at: int | str | None, name: str
) -> Callable[..., Any]:
    def caudal_step(*args: Any, **kwargs: Any) -> Any:
        return _run_here(fn, ctx_at, args, kwargs)

    # Ray names the task after its function: the step's name, in Ray's
    # dashboard and errors. (A name= option would cost a few per cent of
    # the driver's throughput: Ray handles it on every submission.)
    caudal_step.__name__ = caudal_step.__qualname__ = name
    return caudal_step


class _StepActor:
    """One member of a step's actor pool. A class given as the step's fn is
    instantiated once here (its ``__init__`` is the costly set-up) and the
    instance is called per attempt; a function is just called."""

    def __init__(self, target: Any, is_class: bool, ctx_at: int | str | None) -> None:
        self._fn = target() if is_class else target
        self._ctx_at = ctx_at

    def call(self, args: tuple, kwargs: dict) -> Any:
        return _run_here(self._fn, self._ctx_at, args, kwargs)


# ------------------------------------------------------------ driver side


def _apply_changes(ctx: Any, changes: Mapping[Any, Any]) -> None:
    """Apply the worker's context changes to the driver's context object."""
    fields = _fields(ctx)
    if fields is None:
        return
    for k, v in changes.items():
        if v is DELETED:
            fields.pop(k, None)
        else:
            fields[k] = v


def release_actors(step: Any) -> int:
    """Stop the Ray actors of ``step``'s pool now (they hold their CPUs for
    as long as the Step object lives otherwise); returns how many stopped. A
    later attempt of the step starts a new pool."""
    with _BUILT_LOCK:
        built = list(_BUILT.get(step, {}).values())
    n = 0
    for attempt in built:
        pool = getattr(attempt, "pool", None)
        if pool is not None:
            n += pool.stop()
    return n


def _cancel(ray: Any, ref: Any) -> None:
    try:
        ray.cancel(ref, force=False, recursive=True)
    except Exception:  # finished already, or Ray shut down
        pass


# One built attempt per Step object (weakly held; the attempt closures hold
# the step's fn, never the Step itself).
_BUILT: weakref.WeakKeyDictionary[Any, dict[tuple, Callable[..., Any]]] = (
    weakref.WeakKeyDictionary()
)
_BUILT_LOCK = threading.Lock()


def ray_attempt(
    owner: Any,
    target: Callable[..., Any],
    *,
    name: str,
    shape: int,
    context_kw: bool,
    is_class: bool,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: Mapping[str, float] | None,
    actors: int | None,
) -> Callable[..., Any]:
    """The ``async def`` that runs one attempt of ``target`` on Ray; built
    once per Step (``owner``) and options."""
    ray = import_ray(f"step {name!r}")
    key = (
        name,
        shape,
        context_kw,
        is_class,
        num_cpus,
        num_gpus,
        tuple(sorted(resources.items())) if resources else None,
        actors,
    )
    cacheable = isinstance(owner, Step)
    if cacheable:
        with _BUILT_LOCK:
            found = _BUILT.get(owner, {}).get(key)
        if found is not None:
            return found
    if shape == _SHAPE_DATA_CONTEXT:
        ctx_at: int | str | None = 1
    elif shape == _SHAPE_RUN_KWARGS and context_kw:
        ctx_at = "context"
    else:
        ctx_at = None
    opts: dict[str, Any] = {}
    if num_gpus is not None:
        opts["num_gpus"] = num_gpus
    if resources:
        opts["resources"] = dict(resources)
    translate = _translator(ray, name)
    if actors:
        opts["num_cpus"] = 1 if num_cpus is None else num_cpus
        actor_cls = ray.remote(max_restarts=0, max_task_retries=0, **opts)(_StepActor)
        req = {"CPU": opts["num_cpus"], "GPU": num_gpus or 0, **(resources or {})}
        pool = _ActorPool(ray, actor_cls, actors, (target, is_class, ctx_at), name, req)
        attempt = _actor_attempt(ray, pool, ctx_at, translate, name)
        attempt.pool = pool  # type: ignore[attr-defined]  # for tests and stats
    else:
        if num_cpus is not None:
            opts["num_cpus"] = num_cpus
        remote = ray.remote(max_retries=0, retry_exceptions=False, **opts)(
            _task_body(target, ctx_at, name)
        )
        # A task asks for 1 CPU unless told (Ray's default).
        req = {"CPU": 1 if num_cpus is None else num_cpus, "GPU": num_gpus or 0}
        req.update(resources or {})
        attempt = _task_attempt(ray, remote, ctx_at, translate, name, req)
    attempt.__name__ = attempt.__qualname__ = f"ray:{name}"
    if cacheable:
        with _BUILT_LOCK:
            per_owner = _BUILT.setdefault(owner, {})
            attempt = per_owner.setdefault(key, attempt)
    return attempt


def _task_attempt(
    ray: Any,
    remote: Any,
    ctx_at: int | str | None,
    translate: Callable[..., BaseException],
    name: str,
    req: dict,
) -> Callable[..., Any]:
    submit = remote.remote
    ray_error = ray.exceptions.RayError
    placed: list[str] = []  # non-empty once the request was checked (once per step)

    async def attempt(*args: Any, **kwargs: Any) -> Any:
        watch = _watch(ray)
        if watch is not None and watch.lost:
            await watch.check(name)
        if not placed:
            _placement(ray, name, req, None)
            placed.append("checked")
        try:
            ref = submit(*args, **kwargs)
        except (TypeError, pickle.PicklingError) as exc:
            if not _serialisation_failure(exc):
                raise
            raise _unserialisable(name, "input", exc)  # noqa: B904 (chained to pickle's error)
        task = asyncio.current_task()
        if watch is not None and task is not None:
            watch.enter(task)
        try:
            await _others_submit_first()
            out = await ref
        except asyncio.CancelledError:
            if watch is not None and watch.ended_by_us(task) and task.uncancel() == 0:
                raise watch.error(name) from None
            _cancel(ray, ref)
            raise
        except ray_error as exc:
            _reraise(translate, exc)
        finally:
            if watch is not None and task is not None:
                watch.leave(task)
        return _settle(out, args, kwargs, ctx_at)

    return attempt


def _actor_attempt(
    ray: Any,
    pool: _ActorPool,
    ctx_at: int | str | None,
    translate: Callable[..., BaseException],
    name: str,
) -> Callable[..., Any]:
    x = ray.exceptions
    ray_error, actor_error = x.RayError, x.RayActorError

    async def attempt(*args: Any, **kwargs: Any) -> Any:
        watch = _watch(ray)
        if watch is not None and watch.lost:
            await watch.check(name)
        handle, slot = pool.acquire()
        task = asyncio.current_task()
        try:
            try:
                ref = handle.call.remote(args, kwargs)
            except (TypeError, pickle.PicklingError) as exc:
                if not _serialisation_failure(exc):
                    raise
                raise _unserialisable(name, "input", exc)  # noqa: B904 (chained to pickle's error)
            if watch is not None and task is not None:
                watch.enter(task)
            try:
                await _others_submit_first()
                out = await ref
            except asyncio.CancelledError:
                if watch is not None and watch.ended_by_us(task) and task.uncancel() == 0:
                    raise watch.error(name) from None
                _cancel(ray, ref)
                raise
            except ray_error as exc:
                if isinstance(exc, actor_error):
                    pool.lost(slot, handle)
                _reraise(translate, exc)
        finally:
            if watch is not None and task is not None:
                watch.leave(task)
            pool.release(slot)
        return _settle(out, args, kwargs, ctx_at)

    return attempt


__all__ = ["import_ray", "ray_attempt", "release_actors"]
