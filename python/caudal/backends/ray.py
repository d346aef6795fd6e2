"""Deprecated alias of :mod:`caudal.integrations.ray`, kept for one release."""

import warnings
from typing import Any

import caudal.integrations.ray as _new
from caudal.integrations.ray import *  # noqa: F403
from caudal.integrations.ray import __all__  # noqa: F401

warnings.warn(
    "caudal.backends.ray is deprecated: import from caudal.integrations.ray instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    return getattr(_new, name)
