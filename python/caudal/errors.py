"""caudal's exception hierarchy.

Every exception caudal raises on its own account derives from CaudalError.
A step's own exception is never wrapped: it reaches the caller as itself
(in ``StepResult.error``, or re-raised by ``StepResult.unwrap()``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class CaudalError(Exception):
    """Base class of the errors caudal raises itself."""


class ConfigurationError(CaudalError, ValueError):
    """An invalid configuration. ``problems`` lists every problem found.

    Raised by ``ExecutorCore(...)``, ``apply_optimization_config`` and
    ``import_config``; the executor keeps the config it had.
    """

    def __init__(self, problems: Iterable[str] | str):
        if isinstance(problems, str):
            problems = [p for p in problems.splitlines() if p] or [problems]
        self.problems: list[str] = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


class CircuitOpenError(CaudalError):
    """The step's circuit breaker is open: the step was not called.

    ``breaker`` is the breaker's name (the step's name, or the shared key
    given with ``Step(breaker=...)``); ``retry_after_s`` the time left before
    it admits a probe call.
    """

    def __init__(self, breaker: str, retry_after_s: float):
        self.breaker = breaker
        self.retry_after_s = retry_after_s
        super().__init__(
            f"circuit breaker {breaker!r} is open; next probe allowed in {retry_after_s:.3f} s"
        )

    def __reduce__(self):
        return (type(self), (self.breaker, self.retry_after_s))


class QueueFullError(CaudalError):
    """The worker pool's bounded queue is full ("task queue is full")."""


class PoolTimeoutError(CaudalError, TimeoutError):
    """A task waited in a worker pool's queue longer than its task timeout
    and was not run."""


class StaleHandleError(CaudalError, RuntimeError):
    """An execution handle (or wait state) the native engine does not know:
    its execution has ended, it belongs to another executor, or it is not a
    handle at all. Internal calls only; never a user step's doing."""


class OverloadedError(CaudalError):
    """Raise it from a step when its backend says it is overloaded (HTTP 429
    or 503, "too many requests", a full queue downstream). Like timeouts,
    connection errors and exceptions carrying an HTTP status of 429, 502,
    503 or 504, it lowers the step's adaptive concurrency limit. It is
    retried within the step's retry budget and, unlike other failures, never
    counts toward the circuit breaker or error-pattern fail-fast.
    ``retry_after`` (seconds), when given, is honoured by retry strategies."""

    def __init__(self, message: str = "backend overloaded", retry_after: float | None = None):
        super().__init__(message)
        if retry_after is not None:
            self.retry_after = retry_after

    def __reduce__(self):
        return (type(self), (str(self), getattr(self, "retry_after", None)))


class PermanentError(CaudalError):
    """A failure no retry can fix, and not the backend's fault: an
    execution whose attempt raises it (or a subclass) fails at once,
    whatever retries its step has (its fallback, if any, still runs), and
    the circuit breaker does not count it. :class:`DataError` and
    :class:`PlacementError` are the two kinds caudal raises."""


class DataError(PermanentError):
    """A step's input or output is unusable as such: it cannot be serialised
    to cross to another process, or it fails a check of its own. A
    :class:`PermanentError`: not retried, not counted by the breaker. Raise
    it (or a subclass) from a step for data it must refuse."""


class SerializationError(DataError, TypeError):
    """An input, context or output of a remote step could not be serialised
    (pickled) to cross to or from the worker: a ``threading.Lock``, an open
    file, a socket. ``step`` is the step's name, ``direction`` ``"input"``
    or ``"output"``, ``type_name`` the type that failed, when known; the
    serialiser's own exception is ``__cause__``."""

    def __init__(self, step: str, direction: str, type_name: str, detail: str = ""):
        self.step = step
        self.direction = direction
        self.type_name = type_name
        self.detail = detail
        msg = f"step {step!r}: its {direction} cannot be serialised"
        if type_name:
            msg += f" ({type_name})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.step, self.direction, self.type_name, self.detail))


