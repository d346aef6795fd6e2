"""Checkpoint stores: where pipeline runs and their completed steps are kept.

A pipeline stores each step's completion and waits until the store says it is
durable **before** any dependent of that step starts; after a crash,
``Pipeline.resume(run_id)`` restores every completed step from here and runs
only the rest. What a store promises and how payloads are encoded and
trusted: :mod:`caudal.pipeline.stores.base`.

- :class:`SqliteStore` (the default; :mod:`caudal.pipeline.stores.sqlite`)
- :class:`MemoryStore` (:mod:`caudal.pipeline.stores.memory`)
- :class:`PostgresStore` (:mod:`caudal.integrations.postgres`)

``SqliteStore`` and ``PostgresStore`` are loaded on first use, so importing
caudal loads neither ``sqlite3`` nor psycopg.
"""

from __future__ import annotations

import os
from typing import Any

from caudal.pipeline.stores.base import (
    DEFAULT_STORE_PATH,
    SECRET_ENV,
    CheckpointStore,
    RunInfo,
    StepCheckpoint,
    StoredRun,
)
from caudal.pipeline.stores.memory import MemoryStore


def __getattr__(name: str) -> Any:
    """``SqliteStore`` and ``PostgresStore``, imported when first asked for."""
    if name == "SqliteStore":
        from caudal.pipeline.stores.sqlite import SqliteStore

        return SqliteStore
    if name == "PostgresStore":
        from caudal.integrations.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def open_store(spec: Any) -> tuple[CheckpointStore | None, bool]:
    """``(store, owned)`` for a ``store=`` argument: a CheckpointStore as is;
    False for none; None for the default SQLite file ($CAUDAL_STORE or
    .caudal/checkpoints.db); a ``postgres://``/``postgresql://`` URI for
    PostgresStore; any other str or path for a SqliteStore there. ``owned``
    says whether the caller opened it (and so closes it)."""
    if spec is False:
        return None, False
    if isinstance(spec, CheckpointStore):
        return spec, False
    if spec is None:
        spec = os.environ.get("CAUDAL_STORE") or DEFAULT_STORE_PATH
    if isinstance(spec, str) and spec.startswith(("postgres://", "postgresql://")):
        from caudal.integrations.postgres import PostgresStore

        return PostgresStore(spec), True
    if isinstance(spec, str | os.PathLike):
        from caudal.pipeline.stores.sqlite import SqliteStore

        return SqliteStore(spec), True
    raise TypeError(
        f"store must be a CheckpointStore, a path, a postgresql:// URI, None or False; got {spec!r}"
    )


__all__ = [
    "DEFAULT_STORE_PATH",
    "SECRET_ENV",
    "CheckpointStore",
    "MemoryStore",
    "PostgresStore",
    "RunInfo",
    "SqliteStore",
    "StepCheckpoint",
    "StoredRun",
    "open_store",
]
