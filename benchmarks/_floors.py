"""Floors: the promises a benchmark checks, recorded next to what it measured.

A benchmark that holds caudal to a promise ("a retry attempt costs at most
0.5 µs above a bare raise-and-catch", "cost per call with 100,000 distinct
steps at most 1.5x the cost with 10") records it here::

    from _floors import Floor, Curve, record

    record(
        "step_table",
        floors=[Floor("per call, 100,000 steps / 10 steps", measured=1.12, limit=1.5,
                      unit="x", detail="median of 9 interleaved rounds")],
        curves=[Curve("per call against distinct steps", x_label="distinct steps",
                      y_label="µs per call", points=[(10, 0.61), (1000, 0.63), ...])],
    )

`record` prints the table (so it is in the benchmark's own output) and
writes benchmarks/results/floors_<bench>.json; benchmarks/run.py gathers every
such file into the "Floors" section of SUMMARY.md, so a floor that is not met
shows up there as "NOT MET" rather than being lost in a log. Nothing here
asserts: a benchmark reports, the reader (and the closing note) judges.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Floor:
    """One promise: `measured` must be <= `limit` (or >= when at_least)."""

    name: str
    measured: float
    limit: float
    unit: str = "x"
    at_least: bool = False
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit

    def row(self) -> str:
        op = ">=" if self.at_least else "<="
        status = "met" if self.met else "NOT MET"
        return (
            f"| {self.name} | {_fmt(self.measured)} {self.unit} | {op} {_fmt(self.limit)} "
            f"{self.unit} | {status} | {self.detail} |"
        )


@dataclass
class Curve:
    """A growth curve: how a cost moves as the work grows."""

    name: str
    x_label: str
    y_label: str
    points: list[tuple[float, float]] = field(default_factory=list)

    def table(self) -> list[str]:
        head = f"| {self.x_label} | {self.y_label} |"
        rows = [head, "|---:|---:|"]
        rows += [f"| {_fmt(x)} | {_fmt(y)} |" for x, y in self.points]
        return rows


def _fmt(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


HEADER = ["| floor | measured | promise | | how |", "|---|---:|---:|---|---|"]


def markdown(bench: str, floors: list[Floor], curves: list[Curve]) -> str:
    lines = [f"### {bench}", ""]
    if floors:
        lines += [*HEADER, *(f.row() for f in floors), ""]
    for c in curves:
        lines += [f"{c.name}:", "", *c.table(), ""]
    return "\n".join(lines)


def record(bench: str, *, floors: list[Floor], curves: list[Curve] | None = None) -> Path:
    """Print the floors and curves of `bench` and save them for SUMMARY.md."""
    curves = curves or []
    print(markdown(bench, floors, curves), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"floors_{bench}.json"
    payload = {
        "bench": bench,
        "floors": [{**asdict(f), "met": f.met} for f in floors],
        "curves": [asdict(c) for c in curves],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def load_all() -> list[tuple[str, list[Floor], list[Curve]]]:
    out = []
    for path in sorted(RESULTS.glob("floors_*.json")):
        data = json.loads(path.read_text())
        floors = [Floor(**{k: v for k, v in f.items() if k != "met"}) for f in data["floors"]]
        curves = [
            Curve(c["name"], c["x_label"], c["y_label"], [tuple(p) for p in c["points"]])
            for c in data["curves"]
        ]
        out.append((data["bench"], floors, curves))
    return out


def curve_png(bench: str, index: int) -> str:
    """The file name of a curve's plot in benchmarks/results/."""
    return f"curve_{bench}_{index}.png"


def plot_curves(recorded=None) -> list[Path]:
    """One plot per growth curve (log-log when x spans decades), written to
    benchmarks/results/curve_<bench>_<n>.png. Returns the files written; none
    when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for bench, _, curves in load_all() if recorded is None else recorded:
        for i, c in enumerate(curves):
            if not c.points:
                continue
            xs, ys = zip(*c.points, strict=True)
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot(xs, ys, marker="o")
            if min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel(c.x_label)
            ax.set_ylabel(c.y_label)
            ax.set_title(f"{bench}: {c.name}", fontsize=10)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = RESULTS / curve_png(bench, i)
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written


def summary_section(recorded=None, images: bool = False) -> str:
    """The "Floors" section of SUMMARY.md: every recorded floor in one table,
    then each benchmark's floors next to its growth curves (a table each and,
    with `images`, the plot `plot_curves` wrote)."""
    recorded = load_all() if recorded is None else recorded
    if not recorded:
        return ""
    lines = ["## Floors", ""]
    lines += ["Every promise a benchmark checks, measured in this run.", ""]
    lines += HEADER
    for bench, floors, _ in recorded:
        lines += [f.row().replace("| ", f"| {bench}: ", 1) for f in floors]
    lines += ["", "## Growth curves, next to their floors", ""]
    for bench, floors, curves in recorded:
        if not curves:
            continue
        lines += [f"### {bench}", ""]
        if floors:
            lines += [*HEADER, *(f.row() for f in floors), ""]
        for i, c in enumerate(curves):
            lines += [f"{c.name}:", "", *c.table(), ""]
            if images and (RESULTS / curve_png(bench, i)).exists():
                lines += [f"![{bench}: {c.name}]({curve_png(bench, i)})", ""]
    return "\n".join(lines)
