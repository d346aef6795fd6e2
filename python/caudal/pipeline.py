"""Pipelines: steps wired into a DAG, run concurrently, checkpointed, resumable.

    fetch >> parse >> Pipeline.parallel(score, tag) >> report
    Pipeline(steps=[a, b, c], depends_on={"c": ["a", "b"]})

The graph is checked and scheduled natively (``caudal._core.Dag`` /
``DagRun``, cpp/caudal/pipeline/dag.h): one native call per finished step
returns the steps it made ready. Steps run through ``executor.execute`` (so
retries, timeouts, fallbacks, breakers and caching all apply), each ready
step as soon as its dependencies are done.

Data flow: a step without dependencies gets the pipeline's input; with one
dependency, that dependency's output; with several, ``{dep_name: output}``.

Checkpoints: when a step completes, its output and the context keys it
changed are encoded (type-exact JSON, else a pickle; tagged with an
HMAC when the store has a secret: see caudal.checkpoints for the trust
policy) and stored, and its dependents
start only once the store says the write is durable. ``resume(run_id)``
restores every completed step and runs the rest.

Usage: a step reports tokens and cost by returning
``caudal.WithUsage(output, tokens=..., cost_usd=...)`` (the pipeline passes
``output`` on), or through ``StepResult.token_counts`` / ``cost_usd``, or by
returning an object with ``token_counts`` / ``cost_usd`` attributes (flujo's
convention). ``limits=UsageLimits(...)`` stops a run that goes over.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from caudal import _core
from caudal._bounds import check_number
from caudal._pipeline_context import RunContext
from caudal._steps import Step, _name_of
from caudal.checkpoints import (
    CheckpointStore,
    RunInfo,
    StepCheckpoint,
    StoredRun,
    open_store,
)
from caudal.errors import (
    CheckpointError,
    DuplicateStepError,
    PipelineDefinitionError,
    UsageLimitExceededError,
)

# Outputs of these exact types cannot carry usage attributes.
_YIELD_EVERY = 256  # a worker yields to the loop at least this often
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), dict, list, tuple, set})

# ------------------------------------------------------------------- usage


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost, as reported by a step or totalled over a run."""

    tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.tokens + other.tokens, self.cost_usd + other.cost_usd)

    def __bool__(self) -> bool:
        return bool(self.tokens or self.cost_usd)


class WithUsage:
    """What a step returns to report usage: ``WithUsage(output, tokens=120,
    cost_usd=0.0004)`` (or ``WithUsage(output, Usage(...))``). The pipeline
    records the usage and hands ``output`` to the dependents."""

    __slots__ = ("output", "usage")

    def __init__(
        self, output: Any, usage: Usage | None = None, *, tokens: int = 0, cost_usd: float = 0.0
    ) -> None:
        self.output = output
        self.usage = usage if usage is not None else Usage(int(tokens), float(cost_usd))

    def __repr__(self) -> str:
        return f"WithUsage({self.output!r}, {self.usage!r})"

    def __reduce__(self):
        return (WithUsage, (self.output, self.usage))


@dataclass(frozen=True, slots=True)
class UsageLimits:
    """Totals a run may not go over (None: no limit). Checked as each step
    completes: the run stops with :class:`caudal.UsageLimitExceededError`
    once a total is above its limit (the step that crossed it is
    checkpointed, its cost being spent; steps still running are cancelled)."""

    max_tokens: int | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        # NaN would never compare above a total: the limit would not hold.
        for n in ("max_tokens", "max_cost_usd"):
            check_number(f"UsageLimits.{n}", getattr(self, n), minimum=0, none_ok=True)

    def check(self, used: Usage, step: str) -> UsageLimitExceededError | None:
        if self.max_tokens is not None and used.tokens > self.max_tokens:
            return UsageLimitExceededError("max_tokens", self.max_tokens, used.tokens, step)
        if self.max_cost_usd is not None and used.cost_usd > self.max_cost_usd:
            return UsageLimitExceededError("max_cost_usd", self.max_cost_usd, used.cost_usd, step)
        return None


