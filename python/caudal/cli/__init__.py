"""The ``caudal`` command (``python -m caudal.cli``): run, resume, inspect and
validate YAML pipelines. The commands are in :mod:`caudal.cli.main`; what
they print in :mod:`caudal.cli.output`; where a run runs (executor, backend,
cache tier, what resume reuses) in :mod:`caudal.cli.where`."""

from caudal.cli.main import main

__all__ = ["main"]
