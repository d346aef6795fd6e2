"""Deprecated alias of :mod:`caudal._backends`, kept for one release."""

import warnings
from typing import Any

import caudal._backends as _new
from caudal._backends import *  # noqa: F403
from caudal._backends import __all__  # noqa: F401

warnings.warn(
    "caudal.backends is deprecated: import from caudal._backends instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    return getattr(_new, name)
