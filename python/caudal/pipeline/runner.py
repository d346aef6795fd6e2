"""One execution of a pipeline: the ready set, the steps in flight, the
checkpoints, the usage limits.

The graph is scheduled natively (``caudal._core.DagRun``): one native call
per finished step returns the steps it made ready. Steps run through
``executor.execute`` (the runner is given the executor; it never makes one),
each ready step as soon as its dependencies are done. When a step completes,
its output and the context keys it changed go to the store, and its
dependents start only once the store says the write is durable. A lone
checkpoint (this worker is the only one running and nothing else is ready,
as in a chain: no other checkpoint could share its transaction) is offered
to the store's ``save_step_now`` first, which a store may commit on the
spot instead of handing it to another thread.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from caudal import _core
from caudal.errors import CheckpointError, UsageLimitExceededError
from caudal.pipeline.context import RunContext
from caudal.pipeline.records import (
    _PLAIN,
    PipelineRun,
    RunScope,
    StepRecord,
    Usage,
    UsageLimits,
    WithUsage,
    _current_run,
    _usage_of,
)
from caudal.pipeline.stores import CheckpointStore, StepCheckpoint, StoredRun

if TYPE_CHECKING:  # annotations only: the graph imports the runner
    from caudal.pipeline.graph import Pipeline, _Node

_YIELD_EVERY = 256  # a worker yields to the loop at least this often
# A checkpoint committed on the spot holds the loop for a commit (~20 µs at
# synchronous=NORMAL): it counts as this many steps towards _YIELD_EVERY,
# so a chain of such steps yields every 16 of them (~0.3 ms).
_INLINE_CHECKPOINT_STEPS = 16


class Compiled:
    """A pipeline's graph in the form the runner wants: ids, names, steps
    and dependency id tuples, all indexed by the native Dag's ids."""

    __slots__ = ("dag", "deps", "ids", "names", "optional", "sinks", "steps")

    def __init__(self, nodes: list[_Node]) -> None:
        self.dag = _core.Dag([(n.name, list(n.deps)) for n in nodes])
        self.names = [n.name for n in nodes]
        self.ids = {n: i for i, n in enumerate(self.names)}
        self.steps = [n.step for n in nodes]
        self.optional = [n.optional for n in nodes]
        self.deps = [tuple(self.dag.deps(i)) for i in range(len(nodes))]
        self.sinks = [self.names[i] for i in self.dag.sinks()]


