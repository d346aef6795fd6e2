"""ExecutorCore: flujo's executor API on caudal's native engine.

``await executor.execute(step, data)`` makes one native call for a step
that finishes without suspending (and for a cache hit), one before and one
after an attempt that suspends; retries, timeouts, fallbacks, cancellation
and sync steps take the slower paths below only when they happen.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Iterable
from typing import Any

from caudal._backends import check_backend
from caudal._core import Engine, Next, OptimizationConfig, StepResult
from caudal._executor.batches import Batches
from caudal._executor.invalidations import Invalidations
from caudal._executor.readouts import Readouts
from caudal._executor.tuner import Tuner
from caudal.errors import CaudalError, ConfigurationError
from caudal.resilience import RetryStrategy
from caudal.worker_pool import WorkerPool, default_workers


class StepTimeoutError(CaudalError, TimeoutError):
    """An attempt ran longer than its step's ``timeout_s``."""


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


@types.coroutine
def _go_on(coro: Any, yielded: Any) -> Any:
    """The rest of an attempt that the engine's ``_start`` ran until it
    suspended: hands what the coroutine yielded (the future it waits for) to
    the task, then goes on with the coroutine exactly as ``await`` would
    have (what the task sends or throws reaches the coroutine)."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:
            try:
                yielded = coro.throw(e)
            except StopIteration as stop:
                return stop.value
            continue
        if sent is None:  # what a task sends: the rest is a plain await
            return (yield from coro)
        try:
            yielded = coro.send(sent)
        except StopIteration as stop:
            return stop.value


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


class ExecutorCore(Batches, Invalidations, Readouts):
    """Runs steps with the optimizations an :class:`OptimizationConfig` enables.

    Safe to share between many concurrent tasks, and between event loops in
    several threads.
    """

    __slots__ = (
        "__weakref__",  # the automatic-optimization hook holds the executor weakly
        "_backend",
        "_closing",
        "_engine",
        "_fail",
        "_l2",
        "_l2_versioned",  # the tier's get_versioned (RedisCacheTier), or None
        "_l2_writes",
        "_own_pool",
        "_pool",
        "_recorder",  # the LatencyRecorder of start_latency_recorder(), unset until then
        "_sleep",  # asyncio.sleep, or the manual clock's sleep
        "_spans",  # the SpanFlusher, once a span exporter was attached
        "_start",
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
        :class:`caudal.integrations.redis.RedisCacheTier`, or any object with its
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
        if retry_strategy is not None and not isinstance(retry_strategy, RetryStrategy):
            raise TypeError("retry_strategy must be a caudal.RetryStrategy")
        engine = Engine(
            _checked(optimization_config),
            native_clock,
            retry=retry_strategy,
            backend=backend or "local",
        )
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
        if worker_pool is not None and not isinstance(worker_pool, WorkerPool):
            raise TypeError("worker_pool must be a caudal.WorkerPool")
        self._pool = worker_pool
        self._own_pool = worker_pool is None
        self._backend = backend or "local"
        self._engine = engine
        # Automatic optimization (caudal._executor.tuner): the engine calls the hook
        # when an analysis is due; it schedules one on the running loop.
        self._tuner = Tuner()
        engine._set_analysis_hook(Tuner.hook(self))
        # Bound once: the hot path then costs one attribute load per call.
        _, self._succeed, self._fail, self._start = engine._fast_calls(_go_on)
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
        # One native call runs the first attempt as far as it goes without
        # suspending: a step that finishes at once (or a cache hit) comes
        # back as its result, with nothing awaited here.
        t = self._start(step, data, context, resources)
        if t.__class__ is StepResult:
            return t
        rec, aw, next_ = t
        while True:
            if next_ is _AWAIT:
                try:
                    out = await aw
                except Exception as e:
                    exc = e  # reported below, outside the handler
                except BaseException:
                    self._engine._cancel(rec)
                    raise
                else:
                    return self._succeed(rec, out)
            elif next_ is _RAISED:  # the attempt raised (or was refused)
                exc = aw
            elif next_ is not _WAIT_FOR_PERMIT:
                return await self._run(rec, aw, next_, data, context, resources, step)
            else:
                # Over a concurrency limit: wait here, in this frame (a
                # waiting execution holds no more than this coroutine and
                # its future).
                try:
                    await aw
                except BaseException:
                    self._engine._cancel_wait(rec, aw)
                    raise
                rec, aw, next_ = self._engine._begin_permitted(rec, data, context, resources)
                continue
            # A failed attempt. The core's verdict: the next attempt,
            # started at once (a retry without a wait stays in this frame),
            # the final result, or a wait or a fallback first.
            aw = None
            try:
                t = self._fail(rec, exc, False, data, context, resources)
            except BaseException:
                self._engine._cancel(rec)
                raise
            if t.__class__ is tuple:
                exc = None  # no cycle through the traceback's frame
                rec, aw, next_ = t
                continue
            if t.__class__ is StepResult:
                exc = None
                return t
            return await self._resume(rec, exc, t, data, context, resources, step)

    async def _resume(
        self,
        rec: Any,
        exc: BaseException,
        verdict: Any,
        data: Any,
        context: Any,
        resources: Any,
        step: Any,
    ) -> StepResult:
        """After a failed attempt that neither ended the execution nor
        started the next attempt: wait ``verdict`` seconds (a float) and
        start it, or run ``verdict``, the step's fallback."""
        engine = self._engine
        try:
            if verdict.__class__ is float:
                await self._sleep(verdict)
                rec, aw, next_ = engine._restart(rec, data, context, resources, exc)
            else:
                fb = await self.execute(verdict, data, context, resources)
        except BaseException:
            engine._cancel(rec)
            raise
        if verdict.__class__ is float:
            return await self._run(rec, aw, next_, data, context, resources, step)
        return engine._fallback_done(rec, exc, fb)

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
                # The next attempt (started), a wait before it, the final
                # result, or the fallback step to run with the same input.
                verdict = self._fail(rec, exc, timed_out, data, context, resources)
                if verdict.__class__ is tuple:
                    rec, aw, next_ = verdict
                    continue
                if verdict.__class__ is float:
                    await self._sleep(verdict)
                    rec, aw, next_ = engine._restart(rec, data, context, resources, exc)
                    continue
                if verdict.__class__ is StepResult:
                    live = False
                    return verdict
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
                clock=self._engine._clock,  # the executor's (None: monotonic)
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


__all__ = ["ExecutorCore", "OptimizationConfig", "StepResult", "StepTimeoutError"]
