"""How ``get_optimization_stats()`` looks: :class:`OptimizationStats`, a
``dict`` of :class:`StatsSection` (also dicts) whose repr is a compact
table per section, and whose HTML opens with a one-line summary
(``stats_summary``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caudal._tables import (
    _CELL,
    _CELL_NESTED,
    _TABLE,
    _kind,
    _td,
    _value_html,
    _value_text,
    duration_ms,
    esc,
    fmt_text,
)


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
                rows.append(f"<tr><td {_CELL}>{key}</td>{_td(fmt_text(k, v))}</tr>")
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
