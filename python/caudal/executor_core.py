"""ExecutorCore: flujo's executor API on caudal's native engine.

``await executor.execute(step, data)`` makes one native call before each
attempt and one after it; retries, timeouts, fallbacks, cancellation and
sync steps take the slower paths below only when they happen.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from caudal._backends import check_backend
from caudal._core import Engine, Next, OptimizationConfig, StepResult
from caudal._core import rss_bytes as _native_rss
from caudal._invalidation import InvalidationResult
from caudal._steps import ExecutorDefaults
from caudal._tuner import Tuner
from caudal.errors import CaudalError, ConfigurationError
from caudal.resilience import RetryStrategy
from caudal.worker_pool import WorkerPool, default_workers


class StepTimeoutError(CaudalError, TimeoutError):
    """An attempt ran longer than its step's ``timeout_s``."""


def _rss_mb() -> float:
    """Resident set size of this process (natively from /proc/self/statm)."""
    rss = _native_rss()
    if rss is not None:
        return rss / (1024 * 1024)
    import resource  # not Linux: the peak instead

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# What to do next with an execution: the core's verdict, returned with
# (rec, aw) by the engine's _begin, _restart, _begin_permitted and
# _begin_leader (cpp/caudal/executor/next.h says what rec and aw are for
# each). Bound once: `next_ is _AWAIT` costs what `next_ == 0` did.
_AWAIT = Next.AWAIT
_AWAIT_WITH_TIMEOUT = Next.AWAIT_WITH_TIMEOUT
_RUN_SYNC = Next.RUN_SYNC
_RAISED = Next.RAISED
_FALLBACK = Next.FALLBACK
_FOLLOW = Next.FOLLOW
_ASK_SHARED_TIER = Next.ASK_SHARED_TIER
_WAIT_FOR_PERMIT = Next.WAIT_FOR_PERMIT

_NO_LIMIT = 1 << 30
# Executions finished inline before execute_many gives the loop a turn.
_INLINE_BURST = 256


def _task_starter(loop: asyncio.AbstractEventLoop) -> Callable[[Any], asyncio.Task]:
    """Start a task eagerly where Python can (3.12+): a coroutine that
    finishes without suspending never goes through the loop's queue, yet
    runs as its own task (asyncio.timeout, current_task and contextvars
    behave as with create_task)."""
    factory = getattr(asyncio, "create_eager_task_factory", None)
    if factory is None:  # Python 3.11
        return loop.create_task
    eager = factory(asyncio.Task)
    return lambda coro: eager(loop, coro)


def _progress_bar(progress: bool | None, inputs: Any, step: Any) -> Any:
    """A tqdm bar for a batch: on when asked, off when refused; by default
    only where someone watches (a terminal, or a notebook)."""
    if progress is None:
        progress = _interactive()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - tqdm is a dev requirement
        raise ImportError("progress bars need tqdm: pip install 'caudal[progress]'") from e
    from caudal._steps import _name_of

    total = len(inputs) if hasattr(inputs, "__len__") else None
    extra = {}
    if _terminal_width() == 0:
        # A terminal that reports no size (0 x 0): tqdm would draw nothing.
        extra["ncols"], extra["nrows"] = 80, 24
    return tqdm(total=total, desc=_name_of(step), unit="step", **extra)


def _terminal_width() -> int | None:
    """stderr's terminal width; 0 for a terminal that reports no size; None
    when stderr is not a terminal."""
    try:
        if not sys.stderr.isatty():
            return None
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None if not hasattr(sys.stderr, "fileno") else 0


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        try:
            from IPython import get_ipython

            if get_ipython() is not None and hasattr(get_ipython(), "kernel"):
                return True
        except ImportError:  # pragma: no cover
            pass
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _pool_settings(cfg: OptimizationConfig) -> tuple:
    return (
        cfg.worker_pool_size,
        cfg.worker_pool_queue_size,
        cfg.worker_pool_task_timeout_seconds,
    )


def _checked(config: OptimizationConfig | None) -> OptimizationConfig:
    if config is None:
        return OptimizationConfig()
    if not isinstance(config, OptimizationConfig):
        raise TypeError(
            f"optimization_config must be a caudal.OptimizationConfig, got {type(config).__name__}"
        )
    problems = config.validate()
    if problems:
        raise ConfigurationError(problems)
    return config


