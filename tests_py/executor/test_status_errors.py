"""The one status -> exception translation of the bindings (docs/errors.md).

Every absl::StatusCode the core can return maps to one documented Python
exception; ``_core._raise_status(code, message)`` runs that translation.
"""

import asyncio
import pathlib
import re

import pytest

import caudal
from caudal import _core

# absl::StatusCode numbers (absl/status/status.h).
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
DATA_LOSS = 15
UNAUTHENTICATED = 16

# The table of cpp/bindings/common.h and docs/errors.md.
TABLE = {
    CANCELLED: caudal.CaudalError,
    UNKNOWN: caudal.CaudalError,
    INVALID_ARGUMENT: caudal.ConfigurationError,
    DEADLINE_EXCEEDED: TimeoutError,
    NOT_FOUND: KeyError,
    ALREADY_EXISTS: ValueError,
    PERMISSION_DENIED: PermissionError,
    RESOURCE_EXHAUSTED: caudal.QueueFullError,
    FAILED_PRECONDITION: ValueError,
    ABORTED: RuntimeError,
    OUT_OF_RANGE: IndexError,
    UNIMPLEMENTED: NotImplementedError,
    INTERNAL: RuntimeError,
    UNAVAILABLE: caudal.OverloadedError,
    DATA_LOSS: ValueError,
    UNAUTHENTICATED: PermissionError,
}


CODE_NAMES = {v: k for k, v in dict(globals()).items() if k.isupper() and isinstance(v, int)}
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_table_covers_every_error_code():
    assert sorted(TABLE) == list(range(1, 17))


@pytest.mark.parametrize("code", sorted(TABLE))
def test_each_code_raises_its_documented_exception(code):
    with pytest.raises(Exception) as info:
        _core._raise_status(code, "what went wrong")
    # Exactly the documented class, not merely a subclass of it.
    assert type(info.value) is TABLE[code]
    assert "what went wrong" in str(info.value)


@pytest.mark.parametrize("code", sorted(TABLE))
def test_no_code_becomes_a_task_cancellation(code):
    # asyncio.CancelledError would read as the awaiting task being cancelled.
    with pytest.raises(Exception) as info:
        _core._raise_status(code, "x")
    assert not isinstance(info.value, asyncio.CancelledError)


def test_invalid_argument_lists_one_problem_per_line():
    with pytest.raises(caudal.ConfigurationError) as info:
        _core._raise_status(INVALID_ARGUMENT, "a: must be > 0\nb: unknown field\n")
    assert info.value.problems == ["a: must be > 0", "b: unknown field"]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, caudal.CaudalError)


def test_messages_are_kept_whole():
    with pytest.raises(ValueError, match=r"^step 'x' is done, not ready$"):
        _core._raise_status(FAILED_PRECONDITION, "step 'x' is done, not ready")
    with pytest.raises(IndexError, match=r"^step id 7 out of range$"):
        _core._raise_status(OUT_OF_RANGE, "step id 7 out of range")
    with pytest.raises(caudal.QueueFullError, match=r"^task queue is full$"):
        _core._raise_status(RESOURCE_EXHAUSTED, "task queue is full")


def test_ok_is_a_binding_bug():
    with pytest.raises(SystemError, match="OK status"):
        _core._raise_status(OK, "ignored")


def test_an_unknown_code_is_a_caudal_error():
    with pytest.raises(caudal.CaudalError) as info:
        _core._raise_status(99, "from the future")
    assert type(info.value) is caudal.CaudalError
    assert "from the future" in str(info.value)


# ------------------------------------------------ call sites that translate


async def test_a_shut_down_pool_refuses_with_value_error():
    pool = caudal.WorkerPool(workers=1, queue_size=4)
    await pool.aclose()
    with pytest.raises(ValueError, match="shut down"):
        pool.submit(lambda: None)


async def test_a_full_pool_queue_is_queue_full_error():
    import threading

    gate = threading.Event()
    pool = caudal.WorkerPool(workers=1, queue_size=1)
    try:
        running = pool.submit(gate.wait)
        queued = []
        with pytest.raises(caudal.QueueFullError, match="task queue is full"):
            for _ in range(4):
                queued.append(pool.submit(lambda: None))
    finally:
        gate.set()
        await pool.aclose()
    assert await running is True
    for q in queued:
        await q


def test_a_corrupt_cache_frame_is_value_error():
    framed = _core.compress(b"x" * 5000)
    with pytest.raises(ValueError, match="zstd"):
        _core.decompress(framed[:12])


def test_dag_run_states_and_ranges():
    dag = _core.Dag([("a", []), ("b", ["a"])])
    run = _core.DagRun(dag)
    with pytest.raises(ValueError, match="not ready"):
        run.mark_done(1)
    with pytest.raises(IndexError, match="out of range"):
        run.mark_done(5)


def test_a_context_key_whose_eq_raises_propagates_that_exception():
    class Boom(Exception):
        pass

    class Key:
        def __hash__(self):
            return 1

        def __eq__(self, other):
            raise Boom("eq")

    ctx = caudal.Context({Key(): 1})
    with pytest.raises(Boom):
        ctx[Key()]


def test_the_core_refuses_bad_native_pool_settings():
    with pytest.raises(caudal.ConfigurationError, match="task_timeout_ns must be >= 0"):
        _core.WorkerPool(1, 4, -1.0, None)
    with pytest.raises(caudal.ConfigurationError, match="queue_size must be >= 1"):
        _core.WorkerPool(1, 0, 0.0, None)


def test_a_dag_step_id_out_of_range_is_index_error():
    dag = _core.Dag([("a", [])])
    with pytest.raises(IndexError, match=r"^step id 3 out of range$"):
        dag.deps(3)


def test_docs_errors_md_states_the_same_table():
    doc = ROOT / "docs" / "errors.md"
    documented = {}
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"`[A-Z_]+`(, `[A-Z_]+`)*", cells[0]):
            continue
        exc = re.match(r"`(?:caudal\.)?(\w+)`", cells[1]).group(1)
        for name in re.findall(r"`([A-Z_]+)`", cells[0]):
            documented[name] = exc
    assert documented == {CODE_NAMES[code]: cls.__name__ for code, cls in TABLE.items()}


def test_common_h_comment_states_the_same_table():
    header = ROOT / "cpp" / "bindings" / "common.h"
    documented = {}
    for m in re.finditer(r"^//   k(\w+)\s+(?:caudal\.)?(\w+)", header.read_text(), re.M):
        code = re.sub(r"(?<!^)([A-Z])", r"_\1", m.group(1)).upper()
        documented[code] = m.group(2)
    expected = {CODE_NAMES[code]: cls.__name__ for code, cls in TABLE.items()}
    expected["OK"] = "SystemError"
    assert documented == expected


@pytest.mark.parametrize("code", [INTERNAL, NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE])
def test_a_message_keeps_every_byte(code):
    # A NUL does not cut it short; bytes that are not UTF-8 are replaced.
    with pytest.raises(Exception) as info:
        _core._raise_status(code, b"before\x00after \xff end")
    assert type(info.value) is TABLE[code]
    assert "before\x00after \ufffd end" in info.value.args[0]
