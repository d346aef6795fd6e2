"""The old module paths work for one more release: each is a small alias of
its new module that warns (DeprecationWarning naming the new path) and
exposes the same names."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

SHIMS = [
    ("caudal.recorder", "caudal._executor.recorder", "quantile_ms"),
    ("caudal.prometheus", "caudal.integrations.prometheus", "BUCKETS"),
    ("caudal.plots", "caudal.integrations.plots", "plot_gantt"),
    # old path, new path, a private name code reached for through the old path
    ("caudal.cache_redis", "caudal.integrations.redis", "_Conn"),
    ("caudal.checkpoints", "caudal.pipeline.stores", "_sqlite_start_run"),
    ("caudal.yaml_pipeline", "caudal.pipeline.yaml", "_STEP_FIELDS"),
    ("caudal._pipeline_context", "caudal.pipeline.context", "_same"),
    ("caudal.backends", "caudal._backends", "_INSTALL_HINT"),
    ("caudal.backends.ray", "caudal.integrations.ray", "_run_here"),
]


def _fresh_import(name: str):
    for m in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[m]
    parent = name.rpartition(".")[0]
    if parent == "caudal.backends":  # itself an alias, which warns on its own
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            importlib.import_module(parent)
    return importlib.import_module(name)


@pytest.mark.parametrize(("old", "new", "private"), SHIMS)
def test_old_path_warns_and_names_the_new_one(old, new, private):
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: import from {new}"):
        _fresh_import(old)


@pytest.mark.parametrize(("old", "new", "private"), SHIMS)
def test_old_path_exposes_the_same_names(old, new, private):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        shim = _fresh_import(old)
    target = importlib.import_module(new)
    assert list(shim.__all__) == list(target.__all__)
    for name in target.__all__:
        assert getattr(shim, name) is getattr(target, name), name
    assert getattr(shim, private) is not None
    with pytest.raises(AttributeError):
        shim.no_such_name  # noqa: B018


def test_old_checkpoint_store_names_are_the_new_classes():
    from caudal.integrations.postgres import PostgresStore
    from caudal.pipeline.stores.sqlite import SqliteStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        shim = _fresh_import("caudal.checkpoints")
    assert shim.SqliteStore is SqliteStore
    assert shim.PostgresStore is PostgresStore


def test_opentelemetry_exporter_old_path_warns():
    import caudal.telemetry
    from caudal.integrations.otel import OpenTelemetryExporter

    with pytest.warns(DeprecationWarning, match="import it from caudal.integrations.otel"):
        old = caudal.telemetry.OpenTelemetryExporter
    assert old is OpenTelemetryExporter
    with pytest.raises(AttributeError):
        caudal.telemetry.NoSuchExporter  # noqa: B018


def test_cli_and_pipeline_keep_their_paths():
    # caudal.cli and caudal.pipeline became packages under the same names:
    # nothing to alias, nothing warns.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from caudal.cli import main
        from caudal.pipeline import Pipeline, current_run

    assert callable(main) and Pipeline and current_run


def test_flujos_executor_path_is_stable():
    # flujo's flujo.application.core.executor_core becomes
    # caudal.executor_core: a documented path, not deprecated.
    import caudal

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        mod = _fresh_import("caudal.executor_core")
    for name in mod.__all__:
        if name == "ExecutorCore":
            # caudal's executor with flujo's behaviour for flujo's steps
            assert issubclass(mod.ExecutorCore, caudal.ExecutorCore)
            continue
        assert getattr(mod, name) is getattr(caudal, name), name
