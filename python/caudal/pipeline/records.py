"""What a pipeline run produces: step records, the run, usage, the run scope.

- :class:`StepRecord`: one step of a run (status, output, timing, attempts,
  usage); :class:`PipelineRun`: the whole run (``run.unwrap()``,
  ``run.outputs``, a table in its repr, a Gantt chart).
- Usage: a step reports tokens and cost by returning
  ``caudal.WithUsage(output, tokens=..., cost_usd=...)`` (the pipeline passes
  ``output`` on), or through ``StepResult.token_counts`` / ``cost_usd``, or
  by returning an object with ``token_counts`` / ``cost_usd`` attributes
  (flujo's convention). ``limits=UsageLimits(...)`` stops a run that goes
  over.
- :func:`current_run`: the run a step is part of, from inside the step.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import Any

from caudal._bounds import check_number
from caudal._display import run_html, run_repr
from caudal.errors import UsageLimitExceededError

# Outputs of these exact types cannot carry usage attributes.
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
        return run_repr(self)

    def _repr_html_(self) -> str:
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


__all__ = [
    "PipelineRun",
    "RunScope",
    "StepRecord",
    "Usage",
    "UsageLimits",
    "WithUsage",
    "current_run",
]
