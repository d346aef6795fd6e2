"""Bounds of the numbers a caller hands the Python API and YAML steps.

The maxima are OptimizationConfig's (cpp/caudal/config/optimization_config.cc),
so that a value the core cannot hold is refused where it is given, naming
it, instead of failing later in a conversion (pybind11's "incompatible
function arguments" for an int past C's int) or being silently wrong (NaN
compares false with everything; seconds past 1e9 overflow the core's int64
nanoseconds once added to a clock reading).

- API checks (:func:`check_count`, :func:`check_duration`,
  :func:`check_number`) raise ``TypeError`` for a value of the wrong type
  and ``ValueError`` for one out of bounds: ``"<name> must be <rule>, got
  <value>"``, ``name`` being what the caller calls the parameter
  (``"RetryStrategy.max_attempts"``, ``"Step 'fetch': timeout_s"``).
- The YAML loader words its problems after "expected", each with its line
  (:func:`number_problem`).

Nothing here runs per execution: callers check once, at construction.
"""

from __future__ import annotations

import math
import sys
from typing import Any

MAX_SECONDS = 1e9  # durations: ~31 years; 1e18 ns stays inside int64
MAX_RETRIES = 1000  # retries after the first attempt
MAX_ATTEMPTS = MAX_RETRIES + 1  # attempts in all, the first included


def fmt(x: float) -> str:
    """1000000000 rather than 1e+09; 0.5 as is."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def _is_number(value: Any, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, int | float)


def _finite(value: int | float) -> bool:
    """A float that is not NaN or infinite, or an int that a float holds
    (the core takes doubles; math.isfinite would raise OverflowError)."""
    if isinstance(value, int):
        return -sys.float_info.max <= value <= sys.float_info.max
    return math.isfinite(value)


def number_problem(
    value: Any, *, positive: bool = False, integer: bool = False, maximum: float | None = None
) -> str | None:
    """What is wrong with ``value`` as a YAML number field, in the loader's
    words ("expected a positive integer", "expected a finite number (a
    number >= 0)", "expected at most 1000"); None when it is fine."""
    if integer:
        want = "a positive integer" if positive else "an integer >= 0"
    else:
        want = "a positive number" if positive else "a number >= 0"
    if not _is_number(value, integer):
        return f"expected {want}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number ({want})"
    if value <= 0 if positive else value < 0:
        return f"expected {want}"
    if maximum is None:
        maximum = sys.float_info.max  # the core takes doubles
    if value > maximum:
        return f"expected at most {fmt(maximum)}"
    return None


def check_count(name: str, value: Any, maximum: int, *, minimum: int = 1) -> int:
    """An int in [minimum, maximum] (attempts, retries, workers, sizes)."""
    if not _is_number(value, integer=True):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an int from {minimum} to {maximum}, got {value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float,
    maximum: float = math.inf,
    positive: bool = False,
    none_ok: bool = False,
    unit: str = "",
) -> float | None:
    """A finite number >= minimum (> 0 with ``positive``) and <= maximum,
    as a float; None passes with ``none_ok``. ``unit``: " of seconds"."""
    if value is None and none_ok:
        return None
    rule = f"a finite number{unit} " + ("> 0" if positive else f">= {fmt(minimum)}")
    if maximum != math.inf:
        rule += f", at most {fmt(maximum)}"
        if unit == " of seconds" and maximum == MAX_SECONDS:
            rule += " (about 31 years)"
    if none_ok:
        rule += ", or None"
    if not _is_number(value):
        raise TypeError(f"{name} must be a number{' or None' if none_ok else ''}, got {value!r}")
    low_ok = value > 0 if positive else value >= minimum
    if not (_finite(value) and low_ok and value <= maximum):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def check_duration(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    none_ok: bool = False,
    maximum: float = MAX_SECONDS,
) -> float | None:
    """Seconds: finite, >= 0 (> 0 with ``positive``), at most
    :data:`MAX_SECONDS`; a float (None passes with ``none_ok``)."""
    return check_number(
        name,
        value,
        minimum=0.0,
        maximum=maximum,
        positive=positive,
        none_ok=none_ok,
        unit=" of seconds",
    )
