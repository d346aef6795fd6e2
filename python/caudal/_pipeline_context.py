"""Deprecated alias of :mod:`caudal.pipeline.context`, kept for one release."""

import warnings
from typing import Any

import caudal.pipeline.context as _new
from caudal.pipeline.context import *  # noqa: F403
from caudal.pipeline.context import __all__  # noqa: F401

warnings.warn(
    "caudal._pipeline_context is deprecated: import from caudal.pipeline.context instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    return getattr(_new, name)
