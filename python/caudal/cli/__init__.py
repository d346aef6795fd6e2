"""The ``caudal`` command (``python -m caudal.cli``): run, resume, inspect and
validate YAML pipelines. The commands are in :mod:`caudal.cli.main`."""

from caudal.cli.main import main

__all__ = ["main"]