class PlacementError(PermanentError, ValueError):
    """A remote step asks for resources its cluster cannot provide: an
    actor pool larger than the cluster, a GPU or a custom resource no node
    has. Raised at the step's first attempt (a :class:`PermanentError`: not
    retried, not counted by the breaker) instead of waiting forever for a
    placement. ``step`` is the step's name, ``missing`` what is short
    (``{"GPU": 0.5}``), ``available`` what the cluster has."""

    def __init__(self, step: str, message: str, missing: dict, available: dict):
        self.step = step
        self.message = message
        self.missing = dict(missing)
        self.available = dict(available)
        super().__init__(f"step {step!r}: {message}")

    def __reduce__(self):
        return (type(self), (self.step, self.message, self.missing, self.available))


class PipelineDefinitionError(CaudalError, ValueError):
    """A pipeline definition that cannot run (bad YAML, bad step settings,
    duplicate names, missing dependencies, cycles).

    ``file``, ``line`` (1-based) and ``field`` (``steps[2].timeout_s``) say
    where, when known (YAML definitions); ``problems`` lists every problem
    found, each already prefixed with its place.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        problems: Iterable[str] | None = None,
    ):
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        self.problems: list[str] = list(problems) if problems is not None else [self._place()]
        super().__init__("\n".join(self.problems))

    def _place(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:"
        if self.line is not None:
            where += f"{self.line}:"
        if where:
            where += " "
        if self.field:
            where += f"{self.field}: "
        return where + self.message

    def _where(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field}

    def __reduce__(self):
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type, state: dict) -> BaseException:
    exc = cls.__new__(cls)
    exc.__dict__.update(state)
    exc.args = ("\n".join(state.get("problems", [])),)
    return exc


class DuplicateStepError(PipelineDefinitionError):
    """Two steps of one pipeline share a name (``step``)."""

    def __init__(self, step: str, **where):
        self.step = step
        super().__init__(f"duplicate step name {step!r}", **where)


class DependencyError(PipelineDefinitionError):
    """Step ``step`` depends on ``missing``, which is not a step of the pipeline."""

    def __init__(self, step: str, missing: str, **where):
        self.step = step
        self.missing = missing
        super().__init__(f"step {step!r} depends on {missing!r}, which is not a step", **where)


class CircularDependencyError(PipelineDefinitionError):
    """The dependencies loop. ``cycle`` lists the steps around the loop, each
    depending on the next, with the first repeated at the end:
    ``["a", "b", "c", "a"]`` (a step depending on itself: ``["a", "a"]``).
    The loop starts at the step defined first, so a definition always reports
    the same cycle."""

    def __init__(self, cycle: Iterable[str], **where):
        self.cycle: list[str] = list(cycle)
        super().__init__("circular dependency: " + " -> ".join(self.cycle), **where)


class CheckpointError(CaudalError):
    """A checkpoint could not be written or read: an output that does not
    pickle, or that a store without a secret may only keep as JSON; a store
    that refuses the write; a payload that fails authentication (written
    with another secret, or tampered with) or is corrupt; a run id that does
    not exist."""


class RunNotFoundError(CheckpointError, KeyError):
    """No run with this id in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ContextConflictError(CaudalError):
    """Concurrent writers changed the same context keys differently.

    Raised by ``merge_branches(..., policy="error")`` for parallel branches,
    and by a pipeline when two steps that ran concurrently wrote the same key.
    ``conflicts`` maps each conflicting key to its writers (branch positions
    or names, or step names), in order; ``key`` and ``steps`` are the first
    conflict's key and writers.
    """

    def __init__(self, conflicts: Any, steps: Iterable[str] | None = None):
        if steps is not None:  # (key, (first_step, conflicting_step))
            conflicts = {conflicts: list(steps)}
        self.conflicts: dict[Any, list[Any]] = {k: list(v) for k, v in conflicts.items()}
        self.key = next(iter(self.conflicts), None)
        self.steps = tuple(self.conflicts.get(self.key, ()))
        parts = [
            f"{key!r} (branches {', '.join(map(repr, names))})"
            for key, names in self.conflicts.items()
        ]
        super().__init__(f"conflicting writes to {len(parts)} context key(s): " + "; ".join(parts))

    def __reduce__(self):
        return (type(self), (self.conflicts,))


