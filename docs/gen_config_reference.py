"""Writes docs/config.md from the C++ config's field table.

python docs/gen_config_reference.py        (tests check it is current)
"""

from pathlib import Path

from caudal import OptimizationConfig

HEADER = """# OptimizationConfig reference

Generated from the C++ config (`cpp/caudal/config/optimization_config.h`) by
`docs/gen_config_reference.py`; do not edit by hand. Defaults are seed 001's;
where the seed gives none (`enable_automatic_optimization`,
`optimization_analysis_interval_seconds`, `performance_degradation_threshold`,
`performance_window_seconds`, `telemetry_sampling_rate`,
`telemetry_buffer_size`) the choice is caudal's and is marked *(caudal)*.

`validate()` returns one line per broken rule; `ExecutorCore`,
`apply_optimization_config` and `import_config` refuse an invalid config with
`caudal.ConfigurationError` and keep the config they had. Contradictory
settings reported by `validate()`: `enable_automatic_optimization` without
`enable_performance_monitoring`.

Fields of components that are not implemented yet are accepted, validated,
stored and exported, and have no effect; the status table in
[executor.md](executor.md#status) lists which.

| field | type | default | rule | what it does |
|---|---|---|---|---|
"""

CAUDAL_CHOICE = {
    "enable_automatic_optimization",
    "optimization_analysis_interval_seconds",
    "performance_degradation_threshold",
    "telemetry_sampling_rate",
    "telemetry_buffer_size",
    "performance_window_seconds",
}


def render() -> str:
    rows = []
    for f in OptimizationConfig.fields():
        default = f"`{f['default']}`" + (" *(caudal)*" if f["name"] in CAUDAL_CHOICE else "")
        cells = [f"`{f['name']}`", f["type"], default, f["rule"] or "-", f["doc"]]
        # A "|" inside a cell (the type "int | None") would split the column.
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "config.md"
    out.write_text(render())
    print(f"wrote {out}")
