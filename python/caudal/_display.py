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

Nothing here runs on the hot path.
"""

from __future__ import annotations

import html
import math
import re
import reprlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from caudal._core import OptimizationConfig

_PRIORITY = {"high": 0, "medium": 1, "low": 2}


class _Repr(reprlib.Repr):
    """reprlib's abridging, but dicts keep their insertion order (reprlib
    sorts their keys)."""

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        parts = [
            f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
            for k, v in list(x.items())[: self.maxdict]
        ]
        if len(x) > self.maxdict:
            parts.append("...")
        return "{" + ", ".join(parts) + "}"


_short = _Repr()
_short.maxlevel = 3
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = 8
_short.maxtuple = 8
_short.maxdict = 6
_short.maxset = 6

_long = _Repr()
_long.maxlevel = 4
_long.maxstring = 400
_long.maxother = 400
_long.maxlist = 30
_long.maxtuple = 30
_long.maxdict = 20

# Inline styles only: notebooks strip <style> blocks in some front ends.
# Tables never grow wider than their container: a long text cell wraps
# (anywhere, for a long word), a short one (a number, a name, a header)
# stays on its line; a cell holding a nested table is left to it.
_TABLE = (
    'style="border-collapse:collapse;font-size:0.9em;margin:0.2em 0;max-width:100%;'
    'display:block;overflow-x:auto"'
)
_BORDER = "border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"
_CELL = f'style="{_BORDER};white-space:nowrap"'
_CELL_LONG = f'style="{_BORDER};overflow-wrap:anywhere;min-width:12em;max-width:32em"'
_CELL_NESTED = f'style="{_BORDER};max-width:100%"'
_SHORT = 24  # characters a cell shows on one line


def _td(text: str, shown: str | None = None) -> str:
    """A cell for `text` (escaped here unless `shown`, its HTML, is given)."""
    html_text = esc(text) if shown is None else shown
    if "<table" in html_text:
        style = _CELL_NESTED
    elif len(text) > _SHORT:
        style = _CELL_LONG
    else:
        style = _CELL
    return f"<td {style}>{html_text}</td>"


_CHANGED = (
    'style="border:1px solid #ccc;padding:2px 6px;text-align:left;'
    'background:#fff3b0;font-weight:bold"'
)
_STATUS_COLOUR = {
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "skipped": "#9a6700",
    "cancelled": "#6e7781",
    "running": "#0969da",
    "pending": "#6e7781",
}

esc = html.escape


def short_repr(obj: Any) -> str:
    """A repr of at most a line or so (long strings, lists, dicts abridged)."""
    try:
        return _short.repr(obj)
    except Exception as exc:  # a user object whose repr raises
        return f"<{type(obj).__name__}: repr failed: {exc!r}>"


def _long_repr(obj: Any) -> str:
    try:
        return _long.repr(obj)
    except Exception as exc:
        return f"<{type(obj).__name__}: repr failed: {exc!r}>"


def _num(v: float) -> str:
    if v != v or math.isinf(v):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}" if abs(v) >= 10_000 else f"{v:.1f}"
    return f"{v:.4g}"


def duration_ms(v: float) -> str:
    """A duration given in milliseconds, in the unit that reads best:
    ``850 ns``, ``12 µs``, ``3.2 ms``, ``1.5 s``."""
    if v != v:  # NaN
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a < 1e-3:
        return f"{v * 1e6:.3g} ns"
    if a < 1:
        return f"{v * 1e3:.3g} µs"
    if a < 1000:
        return f"{v:.3g} ms"
    return f"{v / 1000:.3g} s"


_CELL_WIDTH = 80  # characters of one cell of a terminal table


def _cell(text: str) -> str:
    """A terminal table's cell on one line: line breaks shown as ⏎, long
    text cut with …, so a multi-line error message cannot break the rows."""
    if "\n" in text or "\r" in text or "\t" in text:
        text = " ⏎ ".join(p.strip() for p in text.splitlines() if p.strip()).replace("\t", " ")
    if len(text) > _CELL_WIDTH:
        text = text[: _CELL_WIDTH - 1] + "…"
    return text


def fmt(key: str, v: Any) -> str:
    """A scalar value as text: milliseconds with their unit, rates as %."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if key.endswith("_ms"):
            return f"{_num(v)} ms"
        if key.endswith("_s") or key.endswith("_seconds"):
            return f"{_num(v)} s"
        if key.endswith("_mb"):
            return f"{_num(v)} MB"
        if "rate" in key or key.endswith("utilization"):
            return f"{v:.1%}"
        return _num(v)
    if isinstance(v, str):
        return v
    return short_repr(v)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def _table_html(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    """rows are already escaped (HTML) when raw is True."""
    head = "".join(f"<th {_CELL}>{esc(h)}</th>" for h in header)
    if raw:
        cells = [[_td(html.unescape(re.sub(r"<[^>]+>", "", c)), c) for c in r] for r in rows]
    else:
        cells = [[_td(c) for c in r] for r in rows]
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in cells)
    return f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _looks_numeric(cell: str) -> bool:
    c = cell.split(" ")[0].lstrip("+-").replace(",", "").replace(".", "", 1).rstrip("%")
    return c.isdigit() or cell in ("", "-")


