"""``a >> b`` on steps: how a Step builds a Pipeline without importing it.

A Pipeline holds steps and runs them through an executor, so the pipeline
package sits above the step module; yet ``step >> step`` must return a
Pipeline. Instead of the step module importing the pipeline package (an
import circle), the pipeline graph registers its composition here when it is
imported, which ``import caudal`` always does before any user code runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_pipeline_of: Callable[[Any], Any] | None = None


def register_pipeline(pipeline_of: Callable[[Any], Any]) -> None:
    """Called once, by caudal.pipeline.graph: ``pipeline_of(obj)`` turns a
    step (or a pipeline) into a Pipeline."""
    global _pipeline_of
    _pipeline_of = pipeline_of


def chain(left: Any, right: Any) -> Any:
    """``left >> right`` as a Pipeline: ``right`` runs on ``left``'s output."""
    if _pipeline_of is None:  # only if caudal's own __init__ did not run
        raise RuntimeError("caudal.pipeline is not imported; import caudal first")
    return _pipeline_of(left) >> right
