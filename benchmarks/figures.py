"""Copies measured figures from benchmarks/results/*.json into README.md and docs/*.md.

    python benchmarks/figures.py          rewrite the marked figures in place
    python benchmarks/figures.py --check  exit 1 (and name them) if any is stale

benchmarks/run.py (`make bench`) runs it last, so every figure the docs give
comes from that one run. A measured figure in the docs sits inside a marker
naming the result it comes from; the text between the markers is generated
and rewritten on every run (never edit it by hand):

    <!-- fig report:comparison/execution/new/caudal/median ; .2f -->0.63<!-- /fig --> µs

- ``report`` is benchmarks/results/report.json; the path after ``:`` walks
  its keys (``/`` between keys; in a list, an integer indexes it and
  ``field=value`` picks the item whose field is that value; ``#2`` is the
  third value of a mapping, for keys that hold a ``/``).
- After `` ; `` (never a ``|``: markers sit in table cells), options: a
  format spec (Python's ``format``: ``.2f``, ``,.0f``, ``.3g``; default
  ``.2f``; ``time`` renders µs with its unit: ``242 ns``, ``4.7 µs``,
  ``3.67 ms``) and a scale (``*0.001``: ns to µs).
- ``A over B`` (each ``file:path`` or a number) renders the ratio of two
  results, ``A minus B`` their difference.

A generated block holds a whole table:

    <!-- table report:tables/comparison -->
    ...
    <!-- /table -->

``table floors`` renders every floor recorded with benchmarks/_floors.py.

A key no result provides is an error (exit 2, naming the file, line and key):
a figure is never left silently stale. tests_py/package/test_doc_figures.py
checks that the committed docs equal what this renders from the committed
results, and that no measured figure sits outside a marker.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

INLINE = re.compile(r"<!-- fig (?P<spec>.*?) -->(?P<text>.*?)<!-- /fig -->", re.S)
BLOCK = re.compile(r"<!-- table (?P<spec>.*?) -->\n(?P<text>.*?)<!-- /table -->", re.S)


class FigureError(Exception):
    """A marker whose key no result provides, or a malformed marker."""


def doc_files(root: Path = ROOT) -> list[Path]:
    """The files whose figures are generated: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def load_results(directory: Path = RESULTS) -> dict[str, object]:
    """Every results file, by name without `.json`."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def lookup(results: Mapping[str, object], ref: str) -> object:
    """The value at ``file:key/key/...``."""
    if ":" not in ref:
        raise FigureError(f"{ref!r}: expected file:path")
    name, path = ref.split(":", 1)
    if name not in results:
        raise FigureError(f"{ref!r}: no results file {name}.json")
    node = results[name]
    for key in path.split("/") if path else []:
        key = key.replace("%2F", "/")
        if isinstance(node, list) and "=" in key:
            field, want = key.split("=", 1)
            hits = [x for x in node if isinstance(x, dict) and str(x.get(field)) == want]
            if len(hits) != 1:
                raise FigureError(f"{ref!r}: {len(hits)} items with {key!r}")
            node = hits[0]
        elif isinstance(node, list):
            try:
                node = node[int(key)]
            except (ValueError, IndexError):
                raise FigureError(f"{ref!r}: no index {key!r}") from None
        elif isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, dict) and re.fullmatch(r"#\d+", key):
            items = list(node.values())
            if int(key[1:]) >= len(items):
                raise FigureError(f"{ref!r}: no item {key!r}")
            node = items[int(key[1:])]
        else:
            raise FigureError(f"{ref!r}: no key {key!r}")
    return node


def render_inline(spec: str, results: Mapping[str, object]) -> str:
    expr, _, opts = spec.partition(" ; ")
    op = " over " if " over " in expr else " minus "
    refs = [r.strip() for r in expr.split(op)]
    if not refs[0] or len(refs) > 2:
        raise FigureError(f"{spec!r}: expected file:path [over|minus file:path] [; options]")
    first = _ref(results, refs[0])
    if isinstance(first, bool) and len(refs) == 1:  # a floor's verdict
        return "met" if first else "NOT MET"
    value = _number(first, refs[0])
    if len(refs) == 2:
        other = _number(_ref(results, refs[1]), refs[1])
        value = value / other if op == " over " else value - other
    fmt = ".2f"
    for w in opts.split():
        if w.startswith("*"):
            value *= float(w[1:])
        else:
            fmt = w
    if fmt == "time":
        return time_text(value)
    try:
        return format(value, fmt)
    except ValueError as e:
        raise FigureError(f"{spec!r}: format {fmt!r}: {e}") from None


def _ref(results: Mapping[str, object], ref: str) -> object:
    """A result, or a plain number (``1000000 over file:path`` is a rate)."""
    try:
        return float(ref)
    except ValueError:
        return lookup(results, ref)


def time_text(us: float) -> str:
    """A time in µs, in the unit that reads best: 242 ns, 4.7 µs, 3.67 ms."""
    if us < 1:
        return f"{us * 1000:.0f} ns"
    if us < 1000:
        return f"{us:.1f} µs"
    return f"{us / 1000:.2f} ms"


def _number(v: object, ref: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FigureError(f"{ref!r}: not a number ({type(v).__name__})")
    return float(v)


def render_block(spec: str, results: Mapping[str, object]) -> str:
    spec = spec.strip()
    if spec == "floors":
        return floors_table(results)
    v = lookup(results, spec)
    if not isinstance(v, str):
        raise FigureError(f"{spec!r}: a table block needs a string ({type(v).__name__})")
    return v.rstrip("\n") + "\n"


def floors_table(results: Mapping[str, object]) -> str:
    """Every recorded floor (floors_*.json), one table, then each growth curve."""
    from _floors import HEADER, Curve, Floor

    lines = [*HEADER]
    curves = []
    for name in sorted(n for n in results if n.startswith("floors_")):
        data = results[name]
        for f in data["floors"]:
            floor = Floor(**{k: v for k, v in f.items() if k != "met"})
            lines.append(floor.row().replace("| ", f"| {data['bench']}: ", 1))
        for c in data["curves"]:
            curves.append((data["bench"], Curve(c["name"], c["x_label"], c["y_label"],
                                                [tuple(p) for p in c["points"]])))  # fmt: skip
    if len(lines) == len(HEADER):
        return "No floor recorded yet: run `make bench`.\n"
    for bench, c in curves:
        lines += ["", f"{bench}: {c.name}", "", *c.table()]
    return "\n".join(lines) + "\n"


def rewrite(text: str, results: Mapping[str, object], where: str = "") -> str:
    """`text` with every marker's contents generated from `results`."""

    def at(m: re.Match) -> str:
        return f"{where}:{text.count(chr(10), 0, m.start()) + 1}"

    def block(m: re.Match) -> str:
        try:
            body = render_block(m["spec"], results)
        except FigureError as e:
            raise FigureError(f"{at(m)}: {e}") from None
        return f"<!-- table {m['spec']} -->\n{body}<!-- /table -->"

    def inline(m: re.Match) -> str:
        try:
            body = render_inline(m["spec"], results)
        except FigureError as e:
            raise FigureError(f"{at(m)}: {e}") from None
        return f"<!-- fig {m['spec']} -->{body}<!-- /fig -->"

    return INLINE.sub(inline, BLOCK.sub(block, text))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report stale figures, write nothing")
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    results = load_results()
    stale = []
    try:  # every file rendered before any is written: an error writes nothing
        rendered = [(path, path.read_text()) for path in doc_files()]
        rendered = [
            (p, old, rewrite(old, results, str(p.relative_to(ROOT)))) for p, old in rendered
        ]
    except FigureError as e:
        print(f"figures: {e}", file=sys.stderr)
        return 2
    for path, old, new in rendered:
        if new != old:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    verb = "stale" if args.check else "rewritten"
    print(f"figures: {len(stale)} file(s) {verb}" + "".join(f"\n  {s}" for s in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
