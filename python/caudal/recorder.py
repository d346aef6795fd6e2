"""Deprecated alias of :mod:`caudal._executor.recorder`, kept for one release."""

import warnings
from typing import Any

import caudal._executor.recorder
from caudal._executor.recorder import *  # noqa: F403
from caudal._executor.recorder import __all__  # noqa: F401

warnings.warn(
    "caudal.recorder is deprecated: import from caudal._executor.recorder instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    if hasattr(caudal._executor.recorder, name):
        return getattr(caudal._executor.recorder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
