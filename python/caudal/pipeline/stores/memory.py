"""MemoryStore: checkpoints kept in this process, for tests and for runs that
need resume-after-failure (not after a crash) without a file."""

from __future__ import annotations

import time

from caudal.errors import CheckpointError, RunNotFoundError
from caudal.pipeline.stores.base import (
    CheckpointStore,
    RunInfo,
    StepCheckpoint,
    StoredRun,
)


class MemoryStore(CheckpointStore):
    """Checkpoints in a dict: resume after a failure in the same process.
    Local: pickles are stored without a secret (``secret=``, or
    ``$CAUDAL_CHECKPOINT_SECRET``, still tags and verifies everything)."""

    local_pickles = True

    def __init__(self, *, secret: bytes | str | None = None) -> None:
        self._set_secret(secret)
        self._runs: dict[str, StoredRun] = {}

    async def start_run(self, info: RunInfo) -> None:
        if info.run_id in self._runs:
            raise CheckpointError(f"run {info.run_id!r} already exists")
        self._runs[info.run_id] = StoredRun(info)

    def _get(self, run_id: str) -> StoredRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(f"no run {run_id!r} in this store") from None

    async def mark_resumed(self, run_id: str) -> None:
        r = self._get(run_id)
        r.info.status, r.info.resumes, r.info.updated_at = (
            "running",
            r.info.resumes + 1,
            time.time(),
        )

    async def save_step(self, run_id: str, cp: StepCheckpoint) -> None:
        self._get(run_id).steps[cp.step] = cp

    async def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        r = self._get(run_id)
        r.info.status, r.info.error, r.info.updated_at = status, error, time.time()

    async def load_run(self, run_id: str) -> StoredRun:
        r = self._get(run_id)
        return StoredRun(r.info, dict(r.steps))

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        runs = sorted(self._runs.values(), key=lambda r: r.info.created_at, reverse=True)
        return [r.info for r in runs[:limit]]


__all__ = ["MemoryStore"]
