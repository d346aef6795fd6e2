"""Pipelines: steps wired into a DAG, run concurrently, checkpointed, resumable.

    fetch >> parse >> Pipeline.parallel(score, tag) >> report
    Pipeline(steps=[a, b, c], depends_on={"c": ["a", "b"]})

- :mod:`caudal.pipeline.graph`: :class:`Pipeline`, building and checking the
  DAG, ``run`` and ``resume``;
- :mod:`caudal.pipeline.runner`: one execution (ready set, checkpoints,
  usage limits);
- :mod:`caudal.pipeline.records`: what a run produces (:class:`PipelineRun`,
  :class:`StepRecord`, usage, :func:`current_run`);
- :mod:`caudal.pipeline.context`: how steps get and change the run context;
- :mod:`caudal.pipeline.stores`: where checkpoints go (memory, SQLite;
  PostgreSQL in :mod:`caudal.integrations.postgres`);
- :mod:`caudal.pipeline.yaml`: YAML definitions (``load_pipeline``).
"""

from caudal.pipeline.graph import Pipeline
from caudal.pipeline.records import (
    PipelineRun,
    RunScope,
    StepRecord,
    Usage,
    UsageLimits,
    WithUsage,
    current_run,
)

__all__ = [
    "Pipeline",
    "PipelineRun",
    "RunScope",
    "StepRecord",
    "Usage",
    "UsageLimits",
    "WithUsage",
    "current_run",
]
