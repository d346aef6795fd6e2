"""Retry strategies and the circuit breaker's Python face.

The state machines live in C++ (cpp/caudal/resilience/): the breaker's
admission, its verdict, the error-pattern table and the back-off delay ride
in the executor's native calls around each attempt.
This module only describes policies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from caudal import _core
from caudal._bounds import MAX_ATTEMPTS, MAX_RETRIES, check_count, check_duration, check_number
from caudal.errors import ConfigurationError

_KINDS = ("exponential", "linear", "fixed")

ExceptionSpec = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)


def _normalise_spec(spec: Any, what: str) -> Any:
    """A type, a tuple of types, a predicate, or None -> tuple/predicate/None."""
    if spec is None or (callable(spec) and not isinstance(spec, type)):
        return spec
    if isinstance(spec, type) and issubclass(spec, BaseException):
        return (spec,)
    if isinstance(spec, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in spec
    ):
        return spec
    raise TypeError(
        f"{what} must be an exception type, a tuple of them, or a predicate; got {spec!r}"
    )


@dataclass(frozen=True)
class RetryStrategy:
    """How a step retries.

    - ``max_attempts``: attempts in all, the first included (1 .. 1001).
    - ``strategy``: ``"exponential"`` (``base_delay * backoff_factor**(n-1)``
      before retry n), ``"linear"`` (``base_delay * n``) or ``"fixed"``
      (``base_delay``).
    - ``base_delay``, ``max_backoff``: seconds, 0 .. 1e9 (about 31 years,
      as every duration in OptimizationConfig).
    - ``backoff_factor``: a finite number, >= 1 for ``"exponential"`` (>= 0
      otherwise, where it is unused).
    - ``max_backoff``: cap on any delay, a ``retry_after`` hint included.
    - ``jitter`` in [0, 1]: that fraction of each delay is randomised
      downwards (0.5 = "equal jitter", 1 = "full jitter"); never lengthens.
    - ``retry_on``: exception types, or a predicate ``exc -> bool``; other
      errors fail at once. ``asyncio.CancelledError`` is never retried.

    A number out of these bounds (NaN and infinities included) raises
    ``ValueError`` naming the field when the strategy is made; a value of
    the wrong type, ``TypeError``.

    A server's stated wait sets the next delay (plus up to 20 %, so that
    callers told the same wait spread out), capped by ``max_backoff``: a
    numeric ``retry_after`` attribute of the exception (seconds), else the
    ``retry-after-ms`` or ``Retry-After`` header (seconds or an HTTP date)
    of the HTTP response it carries (httpx, requests, aiohttp, openai,
    anthropic). A stated wait above the executor's
    ``retry_after_max_seconds`` ends the execution at once. Delays are
    computed natively with a seeded random source.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    backoff_factor: float = 2.0
    max_backoff: float = 60.0
    jitter: float = 0.0
    strategy: str = "exponential"
    retry_on: ExceptionSpec = field(default=(Exception,))

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or self.strategy not in _KINDS:
            raise ValueError(
                f"RetryStrategy.strategy must be one of {sorted(_KINDS)}, got {self.strategy!r}"
            )
        check_count("RetryStrategy.max_attempts", self.max_attempts, MAX_ATTEMPTS)
        check_duration("RetryStrategy.base_delay", self.base_delay)
        check_duration("RetryStrategy.max_backoff", self.max_backoff)
        check_number(
            "RetryStrategy.backoff_factor",
            self.backoff_factor,
            minimum=1.0 if self.strategy == "exponential" else 0.0,
        )
        check_number("RetryStrategy.jitter", self.jitter, minimum=0.0, maximum=1.0)
        # The core's own rules (cpp/caudal/resilience/retry_policy.cc), now
        # that every value fits its types.
        try:
            self._native()
        except ConfigurationError as e:
            raise ValueError("RetryStrategy: " + "; ".join(e.problems)) from None
        object.__setattr__(
            self, "retry_on", _normalise_spec(self.retry_on, "RetryStrategy.retry_on")
        )

    def _native(self) -> _core.RetryPolicy:
        """The core's RetryPolicy (what the engine runs by): a new one."""
        return _core.RetryPolicy(
            kind=self.strategy,
            max_attempts=self.max_attempts,
            base_delay_s=float(self.base_delay),
            backoff_factor=float(self.backoff_factor),
            max_backoff_s=float(self.max_backoff),
            jitter=float(self.jitter),
        )

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """The delay before retry number ``retry`` (1 = the first retry, at
        most 1000), with jitter at its midpoint: a preview of what the
        executor will wait. ``retry_after`` as an exception's hint: it
        replaces the computed delay, spread upwards by up to 20 % (so callers
        told the same wait do not return at one instant; previewed at 10 %);
        a negative or non-finite one is ignored, a large one capped."""
        check_count("RetryStrategy.delay: retry", retry, MAX_RETRIES)
        hint = None
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
                raise TypeError(
                    "RetryStrategy.delay: retry_after must be a number or None, "
                    f"got {retry_after!r}"
                )
            try:
                hint = float(retry_after)
            except OverflowError:  # an int no float holds: ignored, as in execution
                hint = None
        return self._native().delay_before_attempt(retry + 1, hint, 1 << 63)


def immediate_retries(max_retries: int) -> RetryStrategy:
    """flujo's semantics for ``max_retries=N``: N retries (0 .. 1000), no
    delay."""
    check_count("max_retries", max_retries, MAX_RETRIES, minimum=0)
    return RetryStrategy(
        max_attempts=max_retries + 1, base_delay=0.0, max_backoff=0.0, strategy="fixed"
    )


__all__ = ["RetryStrategy", "immediate_retries"]
