"""Automatic optimization: applies the automatic recommendations
(caudal._stats.recommend) every ``optimization_analysis_interval_seconds``,
with hysteresis so that it never oscillates (docs/monitoring.md,
"Automatic optimization").

The clock is native and costs nothing per execution: the executor's
housekeeping notes "analysis due" (one relaxed atomic), the next ``_begin``
on the loop thread sees it and calls the hook installed here, which
schedules :meth:`Tuner.analyse` with ``loop.call_soon`` — so the config
swap (which may wake asyncio futures) happens on the event loop thread,
never in the middle of an execution's native call.

Hysteresis, per config field:

- a change starts a cooldown of ``COOLDOWN`` analyses during which the
  field does not change again;
- a change in the opposite direction of the field's last change (a
  reversal) needs its condition in ``REVERSAL_PERSISTENCE`` consecutive
  analyses, and starts a cooldown of ``REVERSAL_COOLDOWN``;
- values stay in ``BOUNDS``; a change that the bound would turn around (or
  cancel) is not made;
- a cache is never raised while memory pressure is above normal;
- a cache is raised again only if its last raise paid: the hit rate
  measured since then must beat the one that led to the raise by
  ``CACHE_MIN_GAIN``. Inputs that never come back once evicted (each asked
  a few times in a row, then never again) keep the same hit rate at any
  size, so they get one raise, not a doubling every analysis. The verdict
  lasts until the hit rate moves by more than ``CACHE_WORKLOAD_CHANGE``
  from the one it was reached at (the workload changed), or until
  cache_max_size changes for another reason.

Counted in analyses, not seconds, so the rules hold for any interval.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from caudal.errors import CaudalError

if TYPE_CHECKING:
    from caudal.executor_core import ExecutorCore

COOLDOWN = 3
REVERSAL_PERSISTENCE = 3
REVERSAL_COOLDOWN = 6
HISTORY = 100  # changes kept in stats
CACHE_MIN_GAIN = 0.02  # hit rate a cache raise must add before the next one
CACHE_WORKLOAD_CHANGE = 0.10  # hit rate move that lifts a "raise did not pay"
_STALE_S = 5.0  # a scheduled analysis not run by then was lost with its loop

# The fields automatic optimization may change, and their bounds.
BOUNDS: dict[str, tuple[Any, Any]] = {
    "cache_max_size": (64, 1_000_000),
    "concurrency_max_limit": (1, 65_536),
    "worker_pool_queue_size": (16, 1_000_000),
    "telemetry_sampling_rate": (0.01, 1.0),
    "enable_circuit_breaker": (False, True),
}


def _direction(old: Any, new: Any) -> int:
    return (new > old) - (new < old)


class _Field:
    __slots__ = ("cooldown", "last_analysis", "last_direction", "streak", "streak_direction")

    def __init__(self) -> None:
        self.last_analysis: int | None = None  # analysis of the last change
        self.last_direction = 0
        self.cooldown = 0
        self.streak = 0  # consecutive analyses proposing streak_direction
        self.streak_direction = 0


class Tuner:
    """One per executor. Not thread-safe by itself: analyses run on an event
    loop's thread (one at a time there), or from run_optimization_analysis."""

    def __init__(self) -> None:
        self.analyses = 0
        self.failed = 0
        self.changes: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.last: dict[str, Any] | None = None  # the last analysis' outcome
        self.marks: dict[str, Any] | None = None  # counters at the last analysis
        self._fields: dict[str, _Field] = {}
        # The last cache raise: {"from", "size", "rate"} (the hit rate that
        # led to it), "plateau" once a later analysis found it did not pay.
        self._cache_raise: dict[str, Any] | None = None
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
            pending = ex._tuner._scheduled
            if pending is not None and time.monotonic() - pending < _STALE_S:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not on a loop: the next execution on one will tell
            ex._tuner._scheduled = time.monotonic()
            loop.call_soon(_scheduled, ref)

        return due

    # ---------------------------------------------------------- analysis
    def analyse(self, executor: ExecutorCore, dry_run: bool = False) -> list[dict[str, Any]]:
        """One analysis: the automatic recommendations through the
        hysteresis rules; applies what passes (unless dry_run). Returns
        the changes (applied, or that would be)."""
        from caudal._stats import cache_hit_rate, counter_marks, optimization_stats, recommend

        engine = executor._engine
        cfg = engine.config
        stats = optimization_stats(executor)
        recs = recommend(stats, cfg, self.marks, executor._own_pool)
        rate = cache_hit_rate(stats, self.marks)
        number = self.analyses + 1
        pressure = stats["memory"]["memory_pressure_level"] != "normal"
        proposals: dict[str, tuple[Any, str]] = {}
        for r in recs:  # highest priority first: it wins a field
            act = r.get("action")
            if r["automatic"] and act and act["field"] in BOUNDS:
                proposals.setdefault(act["field"], (act["value"], r["description"]))
        held: list[dict[str, Any]] = []
        planned: list[dict[str, Any]] = []
        for field, f in self._fields.items():
            if field not in proposals:
                f.streak, f.streak_direction = 0, 0
        for field, (value, reason) in proposals.items():
            f = self._fields.get(field) or _Field()
            old = getattr(cfg, field)
            lo, hi = BOUNDS[field]
            if isinstance(old, bool):
                new: Any = bool(value)
            else:
                new = min(max(value, lo), hi)
                if isinstance(old, int):
                    new = int(new)
            want = _direction(old, value)
            if not dry_run:
                self._fields[field] = f
                if want == f.streak_direction:
                    f.streak += 1
                else:
                    f.streak, f.streak_direction = 1, want
            if dry_run:
                streak = f.streak + 1 if want == f.streak_direction else 1
            else:
                streak = f.streak
            why = None
            reversal = f.last_direction != 0 and want == -f.last_direction
            if want == 0 or _direction(old, new) != want:
                why = f"at its bound ({lo} .. {hi})"
            elif f.last_analysis is not None and number - f.last_analysis < f.cooldown:
                why = f"cooldown: changed at analysis {f.last_analysis}, {f.cooldown} analyses"
            elif reversal and streak < REVERSAL_PERSISTENCE:
                why = (
                    f"reversal: needs the condition in {REVERSAL_PERSISTENCE} consecutive "
                    f"analyses (seen in {streak})"
                )
            elif field == "cache_max_size" and want > 0 and pressure:
                why = "memory pressure: caches are not raised"
            elif field == "cache_max_size" and want > 0:
                why = self._unpaid_cache_raise(old, rate, dry_run)
            if why is not None:
                held.append({"field": field, "value": new, "reason": why})
                continue
            planned.append(
                {
                    "analysis": number,
                    "field": field,
                    "old": old,
                    "new": new,
                    "reversal": reversal,
                    "reason": reason,
                }
            )
        if dry_run:
            return planned
        self.analyses = number
        applied: list[dict[str, Any]] = []
        error = None
        if planned:
            next_cfg = cfg.copy()
            for c in planned:
                setattr(next_cfg, c["field"], c["new"])
            try:
                executor._apply(next_cfg)  # the validated swap
            except (CaudalError, ValueError, TypeError) as exc:
                self.failed += 1
                error = str(exc)
            else:
                now = time.monotonic()
                for c in planned:
                    f = self._fields[c["field"]]
                    f.last_analysis = number
                    f.last_direction = _direction(c["old"], c["new"])
                    f.cooldown = REVERSAL_COOLDOWN if c["reversal"] else COOLDOWN
                    c["time"] = now
                    if c["field"] == "cache_max_size":
                        self._cache_raise = (
                            {"from": c["old"], "size": c["new"], "rate": rate}
                            if c["new"] > c["old"] and rate is not None
                            else None
                        )
                    self.changes.append(c)
                    applied.append(c)
                    engine._publish_event(
                        "optimization_applied",
                        c["field"],
                        float(c["new"]),
                        float(c["old"]),
                        c["reason"][:200],
                    )
        self.marks = counter_marks(stats)
        self.last = {
            "analysis": number,
            "time": time.monotonic(),
            "proposed": len(proposals),
            "applied": applied,
            "held": held,
            "error": error,
        }
        return applied

    def unpaid_raise(self, size: int, rate: float | None) -> dict[str, Any] | None:
        """The last raise of cache_max_size when it did not pay, as the next
        analysis would judge it (no state changes): ``from``, ``size``,
        ``rate`` (the hit rate that led to it) and ``now``; None otherwise."""
        if self._unpaid_cache_raise(size, rate, dry_run=True) is None:
            return None
        return {**self._cache_raise, "now": rate}

    def _unpaid_cache_raise(self, size: int, rate: float | None, dry_run: bool) -> str | None:
        """Why a raise of cache_max_size is held because the last one did
        not raise the hit rate; None when it may go ahead."""
        last = self._cache_raise
        if last is None or rate is None or last["size"] != size:
            return None
        if rate >= last["rate"] + CACHE_MIN_GAIN:
            return None
        plateau = last.get("plateau")
        if plateau is not None and abs(rate - plateau) > CACHE_WORKLOAD_CHANGE:
            if not dry_run:
                self._cache_raise = None  # the workload changed: try again
            return None
        if plateau is None and not dry_run:
            last["plateau"] = rate
        return (
            f"the last raise ({last['from']} -> {last['size']}) did not raise the hit rate "
            f"({last['rate']:.0%} before, {rate:.0%} since): the inputs evicted do not come back"
        )

    def stats(self, cfg: Any) -> dict[str, Any]:
        return {
            "enabled": cfg.enable_automatic_optimization,
            "interval_seconds": cfg.optimization_analysis_interval_seconds,
            "analyses": self.analyses,
            "failed": self.failed,
            "changes": list(self.changes),
            "last_analysis": self.last,
            "cooldown_analyses": COOLDOWN,
            "reversal_persistence": REVERSAL_PERSISTENCE,
            "reversal_cooldown_analyses": REVERSAL_COOLDOWN,
            "bounds": {k: list(v) for k, v in BOUNDS.items()},
        }


def _scheduled(ref: weakref.ref) -> None:
    ex = ref()
    if ex is None:
        return
    tuner = ex._tuner
    tuner._scheduled = None
    if not ex._engine.config.enable_automatic_optimization:
        return  # turned off after it was due
    tuner.analyse(ex)
