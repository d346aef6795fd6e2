"""Deprecated alias of :mod:`caudal.integrations.redis`, kept for one release."""

import warnings
from typing import Any

import caudal.integrations.redis
import caudal.integrations.redis.connection
import caudal.integrations.redis.invalidation
import caudal.integrations.redis.tier
import caudal.integrations.redis.wire
from caudal.integrations.redis import *  # noqa: F403
from caudal.integrations.redis import __all__  # noqa: F401

warnings.warn(
    "caudal.cache_redis is deprecated: import from caudal.integrations.redis instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


_MODULES = (
    caudal.integrations.redis,
    caudal.integrations.redis.tier,
    caudal.integrations.redis.invalidation,
    caudal.integrations.redis.connection,
    caudal.integrations.redis.wire,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
