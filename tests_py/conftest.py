import os

import pytest

import caudal
from _servers import RedisServer, RedisServerUnavailable

# The wheel tests need the wheels `make test-wheels` builds first (it sets
# CAUDAL_WHEELS_DIR); a plain run does not collect them.
collect_ignore = [] if os.environ.get("CAUDAL_WHEELS_DIR") else ["wheels"]


def pytest_report_header(config):
    return f"caudal from {os.path.dirname(caudal.__file__)}"


def pytest_sessionstart(session):
    # `make test-asan` stages an instrumented module; make sure it is the one
    # under test rather than the editable install.
    expected = os.environ.get("CAUDAL_EXPECT_CORE")
    if expected:
        import caudal._core

        assert os.path.dirname(caudal._core.__file__) == expected, caudal._core.__file__


# ------------------------------------------------------------ real servers
# Tests that need Redis get a real redis-server (tests_py/_servers.py). It
# is never skipped: a missing redis-server fails those tests, saying how to
# install it.


def _start_redis(workdir) -> RedisServer:
    try:
        server = RedisServer(workdir)
        server.start()
    except RedisServerUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """URL of a redis-server shared by the session (tests use their own prefixes)."""
    server = _start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def redis_restartable(tmp_path):
    """A redis-server of this test's own, with ``kill()`` / ``start()`` (same port)."""
    server = _start_redis(tmp_path / "redis")
    yield server
    server.stop()
