"""Deprecated alias of :mod:`caudal.integrations.plots`, kept for one release."""

import warnings
from typing import Any

import caudal.integrations.plots
from caudal.integrations.plots import *  # noqa: F403
from caudal.integrations.plots import __all__  # noqa: F401

warnings.warn(
    "caudal.plots is deprecated: import from caudal.integrations.plots instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    if hasattr(caudal.integrations.plots, name):
        return getattr(caudal.integrations.plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
