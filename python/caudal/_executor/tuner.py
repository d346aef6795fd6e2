"""Automatic optimization, the Python side: it schedules an analysis on
the event loop every ``optimization_analysis_interval_seconds`` and applies
the config the analysis plans. The decisions — the recommendation rules and
the hysteresis that keeps the config from oscillating (cool-downs,
reversals that must persist, bounds, no cache raise under memory pressure,
a cache raise only after the last one paid) — are native:
cpp/caudal/monitor/tuner.h, where each rule is documented
(docs/monitoring.md, "Automatic optimization").

The clock is native and costs nothing per execution: the executor's
housekeeping notes "analysis due" (one relaxed atomic), the next ``_start``
on the loop thread sees it and calls the hook installed here, which
schedules :meth:`Tuner.analyse` with ``loop.call_soon`` — so the config
swap (which may wake asyncio futures) happens on the event loop thread,
never in the middle of an execution's native call.

The rule constants below are the core's (``caudal._core.TUNER_RULES``); a
Tuner is made with the values they have when it is made.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING, Any

from caudal import _core
from caudal._executor.stats import optimization_stats
from caudal.errors import CaudalError

if TYPE_CHECKING:
    from caudal._executor.core import ExecutorCore
    from caudal._executor.stats import MonitorView

COOLDOWN: int = _core.TUNER_RULES["cooldown"]
REVERSAL_PERSISTENCE: int = _core.TUNER_RULES["reversal_persistence"]
REVERSAL_COOLDOWN: int = _core.TUNER_RULES["reversal_cooldown"]
CACHE_MIN_GAIN: float = _core.TUNER_RULES["cache_min_gain"]
CACHE_WORKLOAD_CHANGE: float = _core.TUNER_RULES["cache_workload_change"]
HISTORY: int = _core.TUNER_HISTORY  # changes kept in stats
_STALE_S = 5.0  # a scheduled analysis not run by then was lost with its loop

# The fields automatic optimization may change, and their bounds.
BOUNDS: dict[str, tuple[Any, Any]] = dict(_core.TUNED_BOUNDS)


class Tuner:
    """One per executor: the native tuner (its decisions and memory) plus
    the scheduling state. Analyses run one at a time, on an event loop's
    thread or from run_optimization_analysis."""

    def __init__(self) -> None:
        self._native = _core.Tuner(
            cooldown=COOLDOWN,
            reversal_persistence=REVERSAL_PERSISTENCE,
            reversal_cooldown=REVERSAL_COOLDOWN,
            cache_min_gain=CACHE_MIN_GAIN,
            cache_workload_change=CACHE_WORKLOAD_CHANGE,
        )
        # When an analysis was handed to a loop and has not run yet (None:
        # none pending). A pending one older than _STALE_S was lost with its
        # loop (closed before running it): the next due time schedules anew.
        self._scheduled: float | None = None

    # ------------------------------------------------------------ driver
    @staticmethod
    def hook(executor: ExecutorCore) -> Any:
        """The engine's analysis hook: holds the executor weakly (the engine
        is owned by the executor)."""
        ref = weakref.ref(executor)

        def due() -> None:
            ex = ref()
            if ex is None:
                return
            tuner = ex._monitor_view().tuner
            pending = tuner._scheduled
            if pending is not None and time.monotonic() - pending < _STALE_S:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not on a loop: the next execution on one will tell
            tuner._scheduled = time.monotonic()
            loop.call_soon(_scheduled, ref)

        return due

    # ---------------------------------------------------------- analysis
    def analyse(self, view: MonitorView, dry_run: bool = False) -> list[dict[str, Any]]:
        """One analysis: the native plan over the stats now, applied with
        the validated swap (unless dry_run). Returns the changes (applied,
        or that would be)."""

        cfg = view.config
        planned = self._native.plan(optimization_stats(view), cfg, view.own_pool, dry_run)
        if dry_run:
            return planned
        error = None
        if planned:
            next_cfg = cfg.copy()
            for c in planned:
                setattr(next_cfg, c["field"], c["new"])
            try:
                view.apply(next_cfg)
            except (CaudalError, ValueError, TypeError) as exc:
                error = str(exc)
        applied = self._native.commit(error, view.engine.now_ns())  # the executor's clock
        for c in applied:
            view.engine._publish_event(
                "optimization_applied",
                c["field"],
                float(c["new"]),
                float(c["old"]),
                c["reason"][:200],
            )
        return applied

    def recommend(self, stats: dict[str, Any], cfg: Any, own_pool: bool) -> list[dict[str, Any]]:
        """The recommendations over ``stats``, judged since the last analysis."""
        return self._native.recommend(stats, cfg, own_pool)

    @property
    def marks(self) -> dict[str, Any] | None:
        """The counters at the last analysis (None before the first)."""
        return self._native.marks

    def stats(self, cfg: Any) -> dict[str, Any]:
        """stats["automatic_optimization"]."""
        return self._native.stats(cfg)


def _scheduled(ref: weakref.ref) -> None:
    ex = ref()
    if ex is None:
        return
    view = ex._monitor_view()
    view.tuner._scheduled = None
    if not view.config.enable_automatic_optimization:
        return  # turned off after it was due
    view.tuner.analyse(view)
