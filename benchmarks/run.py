"""Runs every benchmark and writes benchmarks/results/SUMMARY.md.

python benchmarks/run.py [--quick]      (what `make bench` / `make bench-quick` run)

Each benchmarks/bench_*.py runs in its own process (its contenders
interleaved inside it), then the pytest-benchmark micro-benchmarks
(benchmarks/test_micro.py). Machine-readable results go to
benchmarks/results/*.json, plots to benchmarks/results/*.png, and one summary
to benchmarks/results/SUMMARY.md: the headline table of bench_report.py
(the five metrics of flujo's tuning report, the ablation matrix and flujo) first, then every
benchmark's own output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _floors import summary_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# The headline first; then the rest in name order.
FIRST = ["bench_report.py"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="CI-sized runs")
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
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
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
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
        failed.append("test_micro.py")
    else:
        sections.append(("test_micro.py", micro_table(micro_json), time.time() - t0))
        print(sections[-1][1])

    lines = ["# Benchmark summary", ""]
    overhead = RESULTS / "overhead.json"
    if overhead.exists():
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
            "## Headline: the five metrics of flujo's tuning report (bench_report.py)",
            "",
            report.read_text(),
            "",
        ]
    floors = summary_section()
    if floors:
        lines += [floors, ""]
    for png in sorted(RESULTS.glob("*.png")):
        if png.name != "ablation.png":
            lines += [f"![{png.stem}]({png.name})", ""]
    for name, out, secs in sections:
        lines += [f"## {name} ({secs:.0f} s)", "", "```", out, "```", ""]
    if failed:
        lines += ["## Failed", "", *[f"- {f}" for f in failed], ""]
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print(f"summary: {RESULTS / 'SUMMARY.md'} ({time.time() - t_start:.0f} s)")
    return 1 if failed else 0


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
