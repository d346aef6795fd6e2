"""SqliteStore, the default checkpoint store: one file, stdlib ``sqlite3`` in
WAL mode with ``synchronous=NORMAL`` (a commit survives the process being
killed; only an OS crash or power loss can drop the last commits).

Two paths to disk, one durability: a checkpoint is acknowledged only once
its transaction has committed, at the store's ``synchronous`` level.

- A lone checkpoint (the pipeline has nothing else running or ready, as in
  a chain) whose commit is cheap is written on the calling thread
  (``save_step_now``): handing it to a thread costs two thread switches,
  more than the commit itself at ``synchronous=NORMAL``. "Cheap" is a
  running average of recent commit times under ``inline_max_s``; that
  connection never waits for a lock (another process writing: the
  checkpoint goes to the writer thread, which does) and never checkpoints
  the WAL (the writer thread does that, every 1,000 such commits).
  A run's header (start, resume, finish: one statement each) is written
  the same way.
- Everything else (concurrent branches, slow commits, reads) goes to one
  dedicated writer thread, so the event loop never
  waits on it; checkpoints queued while a transaction commits go into the
  next one (group commit, caudal.pipeline.stores.base)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
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
    _settle,
    _settle_all,
)

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS caudal_runs (
  run_id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  input BLOB,
  context BLOB,
  definition TEXT,
  error TEXT,
  resumes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS caudal_steps (
  run_id TEXT NOT NULL,
  step TEXT NOT NULL,
  status TEXT NOT NULL,
  seq INTEGER NOT NULL,
  payload BLOB,
  started_at REAL,
  finished_at REAL,
  latency_s REAL,
  attempts INTEGER,
  cache_hit INTEGER,
  error TEXT,
  tokens INTEGER,
  cost_usd REAL,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
"""