class ExecutorCore:
    """Runs steps with the optimizations an :class:`OptimizationConfig` enables.

    Safe to share between many concurrent tasks, and between event loops in
    several threads.
    """

    __slots__ = (
        "__weakref__",  # the automatic-optimization hook holds the executor weakly
        "_backend",
        "_begin",
        "_closing",
        "_engine",
        "_failed",
        "_l2",
        "_l2_versioned",  # the tier's get_versioned (RedisCacheTier), or None
        "_l2_writes",
        "_own_pool",
        "_pool",
        "_recorder",  # the LatencyRecorder of start_latency_recorder(), unset until then
        "_sleep",  # asyncio.sleep, or the manual clock's sleep
        "_spans",  # the SpanFlusher, once a span exporter was attached
        "_succeed",
        "_tuner",
    )

    def __init__(
        self,
        optimization_config: OptimizationConfig | None = None,
        *,
        retry_strategy: RetryStrategy | None = None,
        cache_l2: Any = None,
        worker_pool: WorkerPool | None = None,
        backend: str | None = None,
        span_exporters: Iterable[Any] | None = None,
        clock: Any = None,
    ) -> None:
        """``retry_strategy`` is the default for steps that set neither
        ``retry`` nor ``max_retries`` (without it they get one attempt).
        ``cache_l2`` is a shared cache tier behind the in-process one (a
        :class:`caudal.cache_redis.RedisCacheTier`, or any object with its
        async ``get``/``set``/``invalidate_tag``/``invalidate_group``/``clear``,
        and ``invalidate_prefix`` for :meth:`invalidate_prefix`).
        ``worker_pool`` runs sync steps (default: a pool of this executor's
        own, made at the first sync step from the ``worker_pool_*`` config
        fields).
        ``backend`` is where the attempts of steps that do not choose run:
        ``"local"`` (the default) or ``"ray"`` (docs/scale-out.md).
        ``span_exporters`` receive a span per execution (caudal.telemetry;
        see :meth:`add_span_exporter`).
        ``clock`` is a :class:`caudal.testing.ManualClock` for tests: the
        engine then reads all of its time from it (cache TTLs, the breaker's
        recovery timeout, limit windows, latencies) and retry back-off and
        breaker waits sleep on it (``clock.sleep``), so that a test advances
        time instead of waiting. Step timeouts (``timeout_s``) stay on the
        event loop's clock. Default: the monotonic clock."""
        backend = check_backend(backend, "ExecutorCore")
        native_clock = None
        self._sleep = asyncio.sleep
        if clock is not None:
            from caudal.testing.clock import ManualClock

            if not isinstance(clock, ManualClock):
                raise TypeError(
                    f"clock must be a caudal.testing.ManualClock, got {type(clock).__name__}"
                )
            native_clock = clock._native
            self._sleep = clock.sleep
        engine = Engine(_checked(optimization_config), native_clock)
        self._l2 = cache_l2
        # A tier that versions its reads (RedisCacheTier) refuses, in Redis,
        # the write of a result that any process invalidated since the read.
        self._l2_versioned = getattr(cache_l2, "get_versioned", None)
        self._l2_writes: set[asyncio.Task] = set()
        self._closing: set[asyncio.Task] = set()  # retired worker pools closing
        if cache_l2 is not None:
            for method in ("get", "set", "invalidate_tag", "invalidate_group", "clear"):
                if not callable(getattr(cache_l2, method, None)):
                    raise TypeError(f"cache_l2 has no {method}() method")
            engine.set_l2(True)
            listen = getattr(cache_l2, "add_invalidation_listener", None)
            if listen is not None:  # other processes' invalidations reach our L1
                listen(self._on_l2_invalidation)
        if retry_strategy is not None and not isinstance(retry_strategy, RetryStrategy):
            raise TypeError("retry_strategy must be a caudal.RetryStrategy")
        if backend == "ray":
            # The engine hands this object to caudal._steps.analyse as is.
            engine.set_default_retry(ExecutorDefaults(retry_strategy, backend))
        elif retry_strategy is not None:
            engine.set_default_retry(retry_strategy)
        if worker_pool is not None and not isinstance(worker_pool, WorkerPool):
            raise TypeError("worker_pool must be a caudal.WorkerPool")
        self._pool = worker_pool
        self._own_pool = worker_pool is None
        self._backend = backend or "local"
        self._engine = engine
        # Automatic optimization (caudal._tuner): the engine calls the hook
        # when an analysis is due; it schedules one on the running loop.
        self._tuner = Tuner()
        engine._set_analysis_hook(Tuner.hook(self))
        # Bound once: the hot path then costs one attribute load per call.
        self._begin, self._succeed = engine._fast_calls()
        self._failed = engine._failed
        self._spans = None
        for exporter in span_exporters or ():
            self.add_span_exporter(exporter)

    # ------------------------------------------------------------------ run
    async def execute(
        self,
        step: Any,
        data: Any = None,
        context: Any = None,
        resources: Any = None,
    ) -> StepResult:
        """Run ``step`` on ``data``. A failure is a result, never an exception;
        ``asyncio.CancelledError`` always propagates."""
        t = self._begin(step, data, context, resources)
        if t.__class__ is StepResult:  # a cache hit
            return t
        rec, aw, next_ = t
        while True:
            if next_ is _AWAIT:
                try:
                    out = await aw
                except Exception as exc:
                    return await self._run(rec, exc, _RAISED, data, context, resources)
                except BaseException:
                    self._engine._cancel(rec)
                    raise
                return self._succeed(rec, out)
            if next_ is not _WAIT_FOR_PERMIT:
                return await self._run(rec, aw, next_, data, context, resources, step)
            # Over a concurrency limit: wait here, in this frame (a waiting
            # execution holds no more than this coroutine and its future).
            try:
                await aw
            except BaseException:
                self._engine._cancel_wait(rec, aw)
                raise
            rec, aw, next_ = self._engine._begin_permitted(rec, data, context, resources)

    async def _run(
        self,
        rec: Any,
        aw: Any,
        next_: Next,
        data: Any,
        context: Any,
        resources: Any,
        step: Any = None,
    ) -> StepResult:
        """The general path: timeouts, sync steps, retries, fallback, single
        flight, the shared tier and permit waits. ``next_`` (with ``rec`` and
        ``aw``) is what the engine said to do next (caudal._core.Next)."""
        if next_ is _FOLLOW:
            return await self._follow(rec, aw, step, data, context, resources)
        if next_ is _ASK_SHARED_TIER:
            return await self._through_l2(rec, aw, step, data, context, resources)
        if next_ is _WAIT_FOR_PERMIT:
            return await self._wait_slot(rec, aw, step, data, context, resources)
        engine = self._engine
        live = True
        try:
            while True:
                exc: BaseException | None = None
                timed_out = False
                if next_ is _FALLBACK:
                    fallback, exc = aw
                    fb = await self.execute(fallback, data, context, resources)
                    live = False
                    return engine._fallback_done(rec, exc, fb)
                if next_ is _RAISED:
                    exc = aw
                else:
                    try:
                        if next_ is _AWAIT:
                            out = await aw
                        elif next_ is _AWAIT_WITH_TIMEOUT:
                            out, timed_out = await self._with_timeout(
                                rec, aw, engine._timeout_s(rec)
                            )
                        else:  # _RUN_SYNC
                            out, timed_out = await self._run_sync(rec, data, context, resources)
                        if timed_out:
                            exc = StepTimeoutError(
                                f"attempt timed out after {engine._timeout_s(rec):g} s"
                            )
                    except Exception as e:
                        exc = e
                if exc is None:
                    live = False
                    return self._succeed(rec, out)
                verdict = self._failed(rec, exc, timed_out)
                if verdict.__class__ is float:
                    if verdict > 0:
                        await self._sleep(verdict)
                    rec, aw, next_ = engine._restart(rec, data, context, resources, exc)
                    continue
                if verdict.__class__ is StepResult:
                    live = False
                    return verdict
                # A fallback step to run with the same input.
                fb = await self.execute(verdict, data, context, resources)
                live = False
                return engine._fallback_done(rec, exc, fb)
        except BaseException:
            if live:
                engine._cancel(rec)
            raise

    async def _through_l2(
        self, adm: Any, _: None, step: Any, data: Any, context: Any, resources: Any
    ) -> StepResult:
        """L1 missed and this execution leads its key: ask the shared tier,
        then run the step if it missed too, and write the result back when
        the core says it may be stored."""
        engine = self._engine
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        key = adm.key
        # The invalidation epoch before asking the tier: a value read, or a
        # result computed, while an invalidation covering the step ran is
        # kept out of both tiers (docs/cache.md, "Invalidation").
        epoch = engine._cache_epoch()
        versioned = self._l2_versioned
        since = None
        try:
            if versioned is not None:
                found, value, since = await versioned(key)
            else:
                found, value = await self._l2.get(key)
        except BaseException:
            engine._abandon_flight(adm)
            raise
        if found:
            return engine._l2_fill(adm, value, loop.time() - t0, epoch)
        rec, aw, next_ = engine._begin_leader(adm, data, context, resources)
        result = await self._run(rec, aw, next_, data, context, resources, step)
        # Checked when the write starts; an invalidation after that waits
        # for the write before it reaches the tier (_l2_settled).
        if engine._cache_storable(step, result, epoch):
            ttl_s, tags, group = engine._cache_policy(step)
            write = (
                self._l2.set(key, result.output, ttl_s, tags, group)
                if since is None
                else self._l2.set(key, result.output, ttl_s, tags, group, since=since)
            )
            task = loop.create_task(write)
            self._l2_writes.add(task)
            task.add_done_callback(self._l2_writes.discard)
        return result

    async def _slot(self, adm: Any, fut: Any) -> None:
        """Wait for a concurrency permit (FIFO); a cancelled waiter leaves the
        queue, or passes on a permit it was handed, and never leaks one."""
        try:
            await fut
        except BaseException:
            self._engine._cancel_wait(adm, fut)
            raise

    async def _wait_slot(
        self, adm: Any, fut: Any, step: Any, data: Any, context: Any, resources: Any
    ) -> StepResult:
        """Wait for the step's key permit, then for a global slot (told to
        wait again when the second must be waited for too)."""
        begin_permitted = self._engine._begin_permitted
        while True:
            await self._slot(adm, fut)
            rec, aw, next_ = begin_permitted(adm, data, context, resources)
            if next_ is not _WAIT_FOR_PERMIT:
                return await self._run(rec, aw, next_, data, context, resources, step)
            adm, fut = rec, aw

    async def _follow(
        self, adm: Any, fut: Any, step: Any, data: Any, context: Any, resources: Any
    ) -> StepResult:
        """Single flight: share the leader's result instead of running again."""
        try:
            result = await fut
        except BaseException:
            self._engine._leave_flight(adm, fut)
            raise
        if result is None:  # the leader was cancelled: run it ourselves
            return await self.execute(step, data, context, resources)
        return result

    @staticmethod
    async def _with_timeout(rec: int, aw: Any, timeout_s: float) -> tuple[Any, bool]:
        cm = asyncio.timeout(timeout_s)
        try:
            async with cm:
                return await aw, False
        except TimeoutError:
            if cm.expired():
                return None, True
            raise

    def _sync_pool(self) -> WorkerPool:
        """The pool sync steps run on (made on first use)."""
        pool = self._pool
        if pool is None:
            cfg = self._engine.config
            pool = self._pool = WorkerPool(
                workers=cfg.worker_pool_size or default_workers(),
                queue_size=cfg.worker_pool_queue_size,
                task_timeout=cfg.worker_pool_task_timeout_seconds or None,
            )
        return pool

    async def _run_sync(
        self, rec: int, data: Any, context: Any, resources: Any
    ) -> tuple[Any, bool]:
        pool = self._pool or self._sync_pool()
        # What the pool thread calls is fixed here, on the loop thread, while
        # the handle is live: the step's callable and its arguments. The
        # thread never looks anything up through the handle, which may be
        # stale (and its record another execution's) by the time it runs.
        fn, args, kwargs, timeout_s = self._engine._sync_call(rec, data, context, resources)

        async def body() -> Any:
            # Cancelling this (timeout, cancellation) cancels the pool's
            # future: queued work is withdrawn, running work's result dropped.
            out = await pool._run_call(fn, args, kwargs)
            if inspect.isawaitable(out):
                out = await out  # a plain function (a lambda, say) that returned an awaitable
            return out

        if timeout_s > 0:
            # A thread cannot be interrupted: on timeout the attempt stops
            # waiting for it and the thread finishes on its own.
            return await self._with_timeout(rec, body(), timeout_s)
        return await body(), False

    # ------------------------------------------------------------- batches
    async def execute_many(
        self,
        step: Any,
        inputs: Iterable[Any],
        context: Any = None,
        resources: Any = None,
        *,
        max_concurrency: int | None = None,
        progress: bool | None = None,
    ) -> list[StepResult]:
        """Run ``step`` on every item of ``inputs``; the results, in input
        order (a failure is a result, as with ``execute``).

        Items are started as earlier ones finish, so no more executions are
        in flight than the step's limit allows (its key's adaptive or fixed
        limit, ``max_concurrent_executions``, and ``max_concurrency`` if
        given) — a batch of 100,000 never holds 100,000 coroutines.
        Executions that finish without suspending (cache hits, trivial
        steps) finish inline, without a task. ``progress``: a tqdm progress
        bar (None: only in a terminal or a notebook). Cancelling it cancels
        the executions in flight and waits until they have let go of their
        permits."""
        out: list[Any] = []
        async for batch in self._fan_out(
            step, inputs, context, resources, max_concurrency, progress
        ):
            for i, r in batch:
                if i >= len(out):
                    out.extend([None] * (i + 1 - len(out)))
                out[i] = r
        return out

    async def map(
        self,
        step: Any,
        inputs: Iterable[Any],
        context: Any = None,
        resources: Any = None,
        *,
        max_concurrency: int | None = None,
        progress: bool | None = None,
    ) -> AsyncIterator[StepResult]:
        """``execute_many`` as a stream: yields each result in input order as
        soon as it and every earlier one are done."""
        ready: dict[int, Any] = {}
        nxt = 0
        async for batch in self._fan_out(
            step, inputs, context, resources, max_concurrency, progress
        ):
            for i, r in batch:
                ready[i] = r
            while nxt in ready:
                yield ready.pop(nxt)
                nxt += 1

    async def _fan_out(
        self,
        step: Any,
        inputs: Iterable[Any],
        context: Any,
        resources: Any,
        max_concurrency: int | None,
        progress: bool | None,
    ) -> AsyncIterator[list[tuple[int, StepResult]]]:
        """Runs the batch; yields lists of (index, result) as they finish."""
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ValueError(
                f"max_concurrency must be an int >= 1 or None, got {max_concurrency!r}"
            )
        loop = asyncio.get_running_loop()
        start = _task_starter(loop)
        window = self._engine.window
        execute = self.execute
        cap = max_concurrency or _NO_LIMIT
        bar = _progress_bar(progress, inputs, step)
        it = iter(inputs)
        pending: dict[asyncio.Task, int] = {}
        finished: list[asyncio.Task] = []
        wake: list[asyncio.Future | None] = [None]

        def on_done(task: asyncio.Task) -> None:
            finished.append(task)
            w = wake[0]
            if w is not None and not w.done():
                w.set_result(None)

        index = 0
        exhausted = False
        try:
            while True:
                w = window(step)
                limit = cap if w is None else min(cap, max(1, w))
                batch: list[tuple[int, Any]] = []
                while not exhausted and len(pending) < limit and len(batch) < _INLINE_BURST:
                    try:
                        x = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    task = start(execute(step, x, context, resources))
                    if task.done():
                        batch.append((index, task.result()))
                    else:
                        pending[task] = index
                        task.add_done_callback(on_done)
                    index += 1
                if finished:
                    batch.extend((pending.pop(t), t.result()) for t in finished)
                    finished.clear()
                if batch:
                    if bar is not None:
                        bar.update(len(batch))
                    yield batch
                if not pending:
                    if exhausted:
                        return
                    if len(batch) >= _INLINE_BURST:
                        await asyncio.sleep(0)  # let the loop breathe
                    continue
                if not finished and (exhausted or len(pending) >= limit):
                    wake[0] = loop.create_future()
                    try:
                        await wake[0]
                    finally:
                        wake[0] = None
                elif len(batch) >= _INLINE_BURST:
                    await asyncio.sleep(0)
        finally:
            if pending:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            if bar is not None:
                bar.close()

    async def execute_with_monitoring(
        self,
        step: Any,
        data: Any = None,
        context: Any = None,
        resources: Any = None,
    ) -> tuple[StepResult, dict[str, Any]]:
        """``execute`` plus a metrics dict: execution_time_ms, memory_usage_mb,
        memory_delta_mb, attempts, cache_hit, success, step_name."""
        before = _rss_mb()
        result = await self.execute(step, data, context, resources)
        after = _rss_mb()
        return result, {
            "step_name": result.name,
            "execution_time_ms": result.latency_s * 1000.0,
            "memory_usage_mb": after,
            "memory_delta_mb": after - before,
            "attempts": result.attempts,
            "cache_hit": result.cache_hit,
            "success": result.success,
        }

    # --------------------------------------------------------------- config
    @property
    def backend(self) -> str:
        """Where attempts of steps that do not choose a backend run."""
        return self._backend

    @property
    def optimization_config(self) -> OptimizationConfig:
        """A copy of the config in force (change it with apply_optimization_config)."""
        return self._engine.config

    async def apply_optimization_config(self, config: OptimizationConfig) -> None:
        """Validate and swap the config atomically. Executions in flight finish
        under the config they started with. On error nothing changes."""
        self._apply(_checked(config))

    def _apply(self, config: OptimizationConfig) -> None:
        old = self._engine.config
        self._engine.apply_config(config)
        pool = self._pool
        if self._own_pool and pool is not None and _pool_settings(old) != _pool_settings(config):
            # The next sync step makes a pool with the new settings; this one
            # finishes what it has in the background.
            self._pool = None
            task = asyncio.get_running_loop().create_task(pool.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def export_config(self, format: str = "json") -> str:
        if format != "json":
            raise ValueError(f"export_config: unsupported format {format!r} (supported: 'json')")
        return self._engine.config.to_json()

    async def import_config(self, text: str, format: str = "json") -> None:
        """Parse, validate and apply a config; errors name each JSON path.
        On error the current config stays in force."""
        if format != "json":
            raise ValueError(f"import_config: unsupported format {format!r} (supported: 'json')")
        if not isinstance(text, str | bytes | bytearray):
            raise TypeError(f"import_config: text must be str or bytes, got {type(text).__name__}")
        cfg = OptimizationConfig.from_json(text)  # str or UTF-8 bytes
        self._apply(cfg)

    # Invalidations. Each first drops the in-process entries and raises the
    # core's invalidation epoch (executions in flight then store nothing in
    # either tier), waits for shared-tier writes that were already under way
    # on this loop, then invalidates the shared tier. The result is an
    # ``int`` (in-process entries removed, as always) that also says what
    # the shared tier did (caudal._invalidation.InvalidationResult).
    async def clear_cache(self) -> InvalidationResult:
        """Drop every cached result, in both tiers."""
        n = self._engine.cache_stats()["size"]
        self._engine.clear_cache()
        return await self._invalidate_l2(n, "clear", None)

    async def invalidate_by_tag(self, tag: str) -> InvalidationResult:
        """Drop the cached results of every step carrying ``tag``, in both
        tiers. Returns how many in-process entries went (an ``int`` with
        ``.l2`` and ``.queued``: docs/cache.md, "Invalidation")."""
        n = self._engine.invalidate_tag(tag)
        return await self._invalidate_l2(n, "invalidate_tag", tag)

    async def invalidate_prefix(self, prefix: str) -> InvalidationResult:
        """Drop every cached result of every step whose name starts with
        ``prefix``, in both tiers (same result as :meth:`invalidate_by_tag`).
        An empty prefix is refused (ValueError): :meth:`clear_cache` drops
        everything."""
        if not isinstance(prefix, str):
            raise TypeError(f"invalidate_prefix: prefix must be a str, got {type(prefix).__name__}")
        if not prefix:
            raise ValueError(
                "invalidate_prefix: the prefix is empty; clear_cache() drops every cached result"
            )
        if self._l2 is not None and not callable(getattr(self._l2, "invalidate_prefix", None)):
            raise TypeError("cache_l2 has no invalidate_prefix() method")
        n = self._engine.invalidate_prefix(prefix)
        return await self._invalidate_l2(n, "invalidate_prefix", prefix)

    async def invalidate_step(self, step_name: str) -> InvalidationResult:
        """Drop every cached result of the step named exactly ``step_name``,
        in both tiers (same result as :meth:`invalidate_by_tag`)."""
        n = self._engine.invalidate_step(step_name)
        return await self._invalidate_l2(n, "invalidate_group", step_name)

    async def _invalidate_l2(self, n: int, method: str, arg: Any) -> InvalidationResult:
        if self._l2 is None:
            return InvalidationResult(n)
        await self._l2_settled()
        call = getattr(self._l2, method)
        reached = await (call() if arg is None else call(arg))
        return InvalidationResult.of(n, reached)

    def _on_l2_invalidation(self, kind: str, name: str | None) -> None:
        """An invalidation heard through the shared tier (another process's,
        or another executor's sharing the tier): applied to this L1 (entries
        and epochs). "resync": messages may have been missed: drop all."""
        engine = self._engine
        if kind == "tag":
            engine.invalidate_tag(name)
        elif kind == "group":
            engine.invalidate_step(name)
        elif kind == "prefix":
            engine.invalidate_prefix(name)
        else:
            engine.clear_cache()

    async def _l2_settled(self) -> None:
        """Wait for this loop's pending shared-tier writes (each bounded by
        the tier's timeout): a write checked before an invalidation lands
        before it, so the invalidation removes it."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._l2_writes if t.get_loop() is loop]
        if mine:
            await asyncio.wait(mine)

    async def flush(self, timeout: float | None = 10.0) -> int:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """Wait for pending writes to the shared cache tier (each is bounded
        by the tier's own timeout); returns how many were still pending when
        ``timeout`` ran out."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._l2_writes:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            await asyncio.wait(list(self._l2_writes), timeout=left)
        return len(self._l2_writes)

    async def aclose(self) -> None:
        """Flush pending shared-tier writes, close the tier's connections and
        this executor's own worker pool (its queued sync steps finish first)."""
        await self.flush()
        close = getattr(self._l2, "close", None)
        if close is not None:
            await close()
        if self._own_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._spans is not None:
            # The last spans go out; exporters stay attached (and open):
            # they belong to the caller. Executions after aclose() are
            # exported at the next flush_telemetry() or at exit.
            await asyncio.to_thread(self._spans.flush)

    async def __aenter__(self) -> ExecutorCore:
        """``async with ExecutorCore(...) as executor:`` runs :meth:`aclose`
        when the block ends, however it ends."""
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        """Awaits :meth:`aclose`; never suppresses the block's exception (or
        its cancellation). When the block raised and aclose() fails too, the
        block's exception propagates with a note naming aclose()'s."""
        if exc is None:
            await self.aclose()
            return False
        try:
            await self.aclose()
        except Exception as close_exc:
            exc.add_note(f"ExecutorCore.aclose() also failed: {close_exc!r}")
        return False

    # ------------------------------------------------------------- tracing
    def add_span_exporter(self, exporter: Any) -> None:
        """Send a span of every execution to ``exporter`` (an object with
        ``export(spans)``: :class:`caudal.telemetry.OpenTelemetryExporter`,
        :class:`caudal.telemetry.JsonLinesExporter`, or your own).

        Spans are recorded natively while at least one exporter is attached
        (and ``enable_optimized_telemetry`` is on), sampled by
        ``telemetry_sampling_rate`` (failures and slow executions always
        kept), and exported from a background thread in batches of
        ``telemetry_batch_size`` every ``telemetry_flush_interval_seconds``
        or when a thread's buffer is half full."""
        from caudal.telemetry import SpanFlusher

        if self._spans is None:
            flusher = SpanFlusher(self._engine)
            self._spans = flusher
            # An executor dropped without aclose() still stops its thread.
            weakref.finalize(self, flusher.stop)
        self._spans.add(exporter)

    def remove_span_exporter(self, exporter: Any) -> bool:
        """Detach ``exporter`` (after exporting what is buffered); False if
        it was not attached. With none left, recording stops."""
        if self._spans is None:
            return False
        return self._spans.remove(exporter)

    @property
    def span_exporters(self) -> list[Any]:
        return [] if self._spans is None else self._spans.exporters

    def flush_telemetry(self) -> int:
        """Export every buffered span now (and flush the exporters); returns
        how many spans went out. Blocks while exporters export: from async
        code, ``await asyncio.to_thread(executor.flush_telemetry)``."""
        return 0 if self._spans is None else self._spans.flush()

    # --------------------------------------------------------------- events
    def events(self, types: Any = None, buffer: int = 1000) -> Any:
        """An async iterator over this executor's events (caudal.events;
        docs/events.md): ``types`` is None (all) or event type names;
        ``buffer`` bounds what a slow reader keeps (the rest is dropped and
        counted in the iterator's ``dropped``)."""
        from caudal.events import EventStream

        return EventStream(self._engine, types, buffer)

    # ---------------------------------------------------------------- stats
    def _monitor_view(self) -> Any:
        """The internal read interface of the monitor modules (caudal._stats,
        caudal._tuner, caudal.recorder, caudal.prometheus, caudal.plots):
        a :class:`caudal._stats.MonitorView` of this executor now. They read
        nothing else of it (tests_py/test_monitor_boundary.py)."""
        from caudal._stats import MonitorView

        return MonitorView(
            engine=self._engine,
            tuner=self._tuner,
            l2=self._l2,
            worker_pool=self._pool,
            own_pool=self._own_pool,
            spans=self._spans,
            recorder=getattr(self, "_recorder", None),
            apply=self._apply,
        )

    def get_optimization_stats(self) -> dict[str, dict[str, Any]]:
        """Measured statistics by section (see docs/executor.md for each key)."""
        from caudal._display import OptimizationStats
        from caudal._stats import optimization_stats

        # A dict of dicts that shows as tables in a notebook or at a prompt.
        return OptimizationStats(optimization_stats(self._monitor_view()))

    def get_performance_recommendations(self) -> list[dict[str, Any]]:
        """Recommendations derived from the measured stats, highest priority first."""
        from caudal._display import Recommendations
        from caudal._stats import recommendations

        return Recommendations(recommendations(self._monitor_view()))

    async def health(self) -> dict[str, Any]:
        """One report of every component, for a health endpoint or a probe.

        ``ok`` is False when a part is down or refusing work: the shared
        cache tier does not answer a PING (within its ``op_timeout_s``), a
        circuit breaker is open, or memory pressure is critical. Each section
        says what it saw: ``cache`` (L1 entries and the L2 tier's PING),
        ``breakers`` (those not closed), ``concurrency`` (keys with callers
        waiting), ``worker_pool`` (queue depth and rejections), ``events``
        (subscribers and drops), ``memory`` (RSS and pressure level)."""
        stats = self.get_optimization_stats()
        problems: list[str] = []
        l2 = None
        if self._l2 is not None:
            probe = getattr(self._l2, "health", None)
            l2 = await probe() if probe is not None else {"ok": None}
            if l2.get("ok") is False:
                problems.append(f"cache L2 unreachable: {l2.get('error')}")
        breakers = {
            name: b["state"]
            for name, b in stats["circuit_breaker"]["breakers"].items()
            if b["state"] != "closed"
        }
        problems += [f"circuit breaker {n!r} is open" for n, st in breakers.items() if st == "open"]
        waiting = {
            key: {"limit": k["limit"], "in_flight": k["in_flight"], "waiting": k["waiting"]}
            for key, k in stats["concurrency"]["keys"].items()
            if k["waiting"]
        }
        pool = stats["concurrency"]["worker_pool"]
        level = stats["memory"]["memory_pressure_level"]
        if level == "critical":
            problems.append("memory pressure is critical")
        events = stats.get("events") or {}
        # Degraded but still serving: reported, not counted against ``ok``
        # (a trace collector's outage is no reason to restart a service).
        warnings: list[str] = []
        tel = stats["telemetry"]
        if tel["last_flush_ok"] is False:
            warnings.append(f"span export failing: {tel['last_export_error']}")
        if tel["spans_dropped"]:
            warnings.append(f"{tel['spans_dropped']} spans dropped (full buffers)")
        return {
            "ok": not problems,
            "problems": problems,
            "warnings": warnings,
            "cache": {"l1_entries": stats["cache"]["size"], "l2": l2},
            "breakers": breakers,
            "concurrency": {
                "mode": stats["concurrency"]["mode"],
                "in_flight": stats["concurrency"]["in_flight"],
                "keys_waiting": waiting,
            },
            "worker_pool": None
            if pool is None
            else {
                k: pool.get(k) for k in ("workers", "active", "queued", "queue_size", "rejected")
            },
            "events": {k: events.get(k) for k in ("subscribers", "dropped")},
            "memory": {"usage_mb": stats["memory"]["usage_mb"], "pressure_level": level},
            "telemetry": {
                k: tel[k]
                for k in (
                    "recording",
                    "exporters",
                    "last_flush_seconds_ago",
                    "last_flush_ok",
                    "export_errors",
                    "spans_dropped",
                )
            },
        }

    def latency_buckets(self, step: Any = None) -> list[tuple[int, int, int]]:
        """The native latency histogram of ``step`` (a name or a Step; None:
        all steps): its non-empty buckets as ``(lower_ns, upper_ns, count)``."""
        name = getattr(step, "name", step)
        return self._engine.latency_buckets(name)

    async def run_optimization_analysis(self, dry_run: bool = False) -> list[dict[str, Any]]:
        """Run one automatic-optimization analysis now: the automatic
        recommendations, through the hysteresis rules (cooldowns, reversals,
        bounds; docs/monitoring.md), applied with the same validated swap as
        apply_optimization_config. What enable_automatic_optimization does
        every optimization_analysis_interval_seconds, here on demand (it
        runs whether or not that is on). Returns the changes made (with
        ``dry_run``: the changes it would make, nothing applied or counted),
        each ``{analysis, field, old, new, reversal, reason, time}``."""
        return self._tuner.analyse(self._monitor_view(), dry_run=dry_run)

    def concurrency_history(self) -> list[dict[str, Any]]:
        """Every recorded change of a concurrency limit, oldest first (the
        last 512 per key): key, time_s (monotonic clock), age_s, from, to
        (None: unlimited), in_flight and waiting when it changed."""
        return self._engine.limit_history()

    def reset_stats(self) -> None:
        self._engine.reset_stats()

    # ------------------------------------------------------ notebook, plots
    def start_latency_recorder(self, interval_s: float = 1.0) -> Any:
        """Sample latency percentiles and concurrency every ``interval_s`` on
        the running loop (a :class:`caudal.recorder.LatencyRecorder`, kept
        for ``plot_latency`` / ``plot_concurrency``; ``.stop()`` ends it).
        A recorder already running is stopped first."""
        from caudal.recorder import LatencyRecorder

        old = getattr(self, "_recorder", None)
        if old is not None:
            old.stop()
        self._recorder = LatencyRecorder(self, interval_s).start()
        return self._recorder

    def plot_latency(self, step: Any = None, **kwargs: Any) -> Any:
        """Latency histogram of ``step`` (a Step, a callable or a name; None:
        all steps) with p50/p95/p99, and percentiles over time if a latency
        recorder ran. A matplotlib Figure (``pip install 'caudal[plot]'``)."""
        from caudal._steps import _name_of
        from caudal.plots import plot_latency

        name = step if step is None or isinstance(step, str) else _name_of(step)
        return plot_latency(self, name, **kwargs)

    def plot_concurrency(self, key: str | None = None, **kwargs: Any) -> Any:
        """Concurrency limits and executions in flight over time (a
        matplotlib Figure)."""
        from caudal.plots import plot_concurrency

        return plot_concurrency(self, key, **kwargs)


__all__ = ["ExecutorCore", "OptimizationConfig", "StepResult", "StepTimeoutError"]
