import os

import caudal


def pytest_report_header(config):
    return f"caudal from {os.path.dirname(caudal.__file__)}"


def pytest_sessionstart(session):
    # `make test-asan` stages an instrumented module; make sure it is the one
    # under test rather than the editable install.
    expected = os.environ.get("CAUDAL_EXPECT_CORE")
    if expected:
        import caudal._core

        assert os.path.dirname(caudal._core.__file__) == expected, caudal._core.__file__