def _usage_of(res: Any, out: Any) -> tuple[Any, Usage | None]:
    """(output to pass on, usage reported) for a step's result."""
    if out.__class__ is WithUsage:
        return out.output, out.usage
    tokens, cost = res.token_counts, res.cost_usd
    if tokens or cost:
        return out, Usage(int(tokens), float(cost))
    t = getattr(out, "token_counts", None)
    c = getattr(out, "cost_usd", None)
    if (isinstance(t, int) and not isinstance(t, bool)) or isinstance(c, float | int):
        return out, Usage(
            int(t) if isinstance(t, int) else 0, float(c) if isinstance(c, int | float) else 0.0
        )
    return out, None


# ----------------------------------------------------------------- records


class StepRecord:
    """One step of a run: ``status`` is pending, running, completed, failed,
    skipped (a dependency failed) or cancelled (the run stopped while it
    ran). ``restored`` is True for a step taken from a checkpoint on resume
    (its timing, attempts and usage are those of the run that computed it).
    ``error`` is the error's text; ``exception`` the exception itself (not
    stored: None for restored steps)."""

    # Class-level defaults: a run creates one record per step up front, and
    # three attribute writes are cheaper than fourteen.
    FIELDS = (
        "name",
        "status",
        "optional",
        "output",
        "started_at",
        "finished_at",
        "latency_s",
        "attempts",
        "cache_hit",
        "error",
        "tokens",
        "cost_usd",
        "restored",
    )
    output: Any = None
    started_at: float | None = None
    finished_at: float | None = None
    latency_s = 0.0
    attempts = 0
    cache_hit = False
    error: str | None = None
    exception: BaseException | None = None
    tokens = 0
    cost_usd = 0.0
    restored = False

    def __init__(self, name: str, status: str = "pending", optional: bool = False) -> None:
        self.name = name
        self.status = status
        self.optional = optional

    def as_dict(self) -> dict[str, Any]:
        """Every field but ``output`` (and the exception object)."""
        return {f: getattr(self, f) for f in self.FIELDS if f != "output"}

    def __repr__(self) -> str:
        extra = f", error={self.error!r}" if self.error else ""
        return f"StepRecord({self.name!r}, {self.status}, attempts={self.attempts}{extra})"


class PipelineRun:
    """The outcome of ``Pipeline.run`` / ``resume``.

    - ``status``: "completed", "failed" (a non-optional step failed, or the
      run hit an error such as a context conflict; ``error`` says which),
      "limit_exceeded" or "cancelled".
    - ``steps``: name -> :class:`StepRecord`, in definition order.
    - ``outputs``: name -> output of every completed step.
    - ``result``: the output of the sink step (the one nothing depends on),
      or ``{name: output}`` when there are several.
    - ``usage`` (tokens, cost_usd), ``total_tokens``, ``total_cost_usd``.
    - ``context``: the run context after the last merge.
    """

    __slots__ = (
        "_sinks",
        "context",
        "error",
        "finished_at",
        "pipeline",
        "run_id",
        "started_at",
        "status",
        "steps",
        "usage",
    )

    def __init__(self, run_id: str, pipeline: str, steps: dict[str, StepRecord], sinks: list[str]):
        self.run_id = run_id
        self.pipeline = pipeline
        self.status = "running"
        self.steps = steps
        self._sinks = sinks
        self.usage = Usage()
        self.error: BaseException | None = None
        self.context: Any = None
        self.started_at = time.time()
        self.finished_at: float | None = None

    @property
    def outputs(self) -> dict[str, Any]:
        return {n: r.output for n, r in self.steps.items() if r.status == "completed"}

    @property
    def result(self) -> Any:
        if len(self._sinks) == 1:
            return self.steps[self._sinks[0]].output
        return {n: self.steps[n].output for n in self._sinks}

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"

    @property
    def total_tokens(self) -> int:
        return self.usage.tokens

    @property
    def total_cost_usd(self) -> float:
        return self.usage.cost_usd

    @property
    def duration_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.time()
        return end - self.started_at

    def unwrap(self) -> Any:
        """``result``, or raise the error that failed the run."""
        if self.status != "completed":
            if self.error is not None:
                raise self.error
            raise RuntimeError(f"pipeline run {self.run_id} is {self.status}")
        return self.result

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.steps.values():
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def __repr__(self) -> str:
        """The run's outcome and a table of its steps (status, start, time,
        attempts, cache hits, tokens, errors)."""
        from caudal._display import run_repr

        return run_repr(self)

    def _repr_html_(self) -> str:
        from caudal._display import run_html

        return run_html(self)

    def plot_gantt(self, **kwargs: Any) -> Any:
        """A Gantt chart of this run's steps (a matplotlib Figure; needs
        ``pip install 'caudal[plot]'``). See :func:`caudal.plots.plot_gantt`."""
        from caudal.plots import plot_gantt

        return plot_gantt(self, **kwargs)


