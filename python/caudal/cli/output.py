"""What the ``caudal`` command prints: a run's outcome (text or JSON), the
progress bar, a pipeline's problems."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from caudal.errors import PipelineDefinitionError
from caudal.pipeline.yaml.build import RESOLVER_MISSING


def problems_of(exc: PipelineDefinitionError) -> list[str]:
    """The problems of a pipeline, as the CLI names its own flags."""
    return [
        line.replace(RESOLVER_MISSING, "<AUTO> tags need a resolver: give --resolver module:attr")
        for line in exc.problems
    ]


def json_text(value: Any) -> str:
    return json.dumps(value, default=repr, sort_keys=False)


class Progress:
    """tqdm bar on stderr when it is a terminal (a plain counter without
    tqdm); nothing otherwise."""

    def __init__(self, total: int, enabled: bool, restored: int = 0) -> None:
        self.bar = None
        self.enabled = enabled and sys.stderr.isatty()
        self.total = total
        self.count = restored  # steps a resume restored from checkpoints
        if self.enabled:
            try:
                from tqdm import tqdm

                try:
                    width = os.get_terminal_size(sys.stderr.fileno()).columns
                except OSError:
                    width = 0
                self.bar = tqdm(
                    total=total,
                    initial=restored,
                    unit="step",
                    file=sys.stderr,
                    leave=False,
                    # A terminal that reports no size (0 x 0): tqdm draws
                    # nothing unless given both.
                    ncols=None if width > 0 else 80,
                    nrows=None if width > 0 else 24,
                )
            except ImportError:
                self.bar = None

    def __call__(self, rec: Any) -> None:
        if not self.enabled:
            return
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rec.name}: {rec.status}", refresh=False)
            self.bar.update(1)
        else:
            sys.stderr.write(f"\r{self.count}/{self.total} steps ({rec.name}: {rec.status})")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def report(run: Any, as_json: bool) -> int:
    if as_json:
        print(
            json_text(
                {
                    "run_id": run.run_id,
                    "status": run.status,
                    "result": run.result if run.status == "completed" else None,
                    "error": None
                    if run.error is None
                    else f"{type(run.error).__name__}: {run.error}",
                    "tokens": run.total_tokens,
                    "cost_usd": run.total_cost_usd,
                    "steps": {n: r.as_dict() for n, r in run.steps.items()},
                }
            )
        )
    else:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(run.counts().items()))
        print(f"run {run.run_id}: {run.status} in {run.duration_s:.3f} s ({counts})")
        if run.total_tokens or run.total_cost_usd:
            print(f"usage: {run.total_tokens} tokens, ${run.total_cost_usd:.6f}")
        if run.status == "completed":
            print(f"result: {json_text(run.result)}")
        else:
            for r in run.steps.values():
                if r.status == "failed" and not r.optional:
                    print(f"step {r.name} failed: {r.error}")
            if run.error is not None and not any(r.status == "failed" for r in run.steps.values()):
                print(f"error: {type(run.error).__name__}: {run.error}")
    return 0 if run.status == "completed" else 1
