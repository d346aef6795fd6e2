"""Writes docs/config.md from the C++ config's field table.

python docs/gen_config_reference.py        (tests check it is current)
"""

from pathlib import Path

from caudal import OptimizationConfig

HEADER = """# OptimizationConfig reference

Generated from the C++ config (`cpp/caudal/config/optimization_config.h`) by
`docs/gen_config_reference.py`; do not edit by hand. Defaults are those of flujo's OptimizationConfig;
where flujo gives none (`enable_automatic_optimization`,
`optimization_analysis_interval_seconds`, `performance_degradation_threshold`,
`performance_window_seconds`, `telemetry_sampling_rate`,
`telemetry_buffer_size`) the choice is caudal's and is marked *(caudal)*.

`validate()` returns one line per broken rule; `ExecutorCore`,
`apply_optimization_config` and `import_config` refuse an invalid config with
`caudal.ConfigurationError` and keep the config they had. Contradictory
settings reported by `validate()`: `enable_automatic_optimization` without
`enable_performance_monitoring`; `concurrency_min_limit` above
`concurrency_max_limit`, or `concurrency_initial_limit` outside them;
`circuit_breaker_minimum_calls` above a non-zero `circuit_breaker_window_size`.

Every numeric field has a maximum (the rule column): what the core can
represent, and what is sane to allocate. Durations are counted in 64-bit
nanoseconds, so every duration in seconds is at most 1e9 (about 31 years;
9.2e9 would overflow). `object_pool_max_size` is at most 65536 because the
record pool reserves room for that many idle records in each of its 8 shards
when the executor is made (4 MiB at the maximum). Counts the core keeps in
an `int` are at most 1000000; the concurrency limits at most 16777215 (the
gates count permits in 24 bits). Above its maximum, a field is a `validate()`
problem (`object_pool_max_size must be at most 65536`), so `ExecutorCore`,
`apply_optimization_config` and `import_config` refuse it. A value the field
cannot hold at all (an int beyond 64 bits, an int too large for a float)
raises `ConfigurationError` naming the field as soon as it is passed to the
constructor or assigned.

`from_json` and `import_config` take a str or UTF-8 bytes, and raise
`ConfigurationError` for every malformed input: text that is not UTF-8 (or a
str with lone surrogates), malformed JSON, a NUL byte or nesting deeper than
32 levels (each with its line and column: `$: malformed JSON at line 3,
column 1: ...`), duplicate keys (`$.cache_max_size: duplicate key`; JSON
parsers would let the last one win), numbers out of range, unknown fields and
wrong types, each with its JSON path.

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
    "max_tracked_steps",
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
