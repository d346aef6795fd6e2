"""ExecutorCore's batches: ``execute_many`` and ``map`` (a mixin of
:class:`caudal._executor.core.ExecutorCore`), their task starter and their
progress bar."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from caudal._core import StepResult
from caudal._steps import _name_of

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


class Batches:
    """``execute_many`` and ``map``: many executions of one step, as tasks
    on the running loop, bounded by the engine's limits."""

    __slots__ = ()

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
