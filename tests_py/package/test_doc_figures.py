"""Every measured figure in README.md and docs/*.md is generated from the
committed benchmark results (benchmarks/figures.py), so a hand edit or a
stale copy fails here. Nothing is timed: the figures are read, not measured.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import figures  # noqa: E402

# A time or a ratio: "0.63 µs", "36 ns", "2.3 ms", "55x", "1.5x" (or with a
# multiplication sign).
FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:\s?(?:µs|ns|ms)\b|[x\u00d7](?![\w]))")
MARKED = re.compile(
    r"<!-- fig .*? -->.*?<!-- /fig -->|<!-- table .*? -->\n.*?<!-- /table -->", re.S
)
# A figure right after these words is a promise (a floor, a budget).
PROMISE = re.compile(r"(?:<=|>=|at most|at least|no more than|floor|budget of|within)\s*$")
# Figures that are not measurements of this repository: promises (floors,
# budgets), design constants (thresholds, bucket bounds) and other projects'
# published figures. Each entry is (file, the phrase around the figure).
NOT_MEASURED = {
    # flujo's published tuning report
    ("README.md", "3x to 58x"),
    ("docs/performance.md", "execution was 4x slower, memory 5x worse,"),
    ("docs/performance.md", "concurrent execution 58x slower"),
    ("docs/performance.md", "cache 36x slower and context handling 51x slower"),
    ("docs/cache.md", 'tuning report\'s "cache 36x slower"'),
    ("docs/context.md", "(38x slower"),
    # promises
    ("docs/performance.md", '("at most 1.5x")'),
    # design constants: thresholds, intervals, bounds
    ("docs/cache.md", "`kCacheLookupCostNs` = 500 ns"),
    ("docs/cache.md", "A step cheaper than 50 µs"),
    ("docs/cache.md", "Steps of 50 µs or more"),
    ("docs/concurrency.md", "Samples faster than 100 µs"),
    ("docs/concurrency.md", "release the GIL for ~50 µs"),
    ("docs/pipelines.md", "`inline_max_s` (default: 1 ms)"),
    ("docs/concurrency.md", "between 10 ms and 1 s"),
    ("docs/concurrency.md", "(up to 16x, 800 windows)"),
    ("docs/memory.md", "every 250 ms"),
    ("docs/monitoring.md", "buckets 1 µs to 100 s"),
    ("docs/monitoring.md", "every 250 ms"),
    ("docs/resilience.md", "between 50 ms and 1 s"),
    ("docs/executor.md", "For its first 10 ms in a process"),
    ("docs/executor.md", "Every 50 ms one read"),
    ("docs/executor.md", "for the next 50 ms"),
    ("docs/executor.md", "by more than 1 ms plus"),
    # workloads' parameters (what a benchmark or simulation is given)
    ("docs/concurrency.md", "5 % taking 50\u2013100x"),
    ("docs/concurrency.md", "answering in 20\u201360 ms"),
    ("docs/concurrency.md", "50\u2013100x slower and a 429"),
    ("docs/concurrency.md", "after 100 ms, or at once"),
    ("docs/concurrency.md", "base latency 20 ms"),
    ("docs/concurrency.md", "load 2\u20135x"),
    ("docs/concurrency.md", "`time.sleep(1 ms)`"),
    ("docs/scale-out.md", "holding the GIL for about 50 ms"),
    # examples of output and messages
    ("docs/events.md", '"p95 2.016 ms vs baseline 1.008 ms"'),
    ("docs/guide.md", "completed in 31.3 ms (4 completed)"),
    ("docs/guide.md", "the small group near 5 ms are 503 answers"),
    ("docs/resilience.md", '"timeout after 31ms'),
    ("docs/resilience.md", '"timeout after 7ms id=0x1"'),
}  # fmt: skip


def committed_results() -> dict[str, object]:
    """The results files as committed (HEAD): a benchmark run locally, not
    yet committed with its docs, does not change what this test reads."""
    try:
        names = subprocess.run(
            ["git", "ls-files", "benchmarks/results/*.json"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        out = {}
        for name in names:
            blob = subprocess.run(
                ["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True
            )
            if blob.returncode == 0:
                out[Path(name).stem] = json.loads(blob.stdout)
        return out
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed results are unknown")


def docs() -> list[Path]:
    return figures.doc_files(ROOT)


def test_figures_equal_what_the_committed_results_give():
    results = committed_results()
    stale = []
    for path in docs():
        text = path.read_text()
        rendered = figures.rewrite(text, results, str(path.relative_to(ROOT)))
        if rendered != text:
            for n, (a, b) in enumerate(zip(text.splitlines(), rendered.splitlines(), strict=False)):
                if a != b:
                    stale.append(f"{path.relative_to(ROOT)}:{n + 1}: {a.strip()[:120]}")
                    break
    assert not stale, (
        "figures differ from the committed benchmark results (hand-edited or stale); "
        "run `python benchmarks/figures.py` and commit the results with the docs:\n"
        + "\n".join(stale)
    )


def test_every_measured_figure_is_generated():
    loose = []
    for path in docs():
        rel = str(path.relative_to(ROOT))
        allowed = [phrase for f, phrase in NOT_MEASURED if f == rel]
        text = MARKED.sub(lambda m: "\n" * m.group().count("\n"), path.read_text())
        text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
        for n, line in enumerate(text.splitlines(), 1):
            for m in FIGURE.finditer(line):
                if PROMISE.search(line[: m.start()]):
                    continue  # "at most 1.5x", "<= 2x": a promise, not a measurement
                joined = _paragraph(text, n)
                if any(p in joined and m.group() in p for p in allowed):
                    continue
                loose.append(f"{rel}:{n}: {m.group()!r} in {line.strip()[:100]!r}")
    assert not loose, (
        "measured figures outside a generated marker (wrap each in <!-- fig file:key --> "
        "... <!-- /fig -->, or, for a promise or a design constant, add it to "
        "NOT_MEASURED):\n" + "\n".join(loose)
    )


def _paragraph(text: str, line_no: int) -> str:
    """The line with its neighbours joined, so that a phrase wrapped over two
    lines still matches."""
    lines = text.splitlines()
    return " ".join(x.strip() for x in lines[max(0, line_no - 2) : line_no + 1])


def test_a_hand_edited_figure_fails(tmp_path):
    results = committed_results()
    perf = ROOT / "docs" / "performance.md"
    text = perf.read_text()
    m = figures.INLINE.search(text)
    assert m, "docs/performance.md has no generated figure"
    edited = text[: m.start("text")] + "999.99" + text[m.end("text") :]
    assert figures.rewrite(edited, results) == text
    assert figures.rewrite(edited, results) != edited


def test_a_key_no_result_provides_is_an_error():
    with pytest.raises(figures.FigureError, match="no key 'nope'"):
        figures.rewrite("<!-- fig report:nope --><!-- /fig -->", {"report": {}}, "x.md")
    with pytest.raises(figures.FigureError, match="no results file"):
        figures.rewrite("<!-- fig absent:x --><!-- /fig -->", {}, "x.md")


def test_markers_render_formats_ratios_and_list_items():
    results = {"r": {"a": 0.634, "b": 2.0, "rows": [{"name": "x", "v": 1500.0}], "t": "| a |\n"}}
    text = (
        "<!-- fig r:a -->?<!-- /fig --> "
        "<!-- fig r:rows/name=x/v ; ,.0f -->?<!-- /fig --> "
        "<!-- fig r:b over r:a ; .1f -->?<!-- /fig --> "
        "<!-- fig r:rows/name=x/v ; .1f *0.001 -->?<!-- /fig --> "
        "<!-- fig r:b minus r:a ; +.2f -->?<!-- /fig -->\n"
        "<!-- table r:t -->\nold\n<!-- /table -->"
    )
    out = figures.rewrite(text, results)
    assert ">0.63<" in out and ">1,500<" in out and ">3.2<" in out and ">1.5<" in out
    assert ">+1.37<" in out
    assert "<!-- table r:t -->\n| a |\n<!-- /table -->" in out


def test_the_floors_table_shows_every_recorded_floor_and_its_curves():
    floor = {"name": "per call, 100,000 steps / 10", "measured": 1.2, "limit": 1.5,
             "unit": "x", "at_least": False, "detail": "median", "met": True}  # fmt: skip
    missed = {**floor, "name": "retry above a bare raise", "measured": 0.7, "limit": 0.5,
              "unit": "µs", "met": False}  # fmt: skip
    curve = {"name": "per call against distinct steps", "x_label": "steps",
             "y_label": "µs per call", "points": [[10, 0.6], [100000, 0.7]]}  # fmt: skip
    results = {
        "floors_steps": {"bench": "steps", "floors": [floor], "curves": [curve]},
        "floors_retry": {"bench": "retry", "floors": [missed], "curves": []},
        "report": {},
    }
    out = figures.rewrite("<!-- table floors -->\n<!-- /table -->", results)
    assert "| steps: per call, 100,000 steps / 10 | 1.2 x | <= 1.5 x | met |" in out
    assert "| retry: retry above a bare raise | 0.7 µs | <= 0.5 µs | NOT MET |" in out
    assert "steps: per call against distinct steps" in out and "| 1e+05 | 0.7 |" not in out
    assert "| 100,000 | 0.7 |" in out
    empty = figures.rewrite("<!-- table floors -->\n<!-- /table -->", {"report": {}})
    assert "No floor recorded yet" in empty


def test_summary_puts_each_benchmarks_curves_next_to_its_floors():
    from _floors import Curve, Floor, summary_section

    recorded = [
        ("steps", [Floor("a / b", 1.2, 1.5)], [Curve("per call", "steps", "µs", [(10, 0.6)])]),
        ("names", [Floor("KiB per name", 0.9, 1.0, unit="KiB")], []),
    ]
    text = summary_section(recorded)
    floors_at = text.index("## Floors")
    curves_at = text.index("## Growth curves")
    assert floors_at < text.index("| names: KiB per name |") < curves_at
    section = text[curves_at:]
    assert section.index("### steps") < section.index("| a / b |") < section.index("per call:")
    assert "### names" not in section  # no curve, nothing to show next to its floor