_SQLITE_UPSERT_STEP = (
    f"INSERT OR REPLACE INTO caudal_steps (run_id, {_STEP_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_STOP = object()
#: Commits made on the calling thread between two WAL checkpoints (run by
#: the writer thread, so the loop never waits for one). A checkpoint
#: commit writes a page or two: about SQLite's own cadence (1,000 pages).
_WAL_CHECKPOINT_EVERY = 1000
#: Weight of the newest commit time in the running average of commit
#: times, each counted as at most twice ``inline_max_s``: one commit stalled
#: by a descheduled thread moves it little, a disk that stays slow (a flush
#: per commit under synchronous=FULL) moves it over the limit within ~10.
_EWMA_WEIGHT = 0.0625


class SqliteStore(CheckpointStore):
    """Checkpoints in a SQLite file (created with its folders if missing).

    A dedicated writer thread runs every statement, except a lone
    checkpoint whose commit is cheap, which is committed on the calling
    thread (see the module docstring; ``inline_max_s=0`` sends every
    checkpoint to the thread). WAL journal, ``synchronous=NORMAL`` by
    default (``synchronous="FULL"`` also fsyncs every commit, surviving
    power loss at a cost of a disk flush per transaction). ``group_commit``
    (default True): see caudal.pipeline.stores.base.
    Several processes may share the file (SQLite locks it; ``busy_timeout_s``
    bounds the wait).

    Trust: the file is this process's own (like its code), so without a
    secret it stores and loads pickles; with ``secret=`` (or
    ``$CAUDAL_CHECKPOINT_SECRET``) every payload is tagged and one that does
    not verify is refused (see caudal.pipeline.stores.base).
    """

    local_pickles = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        group_commit: bool = True,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
        secret: bytes | str | None = None,
        inline_max_s: float = 0.001,
    ) -> None:
        self._set_secret(secret)
        if not inline_max_s >= 0:
            raise ValueError(f"SqliteStore: inline_max_s must be >= 0, got {inline_max_s!r}")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(
                f"SqliteStore: synchronous must be NORMAL or FULL, got {synchronous!r}"
            )
        self.path = Path(path)
        self.group_commit = group_commit
        self._synchronous = synchronous.upper()
        self._busy_ms = int(busy_timeout_s * 1000)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.transactions = 0  # checkpoint transactions committed (for benchmarks)
        self.inline_max_s = inline_max_s
        # The calling thread's connection, and the lock that keeps it and
        # the writer thread's from writing at once (the writer holds it for
        # each batch; the calling thread only tries it).
        self._inline: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._commit_s = 0.0  # running average of commit times (both paths)
        self._inline_commits = 0
        self.inline_transactions = 0  # of `transactions`, made on the calling thread

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # The writer thread ------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._closed:
                raise CheckpointError(f"{self!r} is closed")
            if self._thread is None:
                ready: queue.SimpleQueue = queue.SimpleQueue()
                t = threading.Thread(
                    target=self._writer, args=(ready,), name="caudal-sqlite", daemon=True
                )
                t.start()
                err = ready.get()
                if err is not None:
                    t.join()
                    raise CheckpointError(f"cannot open checkpoint store {self.path}: {err}")
                self._thread = t

    def _open(self, *, inline: bool = False) -> sqlite3.Connection:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        if inline:
            # Never wait for a lock on the calling thread, never checkpoint
            # the WAL there.
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            return conn
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"WAL journal mode refused (got {mode})")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.executescript(_SQLITE_SCHEMA)
        return conn

    def _writer(self, ready: queue.SimpleQueue) -> None:
        conn = None
        try:
            conn = self._open()
            if self.inline_max_s > 0:
                self._inline = self._open(inline=True)
        except Exception as exc:
            if conn is not None:
                conn.close()
            ready.put(exc)
            return
        ready.put(None)
        q = self._queue
        try:
            while True:
                item = q.get()
                if item is _STOP:
                    return
                batch = [item]
                if self.group_commit:
                    while True:
                        try:
                            nxt = q.get_nowait()
                        except queue.Empty:
                            break
                        if nxt is _STOP:
                            q.put(_STOP)  # finish this batch, then stop
                            break
                        batch.append(nxt)
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> None:
        # Consecutive checkpoint writes share one transaction; anything else
        # runs on its own, in order.
        i = 0
        while i < len(batch):
            j = i
            while j < len(batch) and batch[j][0] is None:
                j += 1
            if j > i:
                self._commit_checkpoints(conn, batch[i:j])
                i = j
                continue
            fn, args, loop, fut = batch[i]
            # Under the lock too for a WAL checkpoint: one that a writer
            # keeps appending to never completes, and the WAL only starts
            # over after a complete one.
            with self._write_lock:
                try:
                    res, exc = fn(conn, *args), None
                except Exception as e:
                    res, exc = None, e
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            if loop is not None:
                loop.call_soon_threadsafe(_settle, fut, res, exc)
            i += 1

    def _commit_checkpoints(self, conn: sqlite3.Connection, items: list) -> None:
        with self._write_lock:
            exc = self._write_checkpoints(conn, items)
        # One wake-up per loop for the whole batch (the lock released first,
        # so the woken loop finds it free).
        by_loop: dict[Any, list] = {}
        for _, _, loop, fut in items:
            by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, futs, exc)

    def _write_checkpoints(self, conn: sqlite3.Connection, items: list) -> Exception | None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            t0 = time.perf_counter()  # the write and commit, not waiting for the lock
            conn.executemany(_SQLITE_UPSERT_STEP, [it[1] for it in items])
            conn.execute("COMMIT")
            self._observe(time.perf_counter() - t0)
            self.transactions += 1
            exc = None
        except Exception as e:
            exc = CheckpointError(f"checkpoint write to {self.path} failed: {e}")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return exc

    async def _call(self, fn: Any, *args: Any) -> Any:
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((fn, args, loop, fut))
        return await fut

    def _observe(self, commit_s: float) -> None:
        sample = min(commit_s, 2 * self.inline_max_s)
        self._commit_s += (sample - self._commit_s) * _EWMA_WEIGHT

    # The interface ----------------------------------------------------
    def save_step_now(self, run_id: str, cp: StepCheckpoint) -> bool:
        """Commit ``cp`` on the calling thread if that is cheap: the recent
        commits took under ``inline_max_s`` on average, the writer thread
        is not writing, and no other process holds the write lock. True:
        committed (durable at the store's ``synchronous`` level); False:
        nothing written, use ``save_step``. (Rows the writer thread has
        queued belong to other steps, whose order does not matter: a
        dependent's checkpoint is never queued before its dependency's has
        committed.)"""
        conn = self._inline
        if (
            conn is None
            or self._commit_s >= self.inline_max_s
            or not self._write_lock.acquire(False)
        ):
            return False
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                t0 = time.perf_counter()
                conn.execute(_SQLITE_UPSERT_STEP, cp.row(run_id))
                conn.execute("COMMIT")
            except sqlite3.Error:
                # Locked by another process, or failing: the writer thread
                # waits for the lock and reports the failure.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                return False
            self._observe(time.perf_counter() - t0)
            self.transactions += 1
            self.inline_transactions += 1
        finally:
            self._write_lock.release()
        self._inline_commits += 1
        if self._inline_commits % _WAL_CHECKPOINT_EVERY == 0:
            # Fire and forget: the writer folds the WAL into the database.
            self._queue.put((_sqlite_wal_checkpoint, (), None, None))
        return True

    async def save_step(self, run_id: str, cp: StepCheckpoint) -> None:
        if self._thread is None:
            self._ensure_thread()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((None, cp.row(run_id), loop, fut))
        await fut

    def _write_now(self, fn: Any, *args: Any) -> bool:
        """Run the one-statement write ``fn`` on the calling thread when
        commits are cheap and nothing else writes (as save_step_now): True
        when done (its own errors raised), False when it must go to the
        writer thread."""
        conn = self._inline
        if (
            conn is None
            or self._commit_s >= self.inline_max_s
            or not self._write_lock.acquire(False)
        ):
            return False
        try:
            fn(conn, *args)
        except sqlite3.OperationalError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return False  # locked by another process: the writer waits
        finally:
            self._write_lock.release()
        return True

    async def start_run(self, info: RunInfo) -> None:
        self._ensure_thread()
        if not self._write_now(_sqlite_start_run, info):
            await self._call(_sqlite_start_run, info)

    async def mark_resumed(self, run_id: str) -> None:
        self._ensure_thread()
        if not self._write_now(_sqlite_mark_resumed, run_id):
            await self._call(_sqlite_mark_resumed, run_id)

    async def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        self._ensure_thread()
        if not self._write_now(_sqlite_finish_run, run_id, status, error):
            await self._call(_sqlite_finish_run, run_id, status, error)

    async def load_run(self, run_id: str) -> StoredRun:
        return await self._call(_sqlite_load_run, run_id)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        return await self._call(_sqlite_list_runs, limit)

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            t, self._thread = self._thread, None
        if t is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(t.join)
        with self._write_lock:
            inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()


