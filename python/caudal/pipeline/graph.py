"""Pipeline: steps wired into a DAG, run concurrently, checkpointed, resumable.

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
changed are stored (caudal.pipeline.stores says how they are encoded and
when they are trusted); ``resume(run_id)`` restores every completed step and
runs the rest. The run itself is caudal.pipeline.runner; what it produces,
caudal.pipeline.records.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from caudal import _compose
from caudal._executor.core import ExecutorCore
from caudal._step import Step, _name_of
from caudal.errors import CheckpointError, DuplicateStepError, PipelineDefinitionError
from caudal.pipeline.records import PipelineRun, StepRecord, UsageLimits
from caudal.pipeline.runner import Compiled, Runner
from caudal.pipeline.stores import RunInfo, open_store


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
        seen = set(merged)
        for d in deps:
            if d not in seen:
                seen.add(d)
                merged.append(d)
        return _Node(self.name, self.step, tuple(merged), self.optional)


class _Log:
    """The nodes of one or more pipelines, in definition order, shared and
    append-only: a Pipeline is a view of its log's first ``n`` nodes.

    ``p >> x`` appends ``x``'s nodes to ``p``'s log when ``p`` views all of
    it (the usual ``a >> b >> c``: each result extends the last), so a chain
    of n steps is built in O(n), not O(n^2); when the log has grown past
    ``p`` (``p >> x`` after ``p >> y``), ``p``'s nodes are copied into a new
    log first. Nodes are never changed or removed, so every earlier view
    still sees exactly its own nodes. ``lock`` makes the check-and-append
    atomic when threads grow one pipeline at once."""

    __slots__ = ("first_user", "index", "lock", "nodes")

    def __init__(self, nodes: Iterable[_Node] = ()) -> None:
        self.nodes: list[_Node] = []
        #: name -> position (the first, if a name repeats: the constructor
        #: leaves duplicates to the graph check).
        self.index: dict[str, int] = {}
        #: dependency name -> position of the first node naming it.
        self.first_user: dict[str, int] = {}
        self.lock = threading.Lock()
        for n in nodes:
            self.append(n)

    def __reduce__(self) -> tuple:
        # Copied or pickled without its lock: rebuilt from the nodes.
        return (_Log, (list(self.nodes),))

    def append(self, node: _Node) -> None:
        pos = len(self.nodes)
        self.nodes.append(node)
        self.index.setdefault(node.name, pos)
        first_user = self.first_user
        for d in node.deps:
            if d not in first_user:
                first_user[d] = pos

    def sinks(self) -> tuple[int, ...]:
        """Positions of the nodes no node depends on (the whole log)."""
        used = self.first_user
        return tuple(i for i, n in enumerate(self.nodes) if n.name not in used)


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

    __slots__ = ("_compiled", "_executor", "_log", "_n", "_sinks", "defaults", "name", "source")

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
        log = _Log(nodes)
        self._init(log, len(nodes), log.sinks(), name)
        self._compile()

    def _init(self, log: _Log, n: int, sinks: tuple[int, ...], name: str) -> None:
        self._log = log
        self._n = n  # this pipeline is log.nodes[:n]
        self._sinks = sinks  # positions of its nodes that nothing depends on
        self.name = name
        self._compiled: Compiled | None = None
        self._executor: Any = None
        #: Where the definition came from (YAML text, path, registry spec), for
        #: resuming from the CLI; stored with each run.
        self.source: dict | None = None
        #: ``context`` and ``limits`` used when run() is not given them (YAML
        #: ``context:`` / ``limits:``).
        self.defaults: dict[str, Any] = {}

    @classmethod
    def _view(cls, log: _Log, n: int, sinks: tuple[int, ...], name: str) -> Pipeline:
        p = cls.__new__(cls)
        p._init(log, n, sinks, name)
        return p

    @classmethod
    def _from_nodes(cls, nodes: list[_Node], name: str) -> Pipeline:
        log = _Log()
        index = log.index
        for n in nodes:
            if n.name in index:
                raise DuplicateStepError(n.name)
            log.append(n)
        return cls._view(log, len(nodes), log.sinks(), name)

    def _node_list(self) -> list[_Node]:
        """This pipeline's nodes (a new list)."""
        return self._log.nodes[: self._n]

    @property
    def _nodes(self) -> list[_Node]:
        return self._node_list()

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
            if isinstance(b, Pipeline):
                nodes.extend(b._node_list())
            else:
                nodes.append(_Node.of(b))
        return cls._from_nodes(nodes, name)

    def __rshift__(self, other: Any) -> Pipeline:
        """``self >> other``: ``other``'s roots (its steps without
        dependencies) depend on this pipeline's sinks. Neither operand
        changes. Costs O(steps of ``other`` + their dependencies + this
        pipeline's sinks) when this pipeline is the latest grown from its
        steps (as in ``a >> b >> c``), plus a copy of this pipeline's steps
        otherwise."""
        if not isinstance(other, Pipeline):
            return self._then(_Node.of(other))
        right = other._node_list()
        right_sinks = other._sinks
        log, n = self._log, self._n
        with log.lock:
            if len(log.nodes) != n:
                # Grown past this pipeline already: continue on a copy.
                log = _Log(log.nodes[:n])
            index = log.index
            for r in right:
                if r.name in index:
                    raise DuplicateStepError(r.name)
            nodes = log.nodes
            left_sinks = tuple([nodes[i].name for i in self._sinks])  # distinct names
            wired = False
            for r in right:
                if not r.deps:
                    wired = True
                    break
            if wired or not left_sinks:
                # Every sink of the left is now a dependency.
                sinks: list[int] = []
            else:
                named = {d for r in right for d in r.deps}
                sinks = [i for i in self._sinks if nodes[i].name not in named]
            # A step of the right named by a step of the left is no sink.
            first_user = log.first_user
            sinks.extend(n + j for j in right_sinks if right[j].name not in first_user)
            # Append (what _Log.append does, inlined: this is the loop of a
            # long chain). Names are new (checked above) and distinct.
            pos = n
            for r in right:
                deps = r.deps
                if not deps:
                    r = _Node(r.name, r.step, left_sinks, r.optional)
                    deps = left_sinks
                nodes.append(r)
                index[r.name] = pos
                for d in deps:
                    if d not in first_user:
                        first_user[d] = pos
                pos += 1
        return Pipeline._view(log, n + len(right), tuple(sinks), self.name)

    def _then(self, node: _Node) -> Pipeline:
        """``self >> step``: __rshift__ for one node (a long chain's loop)."""
        log, n, name = self._log, self._n, node.name
        with log.lock:
            if len(log.nodes) != n:
                log = _Log(log.nodes[:n])
            nodes, first_user = log.nodes, log.first_user
            if name in log.index:
                raise DuplicateStepError(name)
            deps = node.deps
            if deps:
                named = deps if len(deps) < 8 else set(deps)
                sinks = [i for i in self._sinks if nodes[i].name not in named]
            else:
                deps = tuple([nodes[i].name for i in self._sinks])
                node = _Node(name, node.step, deps, node.optional)
                sinks = []
            if name not in first_user and name not in deps:
                sinks.append(n)
            nodes.append(node)
            log.index[name] = n
            for d in deps:
                if d not in first_user:
                    first_user[d] = n
        return Pipeline._view(log, n + 1, tuple(sinks), self.name)

    def __rrshift__(self, other: Any) -> Pipeline:
        return Pipeline.of(other) >> self

    def with_name(self, name: str) -> Pipeline:
        p = Pipeline._view(self._log, self._n, self._sinks, name)
        p.source, p.defaults = self.source, self.defaults
        return p

    # Introspection ------------------------------------------------------
    def _compile(self) -> Compiled:
        c = self._compiled
        if c is None:
            c = self._compiled = Compiled(self._node_list())
        return c

    def validate(self) -> Pipeline:
        """Check the definition (raises PipelineDefinitionError); returns self."""
        self._compile()
        return self

    @property
    def step_names(self) -> list[str]:
        return [n.name for n in self._node_list()]

    def dependencies(self) -> dict[str, list[str]]:
        return {n.name: list(n.deps) for n in self._node_list()}

    def levels(self) -> list[list[str]]:
        """Steps grouped by topological level (0: no dependencies)."""
        c = self._compile()
        return [[c.names[i] for i in level] for level in c.dag.levels()]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={self.step_names!r})"

    # Running ------------------------------------------------------------
    def _default_executor(self) -> Any:
        if self._executor is None:
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
          caudal.pipeline.context and docs/context.md); None: steps get
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
            runner = Runner(
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
            runner = Runner(
                self, c, run_id, data, executor or self._default_executor(), st, limits, context
            )
            runner.restore(stored)
            if stored.info.status != "completed":
                await st.mark_resumed(run_id)
            return await runner.go(resources, max_concurrency, fail_fast, on_step)
        finally:
            if owned:
                await st.close()


_compose.register_pipeline(Pipeline.of)

__all__ = ["Pipeline"]