class Runner:
    """One execution of a compiled pipeline (see Pipeline.run)."""

    def __init__(
        self,
        pipeline: Pipeline,
        c: Compiled,
        run_id: str,
        data: Any,
        executor: Any,
        store: CheckpointStore | None,
        limits: UsageLimits | None,
        context: Any,
        context_conflicts: Any = "error",
    ) -> None:
        self.c = c
        self.run_id = run_id
        self.data = data
        self.execute = executor.execute
        self.store = store
        save_now = getattr(store, "save_step_now", None)
        if save_now is not None and getattr(type(store), "save_step_now", None) is (
            CheckpointStore.save_step_now
        ):
            save_now = None  # the default, which always declines
        self.save_now = save_now
        self.limits = limits
        cfg = getattr(executor, "optimization_config", None)
        cow = bool(getattr(cfg, "enable_context_optimization", False))
        self.ctx = (
            RunContext(context, cow=cow, policy=context_conflicts) if context is not None else None
        )
        n = len(c.names)
        self.outputs: list[Any] = [None] * n
        # (base, view, seq) of each ready step's context, taken when it
        # became ready (see RunContext).
        self.snaps: list[Any] = [None] * n
        self.records = [
            StepRecord(name, "pending", c.optional[i]) for i, name in enumerate(c.names)
        ]
        self.run = PipelineRun(
            run_id, pipeline.name, dict(zip(c.names, self.records, strict=True)), c.sinks
        )
        self.usage = Usage()
        self.done_ids: list[int] = []
        self.seq = 0
        self.stopping = False
        self.failure: BaseException | None = None
        self.fatal: BaseException | None = None
        self.tasks: set[asyncio.Task] = set()
        self.ready: deque[int] = deque()
        self.active = 0

    # Resume -------------------------------------------------------------
    def restore(self, stored: StoredRun) -> None:
        c = self.c
        usage = Usage()
        crossed: UsageLimitExceededError | None = None
        for name, cp in stored.steps.items():  # in seq (completion) order
            if cp.status not in ("completed", "failed_optional"):
                continue
            i = c.ids.get(name)
            if i is None:
                raise CheckpointError(
                    f"run {self.run_id!r} has a checkpoint for step {name!r}, "
                    "which this pipeline does not define"
                )
            out, changes = (
                self.store.decode_payload(self.run_id, "step", cp.payload, name)
                if cp.payload
                else (None, None)
            )
            rec = self.records[i]
            rec.status = "completed" if cp.status == "completed" else "failed"
            rec.output, rec.restored = out, True
            rec.started_at, rec.finished_at, rec.latency_s = (
                cp.started_at,
                cp.finished_at,
                cp.latency_s,
            )
            rec.attempts, rec.cache_hit, rec.error = cp.attempts, cp.cache_hit, cp.error
            rec.tokens, rec.cost_usd = cp.tokens, cp.cost_usd
            self.outputs[i] = out
            self.done_ids.append(i)
            if changes and self.ctx is not None:
                self.ctx.merge(name, changes, None)
            usage = usage + Usage(cp.tokens, cp.cost_usd)
            if crossed is None and self.limits is not None:
                crossed = self.limits.check(usage, name)
            self.seq = max(self.seq, cp.seq + 1)
        self.usage = usage
        self.restored_limit = crossed

    # Scheduling ---------------------------------------------------------
    async def go(
        self,
        resources: Any,
        max_concurrency: int | None,
        fail_fast: bool,
        on_step: Callable[[StepRecord], None] | None,
    ) -> PipelineRun:
        try:
            dag_run = _core.DagRun(self.c.dag, self.done_ids)
        except CheckpointError as exc:
            raise CheckpointError(f"run {self.run_id!r}: {exc}") from None
        self.dag_run = dag_run
        self.resources = resources
        self.fail_fast = fail_fast
        self.on_step = on_step
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.limit = max_concurrency or sys.maxsize
        crossed = getattr(self, "restored_limit", None)
        if crossed is not None:
            self.fatal = crossed
        else:
            first = dag_run.ready()
            if self.ctx is not None:
                for j in first:
                    self.snaps[j] = self.ctx.begin()
            self.ready.extend(first)
        self.loop = asyncio.get_running_loop()
        self.finished = self.loop.create_future()
        self.kick_pending = False
        token = _current_run.set(RunScope(self.run_id))
        try:
            # One worker now; the kick starts the others at the next turn
            # (after the first worker, which may drain them all if its
            # steps never suspend). The context var is captured by both.
            if self.ready and not self.stopping:
                self.active += 1
                t = asyncio.create_task(self._worker(self.ready.popleft()))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
                if self.ready:
                    self._kick()
        finally:
            _current_run.reset(token)
        if self.active == 0 and not self.finished.done():
            self.finished.set_result(None)
        try:
            await self.finished
        except asyncio.CancelledError:
            self.stopping = True
            for t in list(self.tasks):
                t.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await self._record_cancelled()
            await self._finish("cancelled", "cancelled by the caller")
            raise
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        return await self._conclude()

    def _kick(self) -> None:
        """Start more workers for the ready queue at the loop's next turn.

        A worker that finishes a step takes the next ready one itself. If
        that step completes without suspending (no I/O), nothing else could
        have run meanwhile anyway, and no task is created; if it suspends,
        this callback runs and starts workers for the remaining ready
        steps, so independent steps still overlap their waits. One task per
        step (what gather does) would cost ~2 µs of scheduling per step."""
        self.kick_pending = True
        self.loop.call_soon(self._kicked)

    def _kicked(self) -> None:
        self.kick_pending = False
        self._dispatch()

    def _dispatch(self) -> None:
        ready = self.ready
        while ready and self.active < self.limit and not self.stopping:
            self.active += 1
            t = asyncio.create_task(self._worker(ready.popleft()))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    def _stop(self, exc: BaseException | None) -> None:
        """Stop the run: cancel every other worker, wake the main coroutine."""
        if exc is not None and self.fatal is None:
            self.fatal = exc
        if self.stopping:
            return
        self.stopping = True
        me = asyncio.current_task()
        for t in self.tasks:
            if t is not me:
                t.cancel()
        if not self.finished.done():
            self.finished.set_result(None)

    async def _worker(self, i: int) -> None:
        c = self.c
        steps, deps_of, names, outputs, records = (
            c.steps,
            c.deps,
            c.names,
            self.outputs,
            self.records,
        )
        execute, store, ctx, ready = self.execute, self.store, self.ctx, self.ready
        snaps, resources, limits, on_step = self.snaps, self.resources, self.limits, self.on_step
        mark_done, now = self.dag_run.mark_done, time.time
        rec = None
        streak = 0
        try:
            while True:
                deps = deps_of[i]
                if not deps:
                    data = self.data
                elif len(deps) == 1:
                    data = outputs[deps[0]]
                else:
                    data = {names[d]: outputs[d] for d in deps}
                rec = records[i]
                rec.status = "running"
                if ctx is not None:
                    base, view, since = snaps[i]
                    snaps[i] = None
                else:
                    view = None
                rec.started_at = t0 = now()
                res = await execute(steps[i], data, view, resources)
                rec.finished_at = t1 = now()
                rec.latency_s = t1 - t0
                rec.attempts = res.attempts
                rec.cache_hit = cache_hit = res.cache_hit
                ok = res.success
                if ok or rec.optional:
                    usage = None
                    if ok:
                        out = res.output
                        cls = out.__class__
                        if cls is WithUsage:
                            out, usage = out.output, out.usage
                        elif cls not in _PLAIN or res.token_counts or res.cost_usd:
                            out, usage = _usage_of(res, out)
                    else:
                        out = None
                        rec.status, rec.error, rec.exception = "failed", res.feedback, res.error
                    if usage is not None and not cache_hit:
                        rec.tokens, rec.cost_usd = usage.tokens, usage.cost_usd
                        self.usage = self.usage + usage
                    changes = None
                    if ctx is not None:
                        changes = ctx.changes(base, view)
                        ctx.merge(names[i], changes, since)
                    outputs[i] = rec.output = out
                    if store is not None:
                        pending = self._checkpoint(i, rec, out, changes, ok)
                        if pending is not None:
                            await pending
                        else:
                            streak += _INLINE_CHECKPOINT_STEPS
                    if ok:
                        rec.status = "completed"
                    if limits is not None and usage is not None and not cache_hit:
                        crossed = limits.check(self.usage, names[i])
                        if crossed is not None:
                            self._notify(rec)
                            self._stop(crossed)
                            return
                    newly = mark_done(i)
                    if on_step is not None:
                        on_step(rec)
                else:
                    rec.status, rec.error, rec.exception = "failed", res.feedback, res.error
                    if self.failure is None:
                        self.failure = res.error
                    if store is not None:
                        pending = self._checkpoint(i, rec, None, None, False)
                        if pending is not None:
                            await pending
                    skipped = self.dag_run.mark_failed(i)
                    self._notify(rec)
                    for s in skipped:
                        records[s].status = "skipped"
                        self._notify(records[s])
                    newly = ()
                    if self.fail_fast:
                        self._stop(None)
                        return
                rec = None
                if newly:
                    if ctx is not None:
                        # Siblings made ready together see the same context,
                        # whichever of them gets to run first.
                        for j in newly:
                            snaps[j] = ctx.begin()
                    ready.extend(newly)
                if not ready or self.stopping:
                    return
                i = ready.popleft()
                if ready and not self.kick_pending:
                    self._kick()
                streak += 1
                if streak >= _YIELD_EVERY:
                    # Steps that finish without awaiting anything would
                    # otherwise hold the loop for the whole run.
                    streak = 0
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            if rec is not None and rec.status == "running":
                rec.status = "cancelled"
            raise
        except BaseException as exc:
            if rec is not None and rec.status == "running":
                rec.status, rec.error, rec.exception = "failed", _describe(exc), exc
            self._stop(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.active -= 1
            if self.active == 0 and not self.finished.done():
                self.finished.set_result(None)

    def _checkpoint(
        self, i: int, rec: StepRecord, out: Any, changes: Any, ok: bool
    ) -> Awaitable[None] | None:
        """Store step ``i``'s checkpoint: None when it is already durable
        (committed on the spot), else what to await until it is."""
        status = "completed" if ok else ("failed_optional" if rec.optional else "failed")
        payload = None
        if status != "failed":
            payload = self.store.encode_payload(self.run_id, "step", (out, changes), rec.name)
        seq = self.seq
        self.seq = seq + 1
        cp = StepCheckpoint(
            rec.name,
            status,
            seq,
            payload,
            rec.started_at,
            rec.finished_at,
            rec.latency_s,
            rec.attempts,
            rec.cache_hit,
            rec.error,
            rec.tokens,
            rec.cost_usd,
        )
        save_now = self.save_now
        if (
            save_now is not None
            and self.active == 1
            and not self.ready
            and save_now(self.run_id, cp)
        ):
            return None
        return self.store.save_step(self.run_id, cp)

    def _notify(self, rec: StepRecord) -> None:
        if self.on_step is not None:
            self.on_step(rec)

    async def _record_cancelled(self) -> None:
        """The steps running when the run was cancelled, checkpointed as
        ``"cancelled"`` (no output: a resume runs them again), so that the
        store says what was in flight. A store that fails here does not hide
        the cancellation."""
        if self.store is None:
            return
        now = time.time()
        for rec in self.records:
            if rec.status != "cancelled" or rec.restored:
                continue
            if rec.finished_at is None:
                rec.finished_at = now
                if rec.started_at is not None:
                    rec.latency_s = now - rec.started_at
            seq = self.seq
            self.seq = seq + 1
            cp = StepCheckpoint(
                rec.name,
                "cancelled",
                seq,
                None,
                rec.started_at,
                rec.finished_at,
                rec.latency_s,
                rec.attempts,
                False,
                "cancelled while running",
            )
            try:
                await asyncio.shield(self.store.save_step(self.run_id, cp))
            except Exception:
                return

    async def _finish(self, status: str, error: str | None) -> None:
        self.run.status = status
        self.run.finished_at = time.time()
        if self.store is not None:
            await asyncio.shield(self.store.finish_run(self.run_id, status, error))

    async def _conclude(self) -> PipelineRun:
        run = self.run
        run.usage = self.usage
        run.context = self.ctx.result() if self.ctx is not None else None
        fatal = self.fatal
        if isinstance(fatal, UsageLimitExceededError):
            fatal.run = run
            run.error = fatal
            await self._finish("limit_exceeded", str(fatal))
            raise fatal
        if fatal is not None:
            run.error = fatal
            await self._finish("failed", _describe(fatal))
        elif self.failure is not None or any(
            r.status == "failed" and not r.optional for r in self.records
        ):
            run.error = self.failure
            failed = [r.name for r in self.records if r.status == "failed" and not r.optional]
            await self._finish("failed", f"step(s) failed: {', '.join(failed)}")
        else:
            await self._finish("completed", None)
        return run


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Compiled", "Runner"]
