"""Deprecated alias of :mod:`caudal.pipeline.stores`, kept for one release."""

import warnings
from typing import Any

import caudal.integrations.postgres
import caudal.pipeline.stores
import caudal.pipeline.stores.base
import caudal.pipeline.stores.memory
import caudal.pipeline.stores.sqlite
from caudal.pipeline.stores import *  # noqa: F403
from caudal.pipeline.stores import __all__  # noqa: F401

warnings.warn(
    "caudal.checkpoints is deprecated: import from caudal.pipeline.stores instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


_MODULES = (
    caudal.pipeline.stores,
    caudal.pipeline.stores.base,
    caudal.pipeline.stores.memory,
    caudal.pipeline.stores.sqlite,
    caudal.integrations.postgres,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