class UsageLimitExceededError(CaudalError):
    """A pipeline run went over a :class:`caudal.UsageLimits` limit.

    ``limit`` is the limit's name (``"max_tokens"`` or ``"max_cost_usd"``),
    ``limit_value`` its value, ``used`` the total once ``step`` (the step
    whose usage crossed it) was counted, ``run`` the stopped
    :class:`caudal.PipelineRun` (its completed steps are checkpointed, so
    ``resume`` with a higher limit goes on from there).
    """

    def __init__(self, limit: str, limit_value: float, used: float, step: str, run=None):
        self.limit = limit
        self.limit_value = limit_value
        self.used = used
        self.step = step
        self.run = run
        super().__init__(
            f"usage limit {limit}={limit_value:g} exceeded by step {step!r}: "
            f"{used:g} used in this run"
        )

    def __reduce__(self):
        return (type(self), (self.limit, self.limit_value, self.used, self.step))


class BackendUnavailableError(CaudalError, ImportError):
    """A step or executor asked for an execution backend whose package is not
    installed (``backend="ray"`` without Ray). The message says what to
    install."""


class PipelineBackendUnavailableError(PipelineDefinitionError, BackendUnavailableError):
    """A pipeline definition (YAML) whose steps ask for a backend whose
    package is not installed: a :class:`PipelineDefinitionError` that says
    where (file, line, field), and a :class:`BackendUnavailableError` (so an
    ``ImportError``), as ``Step(..., backend="ray")`` raises without Ray."""


class RemoteWorkerDiedError(CaudalError):
    """The process or node running a remote attempt died before it answered
    (a Ray worker crash, a dead node, a lost actor or result, a worker killed
    for memory). Not the step's failure: it is retried at once up to 3 times
    by default, beyond the step's own ``max_retries`` / ``retry``, and the
    circuit breaker does not count it. Ray's own retries are off, so the
    decision is the executor's, each attempt counted once.

    ``step`` is the step's name, ``reason`` the name of the Ray exception;
    the Ray exception itself is ``__cause__``.
    """

    def __init__(self, step: str, reason: str, detail: str = ""):
        self.step = step
        self.reason = reason
        self.detail = detail
        msg = f"step {step!r}: the Ray worker running the attempt died ({reason})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.step, self.reason, self.detail))


class ClusterLostError(RemoteWorkerDiedError):
    """The driver lost its Ray cluster while an attempt ran, or before it was
    sent: the cluster's GCS did not answer for ``CAUDAL_RAY_LOST_AFTER_S``
    seconds (15 by default). The attempt ends with it even without a
    ``timeout_s``; until the GCS answers again, new remote attempts fail
    with it at once, without being sent. Like any lost worker it is not the
    step's failure: the breaker does not count it."""

    def __init__(self, step: str, address: str, lost_for_s: float):
        self.step, self.reason = step, "cluster lost"
        self.address, self.lost_for_s = address, lost_for_s
        self.detail = f"its GCS at {address} has not answered for {lost_for_s:.0f} s"
        CaudalError.__init__(self, f"step {step!r}: the Ray cluster was lost: {self.detail}")

    def __reduce__(self):
        return (type(self), (self.step, self.address, self.lost_for_s))


__all__ = [
    "BackendUnavailableError",
    "CaudalError",
    "CheckpointError",
    "CircuitOpenError",
    "CircularDependencyError",
    "ClusterLostError",
    "ConfigurationError",
    "ContextConflictError",
    "DataError",
    "DependencyError",
    "DuplicateStepError",
    "OverloadedError",
    "PermanentError",
    "PipelineDefinitionError",
    "PlacementError",
    "PoolTimeoutError",
    "QueueFullError",
    "RemoteWorkerDiedError",
    "RunNotFoundError",
    "SerializationError",
    "StaleHandleError",
    "UsageLimitExceededError",
]
