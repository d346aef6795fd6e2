"""Deprecated alias of :mod:`caudal.pipeline.yaml`, kept for one release."""

import warnings
from typing import Any

import caudal.pipeline.yaml
import caudal.pipeline.yaml.auto
import caudal.pipeline.yaml.build
import caudal.pipeline.yaml.document
from caudal.pipeline.yaml import *  # noqa: F403
from caudal.pipeline.yaml import __all__  # noqa: F401

warnings.warn(
    "caudal.yaml_pipeline is deprecated: import from caudal.pipeline.yaml instead "
    "(the old path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)


_MODULES = (
    caudal.pipeline.yaml,
    caudal.pipeline.yaml.auto,
    caudal.pipeline.yaml.document,
    caudal.pipeline.yaml.build,
)


def __getattr__(name: str) -> Any:
    """The module's other (private) names, for code that reached into it."""
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
