"""Deprecated alias of :mod:`caudal.integrations.prometheus`, kept for one release."""

import warnings
from typing import Any

import caudal.integrations.prometheus
from caudal.integrations.prometheus import *  # noqa: F403
from caudal.integrations.prometheus import __all__  # noqa: F401

warnings.warn(
    "caudal.prometheus is deprecated: import from caudal.integrations.prometheus instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    if hasattr(caudal.integrations.prometheus, name):
        return getattr(caudal.integrations.prometheus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