# --------------------------------------------------------------- run scope


class RunScope:
    """What a running step can learn about its run: ``run_id`` and ``memo``,
    a dict living as long as the run (used for per-run caches such as the
    answers to YAML ``<AUTO>`` tags). ``current_run()`` returns it."""

    __slots__ = ("memo", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.memo: dict[Any, Any] = {}


_current_run: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar(
    "caudal_current_run", default=None
)


def current_run() -> RunScope | None:
    """The run the calling step belongs to (None outside a pipeline run)."""
    return _current_run.get()


# ---------------------------------------------------------------- pipeline


class _Node:
    __slots__ = ("deps", "name", "optional", "step")

    def __init__(self, name: str, step: Any, deps: tuple[str, ...], optional: bool) -> None:
        self.name = name
        self.step = step
        self.deps = deps
        self.optional = optional

    @staticmethod
    def of(obj: Any) -> _Node:
        if isinstance(obj, Step):
            return _Node(obj.name, obj, obj.depends_on, obj.optional)
        if isinstance(obj, Pipeline):
            raise TypeError("a Pipeline is not a step; compose pipelines with >> or parallel()")
        if not (callable(obj) or hasattr(obj, "run")):
            raise TypeError(
                f"pipeline steps must be caudal Steps, callables or agents, got {obj!r}"
            )
        return _Node(_name_of(obj), obj, (), False)

    def with_deps(self, deps: Iterable[str]) -> _Node:
        merged = list(self.deps)
        for d in deps:
            if d not in merged:
                merged.append(d)
        return _Node(self.name, self.step, tuple(merged), self.optional)


class Pipeline:
    """A DAG of steps.

    ``Pipeline(steps=[...], depends_on={"c": ["a", "b"]})``: steps are
    caudal Steps (their ``depends_on`` and ``optional`` count), plain
    callables or agents; steps named nowhere in ``depends_on`` and without
    Step-level ``depends_on`` are roots: they all start at once. Compose
    with ``a >> b`` (b's roots depend on a's sinks) and
    ``Pipeline.parallel(*branches)``. Pipelines are immutable; the
    definition is checked when built (duplicate names, missing dependencies,
    cycles: :class:`caudal.PipelineDefinitionError` subclasses).
    """

    __slots__ = ("_compiled", "_executor", "_nodes", "defaults", "name", "source")

    def __init__(
        self,
        steps: Iterable[Any] = (),
        *,
        depends_on: Mapping[str, Iterable[str] | str] | None = None,
        optional: Iterable[str] = (),
        name: str = "pipeline",
    ) -> None:
        nodes = [_Node.of(s) for s in steps]
        by_name = {n.name: i for i, n in enumerate(nodes)}
        if depends_on:
            for step_name, deps in depends_on.items():
                if step_name not in by_name:
                    raise PipelineDefinitionError(
                        f"depends_on names {step_name!r}, which is not a step", field="depends_on"
                    )
                if isinstance(deps, str):
                    deps = (deps,)
                i = by_name[step_name]
                nodes[i] = nodes[i].with_deps(deps)
        for step_name in optional:
            if step_name not in by_name:
                raise PipelineDefinitionError(
                    f"optional names {step_name!r}, which is not a step", field="optional"
                )
            n = nodes[by_name[step_name]]
            nodes[by_name[step_name]] = _Node(n.name, n.step, n.deps, True)
        self._init(nodes, name)
        self._compile()

    def _init(self, nodes: list[_Node], name: str) -> None:
        self._nodes = nodes
        self.name = name
        self._compiled: _Compiled | None = None
        self._executor: Any = None
        #: Where the definition came from (YAML text, path, registry spec), for
        #: resuming from the CLI; stored with each run.
        self.source: dict | None = None
        #: ``context`` and ``limits`` used when run() is not given them (YAML
        #: ``context:`` / ``limits:``).
        self.defaults: dict[str, Any] = {}

    @classmethod
    def _from_nodes(cls, nodes: list[_Node], name: str) -> Pipeline:
        names: set[str] = set()
        for n in nodes:
            if n.name in names:
                raise DuplicateStepError(n.name)
            names.add(n.name)
        p = cls.__new__(cls)
        p._init(nodes, name)
        return p

    # Composition --------------------------------------------------------
    @classmethod
    def of(cls, obj: Any) -> Pipeline:
        """``obj`` as a pipeline (a pipeline is returned as is)."""
        if isinstance(obj, Pipeline):
            return obj
        return cls._from_nodes([_Node.of(obj)], "pipeline")

    @classmethod
    def parallel(cls, *branches: Any, name: str = "pipeline") -> Pipeline:
        """Branches (steps or pipelines) that run side by side: each starts
        from the same input with its own snapshot of the context; their
        context changes are merged when each completes (two branches writing
        one key is a ContextConflictError), and a step after the group gets
        ``{sink_name: output}`` of every branch."""
        if not branches:
            raise ValueError("Pipeline.parallel needs at least one branch")
        nodes: list[_Node] = []
        for b in branches:
            nodes.extend(cls.of(b)._nodes)
        return cls._from_nodes(nodes, name)

    def __rshift__(self, other: Any) -> Pipeline:
        right = Pipeline.of(other)
        sinks = [self._nodes[i].name for i in self._sink_positions()]
        right_names = {n.name for n in right._nodes}
        nodes = list(self._nodes)
        for n in right._nodes:
            internal = [d for d in n.deps if d in right_names]
            nodes.append(n if internal or n.deps else n.with_deps(sinks))
        return Pipeline._from_nodes(nodes, self.name)

    def __rrshift__(self, other: Any) -> Pipeline:
        return Pipeline.of(other) >> self

    def _sink_positions(self) -> list[int]:
        used = {d for n in self._nodes for d in n.deps}
        return [i for i, n in enumerate(self._nodes) if n.name not in used]

    def with_name(self, name: str) -> Pipeline:
        p = Pipeline._from_nodes(list(self._nodes), name)
        p.source, p.defaults = self.source, self.defaults
        return p

    # Introspection ------------------------------------------------------
    def _compile(self) -> _Compiled:
        c = self._compiled
        if c is None:
            c = self._compiled = _Compiled(self._nodes)
        return c

    def validate(self) -> Pipeline:
        """Check the definition (raises PipelineDefinitionError); returns self."""
        self._compile()
        return self

    @property
    def step_names(self) -> list[str]:
        return [n.name for n in self._nodes]

    def dependencies(self) -> dict[str, list[str]]:
        return {n.name: list(n.deps) for n in self._nodes}

    def levels(self) -> list[list[str]]:
        """Steps grouped by topological level (0: no dependencies)."""
        c = self._compile()
        return [[c.names[i] for i in level] for level in c.dag.levels()]

    def __len__(self) -> int:
        return len(self._nodes)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={self.step_names!r})"

    # Running ------------------------------------------------------------
    def _default_executor(self) -> Any:
        if self._executor is None:
            from caudal.executor_core import ExecutorCore

            self._executor = ExecutorCore()
        return self._executor

    async def run(
        self,
        data: Any = None,
        *,
        executor: Any = None,
        context: Any = None,
        run_id: str | None = None,
        store: Any = None,
        limits: UsageLimits | None = None,
        resources: Any = None,
        max_concurrency: int | None = None,
        fail_fast: bool = False,
        on_step: Callable[[StepRecord], None] | None = None,
        context_conflicts: Any = "error",
    ) -> PipelineRun:
        """Run the pipeline on ``data``.

        - ``executor``: an ExecutorCore (default: one per pipeline).
        - ``context``: the run context (a ``caudal.Context``, a dict or an
          attribute object; each step gets a snapshot, see
          caudal._pipeline_context and docs/context.md); None: steps get
          ``context=None``. With the executor's enable_context_optimization
          (default) a dict is held as a copy-on-write ``caudal.Context`` and
          steps get a ``ContextView`` (a MutableMapping).
        - ``context_conflicts``: two concurrent steps writing one key:
          ``"error"`` (ContextConflictError), ``"last_writer_wins"``, or a
          callable ``(key, current, new) -> value``.
        - ``store``: where checkpoints go: None = the default SQLite file
          ($CAUDAL_STORE or ``.caudal/checkpoints.db``), a path, a
          ``postgresql://`` URI, a CheckpointStore, or False for none.
        - ``limits``: a :class:`UsageLimits`.
        - ``max_concurrency``: at most this many steps at once (default: no
          limit beyond the executor's).
        - ``fail_fast``: on a step failure, cancel the steps still running
          instead of letting independent branches finish (and checkpoint).
        - ``on_step(record)``: called as each step finishes or is skipped.

        Returns a :class:`PipelineRun`; a step failure is ``status="failed"``
        (``run.unwrap()`` raises it). Raises UsageLimitExceededError when a
        limit is exceeded (``.run`` has the partial run).
        """
        c = self._compile()
        run_id = run_id or uuid.uuid4().hex
        if context is None and self.defaults.get("context") is not None:
            context = copy.deepcopy(self.defaults["context"])
        if limits is None:
            limits = self.defaults.get("limits")
        st, owned = open_store(store)
        try:
            if st is not None:
                payload_in = st.encode_payload(run_id, "input", data)
                payload_ctx = st.encode_payload(run_id, "context", context)
                await st.start_run(
                    RunInfo(
                        run_id=run_id,
                        pipeline=self.name,
                        created_at=time.time(),
                        input=payload_in,
                        context=payload_ctx,
                        definition=self.source,
                    )
                )
            runner = _Runner(
                self,
                c,
                run_id,
                data,
                executor or self._default_executor(),
                st,
                limits,
                context,
                context_conflicts,
            )
            return await runner.go(resources, max_concurrency, fail_fast, on_step)
        finally:
            if owned and st is not None:
                await st.close()

    async def resume(
        self,
        run_id: str,
        *,
        store: Any = None,
        executor: Any = None,
        limits: UsageLimits | None = None,
        resources: Any = None,
        max_concurrency: int | None = None,
        fail_fast: bool = False,
        on_step: Callable[[StepRecord], None] | None = None,
    ) -> PipelineRun:
        """Go on with a stored run: completed steps are restored from their
        checkpoints (outputs and context changes) and never run again; every
        other step runs as in ``run``, with the stored input and context.
        Works on runs that crashed, failed, were cancelled or stopped at a
        usage limit (totals include the restored steps' usage); a completed
        run is returned as is. Raises RunNotFoundError for an unknown id."""
        if store is False:
            raise CheckpointError("resume needs a store")
        c = self._compile()
        if limits is None:
            limits = self.defaults.get("limits")
        st, owned = open_store(store)
        assert st is not None
        try:
            stored = await st.load_run(run_id)
            info = stored.info
            data = None if info.input is None else st.decode_payload(run_id, "input", info.input)
            context = (
                None if info.context is None else st.decode_payload(run_id, "context", info.context)
            )
            runner = _Runner(
                self, c, run_id, data, executor or self._default_executor(), st, limits, context
            )
            runner.restore(stored)
            if stored.info.status != "completed":
                await st.mark_resumed(run_id)
            return await runner.go(resources, max_concurrency, fail_fast, on_step)
        finally:
            if owned:
                await st.close()


class _Compiled:
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


class _Runner:
    """One execution of a compiled pipeline (see Pipeline.run)."""

    def __init__(
        self,
        pipeline: Pipeline,
        c: _Compiled,
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
                        await self._checkpoint(i, rec, out, changes, ok)
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
                        await self._checkpoint(i, rec, None, None, False)
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

    async def _checkpoint(self, i: int, rec: StepRecord, out: Any, changes: Any, ok: bool) -> None:
        status = "completed" if ok else ("failed_optional" if rec.optional else "failed")
        payload = None
        if status != "failed":
            payload = self.store.encode_payload(self.run_id, "step", (out, changes), rec.name)
        seq = self.seq
        self.seq = seq + 1
        await self.store.save_step(
            self.run_id,
            StepCheckpoint(
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
            ),
        )

    def _notify(self, rec: StepRecord) -> None:
        if self.on_step is not None:
            self.on_step(rec)

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


__all__ = [
    "Pipeline",
    "PipelineRun",
    "RunScope",
    "StepRecord",
    "Usage",
    "UsageLimits",
    "WithUsage",
    "current_run",
]
