"""``import caudal`` loads no optional integration and no heavy library.

SQLite, Redis, PostgreSQL, OpenTelemetry, Ray, Prometheus, matplotlib and
PyYAML are loaded when a feature that needs them is first used (a SQLite or
PostgreSQL store, a Redis cache tier, an exporter, a Ray step, a plot, a YAML
definition), never by the import itself. Checked in a fresh interpreter,
since this test process has long imported them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

NOT_ON_IMPORT = (
    "sqlite3",
    "redis",
    "psycopg",
    "opentelemetry",
    "ray",
    "prometheus_client",
    "matplotlib",
    "yaml",
)


def _loaded_after(code: str) -> set[str]:
    script = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_caudal_loads_no_optional_dependency():
    loaded = _loaded_after("import caudal")
    assert "caudal" in loaded
    assert sorted(loaded & set(NOT_ON_IMPORT)) == []


def test_the_check_sees_a_lazy_store_when_it_is_used():
    # The same probe does see sqlite3 once the default store is asked for, so
    # the test above can fail.
    loaded = _loaded_after("import caudal\ncaudal.SqliteStore")
    assert "sqlite3" in loaded
