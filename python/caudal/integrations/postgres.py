"""PostgresStore: checkpoints in PostgreSQL (psycopg 3, async), for runs
resumed or inspected from other machines. ``pip install 'caudal[postgres]'``.

Imported only when a store is a ``postgresql://`` URI or the user imports
it; psycopg itself is imported when the store first connects."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from caudal.errors import CheckpointError, RunNotFoundError
from caudal.pipeline.stores.base import (
    _RUN_COLUMNS,
    _STEP_COLUMNS,
    CheckpointStore,
    RunInfo,
    StepCheckpoint,
    StoredRun,
    _info_from_row,
    _settle_all,
)

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS caudal_runs (
  run_id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  input BYTEA,
  context BYTEA,
  definition TEXT,
  error TEXT,
  resumes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS caudal_steps (
  run_id TEXT NOT NULL REFERENCES caudal_runs(run_id) ON DELETE CASCADE,
  step TEXT NOT NULL,
  status TEXT NOT NULL,
  seq INTEGER NOT NULL,
  payload BYTEA,
  started_at DOUBLE PRECISION,
  finished_at DOUBLE PRECISION,
  latency_s DOUBLE PRECISION,
  attempts INTEGER,
  cache_hit BOOLEAN,
  error TEXT,
  tokens BIGINT,
  cost_usd DOUBLE PRECISION,
  PRIMARY KEY (run_id, step)
);
"""

_PG_UPSERT_STEP = (
    f"INSERT INTO caudal_steps (run_id, {_STEP_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (run_id, step) DO UPDATE SET status=EXCLUDED.status, seq=EXCLUDED.seq, "
    "payload=EXCLUDED.payload, started_at=EXCLUDED.started_at, "
    "finished_at=EXCLUDED.finished_at, latency_s=EXCLUDED.latency_s, "
    "attempts=EXCLUDED.attempts, cache_hit=EXCLUDED.cache_hit, error=EXCLUDED.error, "
    "tokens=EXCLUDED.tokens, cost_usd=EXCLUDED.cost_usd"
)

# Any fixed number: serialises schema creation between processes.
_PG_SCHEMA_LOCK = 0x63617564616C


class PostgresStore(CheckpointStore):
    """Checkpoints in PostgreSQL (psycopg 3, async), for runs started on one
    machine and resumed or inspected from another.

    ``dsn``: a libpq connection string or URI. The tables (``caudal_runs``,
    ``caudal_steps``) are created on first use. One connection per store;
    checkpoints are group-committed by a writer task (see the module
    docstring). A store belongs to the event loop that first used it.

    Trust: the database is shared, so a pickle read from it could run
    anyone's code. With ``secret`` (or ``$CAUDAL_CHECKPOINT_SECRET``; at least
    16 bytes, the same in every process that resumes the runs) every payload
    is tagged and verified before it is decoded. Without one only
    JSON-representable values are checkpointed: writing a pickle is refused
    (CheckpointError, which fails the run) and so is reading one.
    """

    def __init__(
        self, dsn: str, *, group_commit: bool = True, secret: bytes | str | None = None
    ) -> None:
        self._set_secret(secret)
        self.dsn = dsn
        self.group_commit = group_commit
        self._conn: Any = None
        self._lock: asyncio.Lock | None = None
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None
        self.transactions = 0

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # the DSN may hold a password

    async def _connection(self) -> Any:
        if self._conn is None:
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - an install problem
                raise CheckpointError(
                    "PostgresStore needs psycopg 3: pip install 'psycopg[binary]'"
                ) from exc
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._conn is None:
                    try:
                        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                    except psycopg.Error as exc:
                        raise CheckpointError(f"cannot connect to PostgreSQL: {exc}") from exc
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                        await conn.execute(_PG_SCHEMA)
                    self._conn = conn
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        conn = await self._connection()
        assert self._lock is not None
        async with self._lock:
            return await fn(conn, *args)

    async def save_step(self, run_id: str, cp: StepCheckpoint) -> None:
        await self._connection()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((cp.row(run_id), fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        await fut

    async def _write_pending(self) -> None:
        import psycopg

        while self._pending:
            if self.group_commit:
                batch, self._pending = self._pending, []
            else:
                batch, self._pending = self._pending[:1], self._pending[1:]
            try:
                assert self._lock is not None
                async with self._lock:
                    conn = self._conn
                    if conn is None:
                        raise CheckpointError(f"{self!r} is closed")
                    async with conn.transaction():
                        async with conn.cursor() as cur:
                            await cur.executemany(_PG_UPSERT_STEP, [row for row, _ in batch])
                self.transactions += 1
                exc = None
            except (psycopg.Error, CheckpointError) as e:
                exc = CheckpointError(f"checkpoint write to PostgreSQL failed: {e}")
            except BaseException:
                # Cancelled mid-write: whether it committed is unknown, so
                # the waiters (and anything queued behind them) fail.
                lost = [f for _, f in batch] + [f for _, f in self._pending]
                self._pending = []
                _settle_all(lost, CheckpointError("checkpoint write interrupted"))
                raise
            _settle_all([f for _, f in batch], exc)

    async def start_run(self, info: RunInfo) -> None:
        import psycopg

        async def q(conn: Any) -> None:
            now = time.time()
            try:
                await conn.execute(
                    f"INSERT INTO caudal_runs ({_RUN_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        info.run_id,
                        info.pipeline,
                        info.status,
                        info.created_at or now,
                        now,
                        info.input,
                        info.context,
                        json.dumps(info.definition) if info.definition is not None else None,
                        info.error,
                        info.resumes,
                    ),
                )
            except psycopg.errors.UniqueViolation:
                raise CheckpointError(f"run {info.run_id!r} already exists") from None

        await self._run(q)

    async def mark_resumed(self, run_id: str) -> None:
        async def q(conn: Any) -> None:
            cur = await conn.execute(
                "UPDATE caudal_runs SET status='running', resumes=resumes+1, updated_at=%s, "
                "error=NULL WHERE run_id=%s",
                (time.time(), run_id),
            )
            if cur.rowcount == 0:
                raise RunNotFoundError(f"no run {run_id!r} in this store")

        await self._run(q)

    async def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        async def q(conn: Any) -> None:
            await conn.execute(
                "UPDATE caudal_runs SET status=%s, error=%s, updated_at=%s WHERE run_id=%s",
                (status, error, time.time(), run_id),
            )

        await self._run(q)

    async def load_run(self, run_id: str) -> StoredRun:
        async def q(conn: Any) -> StoredRun:
            cur = await conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM caudal_runs WHERE run_id=%s", (run_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in this store")
            cur = await conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM caudal_steps WHERE run_id=%s ORDER BY seq",
                (run_id,),
            )
            steps = {r[0]: StepCheckpoint.from_row(r) for r in await cur.fetchall()}
            return StoredRun(_info_from_row(row), steps)

        return await self._run(q)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        async def q(conn: Any) -> list[RunInfo]:
            cur = await conn.execute(
                "SELECT run_id, pipeline, status, created_at, updated_at, NULL, NULL, "
                "definition, error, resumes FROM caudal_runs ORDER BY created_at DESC LIMIT %s",
                (limit,),
            )
            return [_info_from_row(r) for r in await cur.fetchall()]

        return await self._run(q)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await self._writer
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


__all__ = ["PostgresStore"]
