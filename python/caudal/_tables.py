"""The pieces caudal's displays are made of: abridged reprs, values with
their units (``fmt``, ``duration_ms``), and tables as text (one line per
cell) and as HTML (inline styles, bounded by the page). Used by
caudal._display and caudal._display_stats; nothing here is on the hot
path."""

from __future__ import annotations

import html
import math
import re
import reprlib
from collections.abc import Mapping
from typing import Any


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


def _abridging(level: int, text: int, items: int, mapping: int) -> _Repr:
    """A repr cut at ``level`` levels, ``text`` characters per string or
    other value, ``items`` items per list or tuple, ``mapping`` per dict."""
    r = _Repr()
    r.maxlevel, r.maxstring, r.maxother = level, text, text
    r.maxlist = r.maxtuple = items
    r.maxdict = mapping
    return r


_short = _abridging(3, 60, 8, 6)
_long = _abridging(4, 400, 30, 20)

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


def fmt_text(key: str, v: Any) -> str:
    """A value that is not a table (a scalar, a flat mapping, anything
    else abridged) as one piece of text."""
    kind = _kind(v)
    if kind == "scalar":
        return fmt(key, v)
    if kind == "flat":
        return _inline(v)
    return "-" if kind == "empty" else short_repr(v)


def _records_of(v: Any) -> tuple[list[str], list[list[str]], int]:
    return _record_table(v, "name" if isinstance(v, Mapping) else "#")


def _value_html(key: str, v: Any) -> str:
    if _kind(v) != "records":
        return esc(fmt_text(key, v))
    header, rows, hidden = _records_of(v)
    more = f"<div>... {hidden} more</div>" if hidden else ""
    return _table_html(header, rows) + more


def _value_text(key: str, v: Any) -> str:
    if _kind(v) != "records":
        return fmt_text(key, v)
    header, rows, hidden = _records_of(v)
    more = f"\n      ... {hidden} more" if hidden else ""
    return "\n" + _table_text(header, rows, indent="      ") + more