def _sqlite_start_run(conn: sqlite3.Connection, info: RunInfo) -> None:
    now = time.time()
    try:
        conn.execute(
            f"INSERT INTO caudal_runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    except sqlite3.IntegrityError:
        raise CheckpointError(f"run {info.run_id!r} already exists") from None


def _sqlite_wal_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _sqlite_mark_resumed(conn: sqlite3.Connection, run_id: str) -> None:
    cur = conn.execute(
        "UPDATE caudal_runs SET status='running', resumes=resumes+1, updated_at=?, error=NULL "
        "WHERE run_id=?",
        (time.time(), run_id),
    )
    if cur.rowcount == 0:
        raise RunNotFoundError(f"no run {run_id!r} in this store")


def _sqlite_finish_run(
    conn: sqlite3.Connection, run_id: str, status: str, error: str | None
) -> None:
    conn.execute(
        "UPDATE caudal_runs SET status=?, error=?, updated_at=? WHERE run_id=?",
        (status, error, time.time(), run_id),
    )


def _sqlite_load_run(conn: sqlite3.Connection, run_id: str) -> StoredRun:
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM caudal_runs WHERE run_id=?", (run_id,)
    ).fetchone()
    if row is None:
        raise RunNotFoundError(f"no run {run_id!r} in this store")
    steps = {
        r[0]: StepCheckpoint.from_row(r)
        for r in conn.execute(
            f"SELECT {_STEP_COLUMNS} FROM caudal_steps WHERE run_id=? ORDER BY seq", (run_id,)
        )
    }
    return StoredRun(_info_from_row(row), steps)


def _sqlite_list_runs(conn: sqlite3.Connection, limit: int) -> list[RunInfo]:
    rows = conn.execute(
        "SELECT run_id, pipeline, status, created_at, updated_at, NULL, NULL, definition, "
        "error, resumes FROM caudal_runs ORDER BY created_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_info_from_row(r) for r in rows]


__all__ = ["SqliteStore"]