def _table_text(header: list[str], rows: list[list[str]], indent: str = "") -> str:
    header = [_cell(h) for h in header]
    rows = [[_cell(c) for c in r] for r in rows]
    cols = [header, *rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    # Numbers right-aligned, text left-aligned.
    numeric = [all(_looks_numeric(r[i]) for r in rows) and i > 0 for i in range(len(header))]
    lines = []
    for k, r in enumerate(cols):
        cells = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append(indent + "  ".join(cells).rstrip())
        if k == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------- nested values
_MAX_ROWS = 12
_MAX_COLS = 10
_PREFERRED = (
    # execution.steps
    "executions",
    "failures",
    "attempts",
    "retries",
    "timeouts",
    "cache_hits",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    # concurrency.keys
    "mode",
    "limit",
    "in_flight",
    "waiting",
    "limit_changes",
    "baseline_rtt_ms",
    # circuit_breaker.breakers / transitions
    "state",
    "consecutive_failures",
    "failure_count",
    "rejected_count",
    "open_count",
)


def _record_table(records: Mapping[str, Mapping[str, Any]] | list, first: str):
    """(header, rows, hidden) of a dict of dicts (rows keyed by name) or a
    list of dicts (the last _MAX_ROWS), scalar columns only."""
    if isinstance(records, Mapping):
        items = [(str(k), v) for k, v in records.items()]
    else:
        items = [(str(i), v) for i, v in enumerate(records)]
    hidden = max(0, len(items) - _MAX_ROWS)
    items = items[:_MAX_ROWS] if isinstance(records, Mapping) else items[hidden:]
    label = first
    cols: list[str] = []
    for _, rec in items:
        for k, v in rec.items():
            if _is_scalar(v) and k not in cols and k != "name":
                cols.append(k)
    # The columns people look for first (per-step latencies, limits, breaker
    # state), then the rest in their order, up to _MAX_COLS.
    first = [c for c in _PREFERRED if c in cols]
    cols = (first + [c for c in cols if c not in first])[:_MAX_COLS]
    rows = [[name] + [fmt(c, rec.get(c)) for c in cols] for name, rec in items]
    return [label, *cols], rows, hidden


def _kind(v: Any) -> str:
    if _is_scalar(v):
        return "scalar"
    if isinstance(v, Mapping):
        if not v:
            return "empty"
        if all(_is_scalar(x) for x in v.values()):
            return "flat"
        if all(isinstance(x, Mapping) for x in v.values()):
            return "records"
    if isinstance(v, list | tuple):
        if not v:
            return "empty"
        if all(isinstance(x, Mapping) for x in v):
            return "records"
    return "other"


def _inline(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(k, x)}" for k, x in d.items())


def _value_html(key: str, v: Any) -> str:
    kind = _kind(v)
    if kind == "scalar":
        return esc(fmt(key, v))
    if kind == "empty":
        return "-"
    if kind == "flat":
        return esc(_inline(v))
    if kind == "records":
        header, rows, hidden = _record_table(v, "name" if isinstance(v, Mapping) else "#")
        more = f"<div>... {hidden} more</div>" if hidden else ""
        return _table_html(header, rows) + more
    return esc(short_repr(v))


def fmt_text(key: str, v: Any) -> str:
    """The text of a scalar or flat value as its HTML cell shows it."""
    kind = _kind(v)
    if kind == "scalar":
        return fmt(key, v)
    if kind == "flat":
        return _inline(v)
    return "-" if kind == "empty" else short_repr(v)


def _value_text(key: str, v: Any) -> str:
    kind = _kind(v)
    if kind == "scalar":
        return fmt(key, v)
    if kind == "empty":
        return "-"
    if kind == "flat":
        return _inline(v)
    if kind == "records":
        header, rows, hidden = _record_table(v, "name" if isinstance(v, Mapping) else "#")
        more = f"\n      ... {hidden} more" if hidden else ""
        return "\n" + _table_text(header, rows, indent="      ") + more
    return short_repr(v)


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


# ------------------------------------------------------------------- stats
class StatsSection(dict):
    """One section of ``get_optimization_stats()``: a dict, shown as a table."""

    __slots__ = ("section",)

    def __init__(self, section: str = "", data: Mapping[str, Any] | None = None) -> None:
        super().__init__(data or {})
        self.section = section

    def __reduce__(self):
        return (StatsSection, (self.section, dict(self)))

    def _rows_text(self) -> str:
        lines = []
        w = max((len(k) for k in self), default=0)
        for k, v in self.items():
            lines.append(f"  {k:<{w}}  {_value_text(k, v)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"[{self.section}]\n{self._rows_text()}" if self.section else self._rows_text()

    def _repr_html_(self) -> str:
        rows = []
        for k, v in self.items():
            key = f"<code>{esc(k)}</code>"
            if _kind(v) == "records":
                # A nested table gets the section's whole width, under its key.
                rows.append(
                    f"<tr><td {_CELL_NESTED} colspan='2'>{key}{_value_html(k, v)}</td></tr>"
                )
            else:
                rows.append(
                    f"<tr><td {_CELL}>{key}</td>{_td(fmt_text(k, v), _value_html(k, v))}</tr>"
                )
        title = f"<div><b>{esc(self.section)}</b></div>" if self.section else ""
        head = f"<tr><th {_CELL}>key</th><th {_CELL}>value</th></tr>"
        return f"{title}<table {_TABLE}><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _section(name: str, value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, StatsSection):
        return StatsSection(name, value)
    return value


def _shown(name: str, value: Any) -> StatsSection:
    """A section as shown; a value that is not a mapping as a one-row one."""
    return value if isinstance(value, StatsSection) else StatsSection(name, {name: value})


class OptimizationStats(dict):
    """``get_optimization_stats()``: section name -> :class:`StatsSection`.

    A dict in every respect but its repr (a compact table per section);
    ``to_dict()`` gives plain nested dicts."""

    __slots__ = ()

    def __init__(self, sections: Mapping[str, Any] | None = None) -> None:
        super().__init__({k: _section(k, v) for k, v in (sections or {}).items()})

    def __reduce__(self):
        return (OptimizationStats, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in self.items()}

    def __repr__(self) -> str:
        return "\n".join(repr(_shown(k, v)) for k, v in self.items())

    def _repr_html_(self) -> str:
        parts = []
        for k in _display_order(self):
            v = _shown(k, self[k])
            body = v._repr_html_()
            if k not in _FIRST_SECTIONS:
                # The rest fold away under their names (a click opens one).
                body = (
                    f"<details><summary><b>{esc(k)}</b> ({len(v)} keys)</summary>{body}</details>"
                )
            parts.append(
                "<div style='display:inline-block;vertical-align:top;margin-right:1em;"
                "max-width:100%'>" + body + "</div>"
            )
        return (
            "<div style='max-width:100%'><div><b>caudal optimization stats</b>: "
            + esc(stats_summary(self))
            + "</div>"
            + "".join(parts)
            + "</div>"
        )


# What a reader looks for first; the other sections follow in their order.
_FIRST_SECTIONS = ("execution", "cache", "circuit_breaker", "concurrency", "error_handling")


def _display_order(stats: Mapping[str, Any]) -> list[str]:
    first = [k for k in _FIRST_SECTIONS if k in stats]
    return first + [k for k in stats if k not in first]


def stats_summary(stats: Mapping[str, Any]) -> str:
    """One line: executions and failures, p95, the cache's hit rate, open
    breakers, what is in flight (the parts the stats have)."""

    def section(name: str) -> Mapping[str, Any]:
        v = stats.get(name)
        return v if isinstance(v, Mapping) else {}

    parts = []
    ex = section("execution")
    n = ex.get("total_executions")
    if isinstance(n, int):
        parts.append(f"{n:,} executions, {ex.get('failures') or 0:,} failed")
        if n and isinstance(ex.get("p95_ms"), int | float):
            parts.append(f"p95 {duration_ms(ex['p95_ms'])}")
        if ex.get("in_flight"):
            parts.append(f"{ex['in_flight']:,} in flight")
    cache = section("cache")
    lookups = (cache.get("hits") or 0) + (cache.get("misses") or 0)
    if lookups:
        parts.append(f"cache hits {cache.get('hits') or 0:,} of {lookups:,} lookups")
    breakers = section("circuit_breaker").get("breakers")
    if isinstance(breakers, Mapping):
        opened = sum(
            1 for b in breakers.values() if isinstance(b, Mapping) and b.get("state") == "open"
        )
        parts.append(f"{opened} open breaker{'s' if opened != 1 else ''}")
    return "; ".join(parts) if parts else "no executions yet"


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
