"""Runs every benchmarks/bench_*.py and writes benchmarks/results/SUMMARY.md.

python benchmarks/run.py [--quick]      (what `make bench` runs)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="CI-sized runs")
    args = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    failed = []
    sections = []
    for bench in sorted(HERE.glob("bench_*.py")):
        cmd = [sys.executable, str(bench)] + (["--quick"] if args.quick else [])
        print(f"== {bench.name}", flush=True)
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(proc.stdout, end="")
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            failed.append(bench.name)
            continue
        sections.append((bench.name, proc.stdout.strip(), time.time() - t0))
    lines = ["# Benchmark summary", ""]
    overhead = RESULTS / "overhead.json"
    if overhead.exists():
        m = json.loads(overhead.read_text())["machine"]
        lines += [
            f"Machine: {m['processor']}, {m['cpus']} CPUs, Python {m['python']}, "
            f"{m['platform']}; {m['date']}.",
            "",
        ]
    for name, out, secs in sections:
        lines += [f"## {name} ({secs:.0f} s)", "", "```", out, "```", ""]
    if failed:
        lines += ["## Failed", "", *[f"- {f}" for f in failed], ""]
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print(f"summary: {RESULTS / 'SUMMARY.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
