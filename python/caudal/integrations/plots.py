"""Plots of an executor's measurements and of a pipeline run (matplotlib,
the optional ``caudal[plot]`` extra).

- :func:`plot_latency` — the latency histogram of a step (or of all steps)
  from the native buckets, with p50/p95/p99 marked; and, when a
  :class:`caudal._executor.recorder.LatencyRecorder` has run, the percentiles per
  interval over time.
- :func:`plot_concurrency` — each concurrency key's limit over time (from
  ``executor.concurrency_history()``) and the executions in flight (sampled
  by the recorder; without one, in flight at each limit change).
- :func:`plot_gantt` — a pipeline run's steps on a time line, coloured by
  status, cache hits hatched, retried steps labelled with their attempts.

Each returns a ``matplotlib.figure.Figure`` made without pyplot: no display
and no GUI backend are needed, nothing accumulates in pyplot's figure list,
``fig.savefig("x.png")`` renders with Agg. In a notebook the figure shows
as a PNG when it is a cell's value.
"""

from __future__ import annotations

import sys
from typing import Any

from caudal._executor.recorder import quantile_ms
from caudal._tables import duration_ms

_STATUS_COLOUR = {
    "completed": "#2da44e",
    "failed": "#cf222e",
    "skipped": "#d4a72c",
    "cancelled": "#8c959f",
    "running": "#0969da",
    "pending": "#d0d7de",
}


def _figure(figsize: tuple[float, float]) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("caudal's plots need matplotlib: pip install 'caudal[plot]'") from exc
    _show_in_notebook(Figure)
    return Figure(figsize=figsize, layout="constrained")


def _show_in_notebook(figure_cls: type) -> None:
    """In IPython, make a Figure that is a cell's value display as a PNG
    (pyplot's inline backend does this only for figures pyplot made)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return
    shell = ipython.get_ipython()
    if shell is None:
        return
    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(figure_cls)
    except KeyError:
        from IPython.core.pylabtools import print_figure

        png.for_type(figure_cls, lambda fig: print_figure(fig, "png"))


# ----------------------------------------------------------------- latency
def _duration_log_ticks(ax: Any) -> None:
    """A log time axis (in ms) labelled in readable units (1 µs, 10 µs,
    100 µs, 1 ms ...). Between the decades 2 and 5 are labelled only when
    the axis spans at most two decades: more would not fit side by side."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10.0, numticks=8))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: duration_ms(v)))
    ax.xaxis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0), numticks=20))
    lo, hi = ax.get_xlim()
    narrow = lo > 0 and hi > 0 and math.log10(hi / lo) <= 2.0
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: duration_ms(v)) if narrow else NullFormatter()
    )


