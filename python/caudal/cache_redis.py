"""Deprecated alias of :mod:`caudal.integrations.redis`, kept for one release."""

import warnings
from typing import Any

import caudal.integrations.redis as _new
from caudal.integrations.redis import *  # noqa: F403
from caudal.integrations.redis import __all__  # noqa: F401

warnings.warn(
    "caudal.cache_redis is deprecated: import from caudal.integrations.redis instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    return getattr(_new, name)
