"""Runs every benchmark and writes benchmarks/results/SUMMARY.md.

python benchmarks/run.py [--quick]      (what `make bench` / `make bench-quick` run)

Each benchmarks/bench_*.py runs in its own process (its contenders
interleaved inside it), then the pytest-benchmark micro-benchmarks
(benchmarks/test_micro.py). Machine-readable results go to
benchmarks/results/*.json, plots to benchmarks/results/*.png, and one summary
to benchmarks/results/SUMMARY.md: the headline tables of bench_report.py
(caudal against flujo on new and repeated inputs, the five metrics of flujo's
tuning report as an ablation matrix) first, then the floors next to the growth
curves, then every benchmark's own output. Last, benchmarks/figures.py copies
the figures the docs give from this run's results into README.md and docs/.

A benchmark that fails (or runs past --timeout) is listed under "Failed" and
the run goes on: the others' results are still written, and the exit status
is 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _floors import plot_curves, summary_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# The headline first; then the rest in name order.
FIRST = ["bench_report.py"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="CI-sized runs")
    p.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    args = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    t_start = time.time()
    failed = []
    sections = []
    benches = sorted(HERE.glob("bench_*.py"), key=lambda b: (b.name not in FIRST, b.name))
    for bench in benches:
        cmd = [sys.executable, str(bench)] + (["--quick"] if args.quick else [])
        print(f"== {bench.name}", flush=True)
        t0 = time.time()
        proc = _run(cmd, args.timeout)
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            failed.append(bench.name)
            continue
        sections.append((bench.name, proc.stdout.strip(), time.time() - t0))

    print("== test_micro.py (pytest-benchmark)", flush=True)
    t0 = time.time()
    micro_json = RESULTS / "micro.json"
    cmd = [
        sys.executable, "-m", "pytest", str(HERE / "test_micro.py"), "-q",
        "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={micro_json}",
        "--benchmark-columns=min,median,iqr,rounds", "--benchmark-sort=name",
    ]  # fmt: skip
    if args.quick:
        cmd += ["--benchmark-min-rounds=3", "--benchmark-max-time=0.05"]
    proc = _run(cmd, args.timeout, cwd=HERE.parent)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
        failed.append("test_micro.py")
    else:
        try:
            sections.append(("test_micro.py", micro_table(micro_json), time.time() - t0))
            print(sections[-1][1])
        except (OSError, ValueError, KeyError) as e:
            print(f"test_micro.py: unreadable results ({e})", file=sys.stderr)
            failed.append("test_micro.py")

    lines = ["# Benchmark summary", ""]
    overhead = RESULTS / "overhead.json"
    if overhead.exists() and "bench_overhead.py" not in failed:
        m = json.loads(overhead.read_text())["machine"]
        lines += [
            f"Machine: {m['processor']}, {m['cpus']} CPUs, Python {m['python']}, "
            f"{m['platform']}; {m['date']}. `make bench{'-quick' if args.quick else ''}` "
            f"took {time.time() - t_start:.0f} s.",
            "",
        ]
    report = RESULTS / "report.md"
    if report.exists() and "bench_report.py" not in failed:
        lines += [
            "## Headline: caudal against flujo, and the five metrics of flujo's tuning report "
            "(bench_report.py)",
            "",
            report.read_text(),
            "",
        ]
    try:
        plot_curves()
    except Exception as e:  # a plot is a convenience: the tables carry the figures
        print(f"curve plots skipped ({type(e).__name__}: {e})", file=sys.stderr)
    floors = summary_section(images=True)
    if floors:
        lines += [floors, ""]
    for png in sorted(RESULTS.glob("*.png")):
        if png.name != "ablation.png" and not png.name.startswith("curve_"):
            lines += [f"![{png.stem}]({png.name})", ""]
    for name, out, secs in sections:
        lines += [f"## {name} ({secs:.0f} s)", "", "```", out, "```", ""]
    if failed:
        lines += ["## Failed", "", *[f"- {f}" for f in failed], ""]
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print(f"summary: {RESULTS / 'SUMMARY.md'} ({time.time() - t_start:.0f} s)")
    # The docs' figures from this run's results (fails on a key no result gives).
    fig = subprocess.run([sys.executable, str(HERE / "figures.py")], cwd=HERE.parent)
    if fig.returncode != 0:
        failed.append("figures.py")
    return 1 if failed else 0


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run one benchmark; a crash or a timeout is a failed run, never the end of all."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        return subprocess.CompletedProcess(cmd, 1, out, f"timed out after {timeout:.0f} s")


def micro_table(path: Path) -> str:
    data = json.loads(path.read_text())
    rows = [f"{'benchmark':42}{'per op, median':>16}{'per op, min':>14}{'rounds':>8}"]
    for b in data["benchmarks"]:
        n = b.get("extra_info", {}).get("n", 1)
        s = b["stats"]
        rows.append(
            f"{b['name']:42}{s['median'] / n * 1e6:>13.3f} us{s['min'] / n * 1e6:>11.3f} us"
            f"{s['rounds']:>8}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