def plot_latency(
    executor: Any,
    step: str | None = None,
    *,
    recorder: Any = None,
    figsize: tuple[float, float] | None = None,
) -> Any:
    """Latency of ``step`` (a step name; None: all steps together).

    Left: the histogram (executions per native bucket, log-scaled time
    axis) with the p50, p95 and p99 lines. Right, when ``recorder`` (default:
    the one ``executor.start_latency_recorder()`` started) has intervals:
    p50/p95/p99 of each interval over time."""

    if recorder is None:
        recorder = executor._monitor_view().recorder
    buckets = executor.latency_buckets(step)
    series = recorder.samples(step) if recorder is not None else []
    fig = _figure(figsize or ((11.0, 4.0) if series else (6.5, 4.0)))
    axes = fig.subplots(1, 2) if series else [fig.subplots()]
    ax = axes[0]
    what = "all steps" if step is None else f"step {step!r}"
    n = sum(c for _, _, c in buckets)
    if buckets:
        lefts = [lo / 1e6 for lo, _, _ in buckets]
        widths = [(hi - lo) / 1e6 for lo, hi, _ in buckets]
        ax.bar(lefts, [c for _, _, c in buckets], width=widths, align="edge", color="#54aeff")
        ax.set_xscale("log")
        counts = {(lo, hi): c for lo, hi, c in buckets}
        for q, style in ((0.50, "-"), (0.95, "--"), (0.99, ":")):
            v = quantile_ms(counts, q)
            label = f"p{round(q * 100)} {duration_ms(v)}"
            ax.axvline(v, color="#cf222e", linestyle=style, label=label)
        _duration_log_ticks(ax)  # after the lines: the limits are final
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(
            0.5, 0.5, "no executions recorded", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_title(f"Latency of {what} ({n:,} executions)")
    ax.set_xlabel("latency")
    ax.set_ylabel("executions")
    if series:
        ax2 = axes[1]
        t0 = recorder.started_at
        xs = [s["time_s"] - t0 for s in series]
        for key, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            ys = [s[key] if s["count"] else float("nan") for s in series]
            ax2.plot(xs, ys, linestyle=style, marker=".", label=key.replace("_ms", ""))
        ax2.set_title(f"Percentiles per {recorder.interval_s:g} s interval")
        ax2.set_xlabel("time (s)")
        ax2.set_ylabel("latency (ms)")
        ax2.legend(loc="upper right", fontsize="small")
    return fig


# ------------------------------------------------------------- concurrency
def plot_concurrency(
    executor: Any,
    key: str | None = None,
    *,
    recorder: Any = None,
    figsize: tuple[float, float] = (7.5, 4.0),
) -> Any:
    """Concurrency limit and executions in flight over time, per
    concurrency key (``key``: only that one). Times are seconds since the
    first event shown."""
    if recorder is None:
        recorder = executor._monitor_view().recorder
    history = [h for h in executor.concurrency_history() if key is None or h["key"] == key]
    keys = list(dict.fromkeys(h["key"] for h in history))
    samples: dict[str, list[dict[str, Any]]] = {}
    if recorder is not None:
        for k in recorder.concurrency_keys():
            if key is None or k == key:
                samples[k] = recorder.concurrency_samples(k)
        keys += [k for k in samples if k not in keys]
    fig = _figure(figsize)
    ax = fig.subplots()
    times = [h["time_s"] for h in history] + [s["time_s"] for v in samples.values() for s in v]
    if recorder is not None:
        times.append(recorder.started_at)
    t0 = min(times, default=0.0)
    end = max(times, default=0.0)
    colours = ["#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e"]
    for i, k in enumerate(keys):
        colour = colours[i % len(colours)]
        hs = [h for h in history if h["key"] == k]
        ss = samples.get(k, [])
        xs: list[float] = []
        ys: list[float] = []
        if hs:
            xs.append(hs[0]["time_s"] - t0)
            ys.append(hs[0]["from"] if hs[0]["from"] is not None else float("nan"))
            for h in hs:
                xs.append(h["time_s"] - t0)
                ys.append(h["to"] if h["to"] is not None else float("nan"))
            xs.append(end - t0)
            ys.append(ys[-1])
        elif ss:
            xs = [s["time_s"] - t0 for s in ss]
            ys = [s["limit"] if s["limit"] is not None else float("nan") for s in ss]
        if xs:
            ax.step(xs, ys, where="post", color=colour, label=f"limit ({k})")
        if ss:
            ax.plot(
                [s["time_s"] - t0 for s in ss],
                [s["in_flight"] for s in ss],
                color=colour,
                alpha=0.6,
                marker=".",
                label=f"in flight ({k})",
            )
        elif hs:
            ax.plot(
                [h["time_s"] - t0 for h in hs],
                [h["in_flight"] for h in hs],
                color=colour,
                alpha=0.6,
                linestyle="none",
                marker="o",
                label=f"in flight at change ({k})",
            )
    if not keys:
        ax.text(
            0.5,
            0.5,
            "no concurrency limits recorded",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    else:
        ax.legend(loc="best", fontsize="small")
    ax.set_title("Concurrency: limit and executions in flight")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("executions")
    return fig


# ------------------------------------------------------------------- gantt
def plot_gantt(run: Any, *, figsize: tuple[float, float] | None = None) -> Any:
    """A Gantt chart of a :class:`caudal.PipelineRun`: one row per step in
    definition order, a bar from its start to its end (ms since the run
    started), coloured by status; cache hits hatched; "xN" for steps that
    took N > 1 attempts; steps that never ran labelled with their status."""
    recs = list(run.steps.values())
    fig = _figure(figsize or (8.0, max(2.0, 0.45 * len(recs) + 1.2)))
    from matplotlib.patches import Patch  # after _figure: its ImportError says what to install

    ax = fig.subplots()
    t0 = run.started_at
    end = max([r.finished_at or 0.0 for r in recs] + [t0]) - t0
    seen: dict[str, None] = {}
    for y, r in enumerate(recs):
        colour = _STATUS_COLOUR.get(r.status, "#8c959f")
        seen[r.status] = None
        if r.started_at is None or r.finished_at is None:
            ax.text(0, y, f" {r.status}", va="center", fontsize="small", color="#57606a")
            continue
        left = (r.started_at - t0) * 1e3
        width = max((r.finished_at - r.started_at) * 1e3, end * 1e3 / 400)
        ax.barh(
            y,
            width,
            left=left,
            height=0.6,
            color=colour,
            hatch="//" if r.cache_hit else None,
            edgecolor="#24292f",
            linewidth=0.5,
        )
        note = (f" x{r.attempts}" if r.attempts > 1 else "") + (" cached" if r.cache_hit else "")
        if note:
            ax.text(left + width, y, note, va="center", fontsize="small")
    ax.set_yticks(range(len(recs)), [r.name for r in recs])
    ax.invert_yaxis()
    ax.set_xlabel("time since run start (ms)")
    ax.set_title(f"{run.pipeline} run {run.run_id}: {run.status} ({run.duration_s * 1e3:.1f} ms)")
    ax.set_xlim(0, max(end * 1e3 * 1.08, 1e-3))  # room for the "x2" labels
    ax.legend(
        handles=[Patch(color=_STATUS_COLOUR.get(s, "#8c959f"), label=s) for s in seen],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize="small",
    )
    return fig


__all__ = ["plot_concurrency", "plot_gantt", "plot_latency"]
