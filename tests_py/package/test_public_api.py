"""The public API: ``caudal.__all__`` is exactly this list, every name in it
is importable from ``caudal`` and documented (has a docstring)."""

from __future__ import annotations

import importlib

import pytest

import caudal

PUBLIC = [
    "BackendUnavailableError",
    "CaudalError",
    "CheckpointError",
    "CheckpointStore",
    "CircuitOpenError",
    "CircularDependencyError",
    "ClusterLostError",
    "ConfigurationError",
    "Context",
    "ContextConflictError",
    "ContextMutation",
    "DataError",
    "DependencyError",
    "DuplicateStepError",
    "ExecutorCore",
    "LatencyRecorder",
    "MemoryStore",
    "OptimizationConfig",
    "OptimizationStats",
    "OverloadedError",
    "PermanentError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineRun",
    "PlacementError",
    "PoolTimeoutError",
    "PostgresStore",
    "QueueFullError",
    "Recommendations",
    "RemoteWorkerDiedError",
    "RetryStrategy",
    "RunNotFoundError",
    "SerializationError",
    "SqliteStore",
    "Step",
    "StepRecord",
    "StepResult",
    "StepTimeoutError",
    "Usage",
    "UsageLimitExceededError",
    "UsageLimits",
    "WithUsage",
    "WorkerPool",
    "__version__",
    "as_context",
    "current_run",
    "load_pipeline",
    "merge_branches",
    "register_context_adapter",
    "step",
]


def test_all_is_pinned():
    assert sorted(caudal.__all__) == PUBLIC
    assert len(set(caudal.__all__)) == len(caudal.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_importable(name):
    module = importlib.import_module("caudal")
    value = getattr(module, name)
    assert value is not None
    exec(f"from caudal import {name}", {})  # the statement users write


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "__version__"])
def test_every_public_name_is_documented(name):
    doc = getattr(caudal, name).__doc__
    assert isinstance(doc, str) and doc.strip(), f"caudal.{name} has no docstring"


def test_version_is_a_string():
    assert isinstance(caudal.__version__, str) and caudal.__version__


def test_dir_lists_the_lazy_names():
    assert {"SqliteStore", "PostgresStore"} <= set(dir(caudal))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        caudal.NoSuchThing  # noqa: B018
