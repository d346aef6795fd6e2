"""How caudal's objects look in a terminal and in a notebook.

Every ``__repr__`` here is short enough to read at a prompt, and every
``_repr_html_`` is a table that Jupyter renders. User content (step names,
outputs, error messages) is always escaped in HTML.

- ``StepResult``: ``step_result_repr`` / ``step_result_html`` (the native
  type's ``__repr__`` and ``_repr_html_`` call them).
- ``OptimizationConfig``: ``config_html`` (every field; those changed from
  the default highlighted). Its text repr, in C++, already lists only the
  changed fields.
- ``get_optimization_stats()`` returns :class:`OptimizationStats`, a ``dict``
  of :class:`StatsSection` (also dicts): indexing, ``json.dumps``, ``==``
  and pickling behave as with plain dicts; only the repr is a table.
- ``get_performance_recommendations()`` returns :class:`Recommendations`, a
  ``list`` of plain dicts, shown sorted by priority.
- ``PipelineRun``: ``run_repr`` / ``run_html`` (a step table).

The stats' types are in caudal._display_stats, the formatting and table
pieces in caudal._tables. Nothing here runs on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from caudal._core import OptimizationConfig

# get_optimization_stats()'s types live in caudal._display_stats; named
# here too (the package's import path for them, and pickles made before).
from caudal._display_stats import OptimizationStats, StatsSection
from caudal._tables import (
    _CELL,
    _CHANGED,
    _STATUS_COLOUR,
    _TABLE,
    _long_repr,
    _table_html,
    _table_text,
    _td,
    esc,
    fmt,
    short_repr,
)

_PRIORITY = {"high": 0, "medium": 1, "low": 2}


# -------------------------------------------------------------- StepResult
def step_result_repr(r: Any) -> str:
    parts = [f"name={r.name!r}", f"success={r.success}"]
    if r.success:
        parts.append(f"output={short_repr(r.output)}")
    else:
        parts.append(f"feedback={short_repr(r.feedback)}")
    parts.append(f"attempts={r.attempts}")
    parts.append(f"latency_s={float(f'{r.latency_s:.4g}')!r}")
    if r.cache_hit:
        parts.append("cache_hit=True")
    if r.token_counts:
        parts.append(f"token_counts={r.token_counts}")
    if r.cost_usd:
        parts.append(f"cost_usd={r.cost_usd:.6g}")
    if r.metadata:
        parts.append(f"metadata={short_repr(r.metadata)}")
    return f"StepResult({', '.join(parts)})"


def step_result_html(r: Any) -> str:
    ok = r.success
    mark = "&#10003;" if ok else "&#10007;"
    colour = _STATUS_COLOUR["completed" if ok else "failed"]
    rows: list[list[str]] = []
    if ok:
        pre = "margin:0;white-space:pre-wrap;overflow-wrap:anywhere"
        rows.append(["output", f"<pre style='{pre}'>{esc(_long_repr(r.output))}</pre>"])
    else:
        rows.append(["feedback", esc(str(r.feedback))])
        if r.error is not None:
            rows.append(["error", esc(type(r.error).__qualname__)])
    rows.append(["attempts", str(r.attempts)])
    rows.append(["latency", esc(fmt("latency_ms", r.latency_s * 1e3))])
    rows.append(["cache hit", "yes" if r.cache_hit else "no"])
    if r.token_counts or r.cost_usd:
        rows.append(["usage", esc(f"{r.token_counts:,} tokens, ${r.cost_usd:.6f}")])
    if r.metadata:
        rows.append(["metadata", esc(short_repr(r.metadata))])
    title = (
        f"<div><b>StepResult</b> <code>{esc(str(r.name))}</code> "
        f"<span style='color:{colour}'>{mark} {'success' if ok else 'failed'}</span></div>"
    )
    return title + _table_html(["field", "value"], rows, raw=True)


# ------------------------------------------------------------------ config
def config_html(cfg: Any) -> str:
    now = cfg.to_dict()
    default = OptimizationConfig().to_dict()
    changed = [f for f in now if now[f] != default[f]]
    rows = []
    for f in OptimizationConfig.fields():
        name = f["name"]
        cell = _CHANGED if name in changed else _CELL
        cells = [
            f"<code>{esc(name)}</code>",
            esc(repr(now[name])),
            esc(f["default"]),
            esc(f["rule"] or "-"),
            esc(f["doc"]),
        ]
        rows.append(
            "<tr>"
            + "".join(
                f"<td {cell}>{c}</td>" if cell is _CHANGED or k < 4 else _td(f["doc"], c)
                for k, c in enumerate(cells)
            )
            + "</tr>"
        )
    head = "".join(
        f"<th {_CELL}>{h}</th>" for h in ("field", "value", "default", "rule", "what it does")
    )
    summary = (
        f"{len(changed)} field(s) changed from the default: "
        + ", ".join(f"<code>{esc(c)}</code>" for c in changed)
        if changed
        else "all fields at their defaults"
    )
    problems = cfg.validate()
    bad = (
        "<div style='color:#cf222e'>invalid: " + esc("; ".join(problems)) + "</div>"
        if problems
        else ""
    )
    return (
        f"<div><b>OptimizationConfig</b>: {summary}</div>{bad}"
        f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# --------------------------------------------------------- recommendations
def sorted_recommendations(recs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(recs, key=lambda r: _PRIORITY.get(r.get("priority"), 9))


class Recommendations(list):
    """``get_performance_recommendations()``: a list of plain dicts
    (description, impact, priority, automatic, step), highest priority
    first; shown as a table."""

    __slots__ = ()

    def __reduce__(self):
        return (Recommendations, (list(self),))

    def __repr__(self) -> str:
        if not self:
            return "Recommendations: none (nothing measured needs attention)"
        lines = [f"Recommendations ({len(self)}):"]
        for r in sorted_recommendations(self):
            how = "automatic" if r.get("automatic") else "manual"
            lines.append(
                f"  [{r.get('priority', '?')}] {r.get('description', '')} "
                f"(impact {r.get('impact', '?')}, {how})"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self:
            return "<div><b>Recommendations</b>: none (nothing measured needs attention)</div>"
        rows = [
            [
                str(r.get("priority", "")),
                str(r.get("description", "")),
                str(r.get("impact", "")),
                "automatic" if r.get("automatic") else "manual",
                str(r.get("step", "") or ""),
            ]
            for r in sorted_recommendations(self)
        ]
        return f"<div><b>Recommendations</b> ({len(self)})</div>" + _table_html(
            ["priority", "description", "impact", "applied", "step"], rows
        )


# ------------------------------------------------------------ pipeline run
def _run_rows(run: Any) -> list[list[str]]:
    t0 = run.started_at
    rows = []
    for r in run.steps.values():
        start = "" if r.started_at is None else f"+{(r.started_at - t0) * 1e3:.1f}"
        took = "" if r.started_at is None or r.finished_at is None else f"{r.latency_s * 1e3:.1f}"
        status = (
            r.status
            + (" (restored)" if r.restored else "")
            + (" (optional)" if r.optional and r.status == "failed" else "")
        )
        rows.append(
            [
                str(r.name),
                status,
                start,
                took,
                str(r.attempts),
                "yes" if r.cache_hit else "",
                f"{r.tokens:,}" if r.tokens else "",
                str(r.error or ""),
            ]
        )
    return rows


_RUN_HEADER = ["step", "status", "start ms", "time ms", "attempts", "cache hit", "tokens", "error"]


def _run_summary(run: Any) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(run.counts().items()))
    s = f"{run.pipeline} run {run.run_id}: {run.status} in {run.duration_s * 1e3:.1f} ms ({counts})"
    if run.total_tokens or run.total_cost_usd:
        s += f"; {run.total_tokens:,} tokens, ${run.total_cost_usd:.6f}"
    return s


def run_repr(run: Any) -> str:
    rows = _run_rows(run)
    hidden = max(0, len(rows) - 30)
    text = f"PipelineRun({run.run_id!r}, {run.status})\n  {_run_summary(run)}\n"
    text += _table_text(_RUN_HEADER, rows[:30], indent="  ")
    if hidden:
        text += f"\n  ... {hidden} more steps"
    return text


def run_html(run: Any) -> str:
    rows = []
    for row in _run_rows(run):
        cells = [esc(c) for c in row]
        status = row[1].split(" ")[0]
        cells[1] = f"<span style='color:{_STATUS_COLOUR.get(status, '#000')}'>{cells[1]}</span>"
        rows.append(cells)
    started = time.strftime("%H:%M:%S", time.localtime(run.started_at))
    return (
        f"<div><b>PipelineRun</b> {esc(_run_summary(run))} (started {started})</div>"
        + _table_html(_RUN_HEADER, rows, raw=True)
    )


__all__ = [
    "OptimizationStats",
    "Recommendations",
    "StatsSection",
    "config_html",
    "run_html",
    "run_repr",
    "step_result_html",
    "step_result_repr",
]
