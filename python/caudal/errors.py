"""caudal's exception hierarchy.

Every exception caudal raises on its own account derives from CaudalError.
A step's own exception is never wrapped: it reaches the caller as itself
(in ``StepResult.error``, or re-raised by ``StepResult.unwrap()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


class ContextConflictError(CaudalError):
    """Branches wrote different values to the same context keys.

    Raised by ``merge_branches(..., policy="error")``. ``conflicts`` maps each
    conflicting key to the branches that changed it (their positions, or
    their names when the branches were given as a dict), in branch order.
    """

    def __init__(self, conflicts: Mapping[Any, list[Any]]):
        self.conflicts: dict[Any, list[Any]] = {k: list(v) for k, v in conflicts.items()}
        parts = [
            f"{key!r} (branches {', '.join(map(repr, names))})"
            for key, names in self.conflicts.items()
        ]
        super().__init__(f"conflicting writes to {len(parts)} context key(s): " + "; ".join(parts))

    def __reduce__(self):
        return (type(self), (self.conflicts,))


__all__ = [
    "CaudalError",
    "CircuitOpenError",
    "ConfigurationError",
    "ContextConflictError",
    "QueueFullError",
]
