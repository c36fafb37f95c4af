"""Fixtures: a shared redis-server for the session, a shared broker per test
module, and factories for tests that need their own Redis or broker config.
Every process started is killed by PID at teardown."""
import os
import shutil

import pytest

import helpers


def pytest_report_header(config):
    return "broker under test: %s" % helpers.BROKER_BIN


def pytest_sessionstart(session):
    assert os.access(helpers.BROKER_BIN, os.X_OK), \
        "BROKER_BIN %s is not an executable (run make first)" % helpers.BROKER_BIN


@pytest.fixture(scope="session", autouse=True)
def _reap_everything():
    yield
    helpers.kill_all_live()
    shutil.rmtree(helpers.TMP_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def redis():
    """A redis-server shared by the tests that never stop it."""
    r = helpers.RedisServer().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def broker(redis):
    """A broker with the default configuration, shared by a module."""
    b = helpers.Broker(redis.port).start()
    yield b
    b.stop()


@pytest.fixture
def make_redis():
    """Factory: a redis-server of the test's own (not started; call
    .start()). Stopped at teardown."""
    made = []

    def make(port=None):
        r = helpers.RedisServer(port)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def make_broker():
    """Factory: make_broker(redis_port, wait="healthz", **config keys) starts
    a broker of the test's own; at teardown it gets SIGTERM and must exit 0
    with a log free of sanitizer reports."""
    made = []

    def make(redis_port, wait="healthz", **cfg):
        b = helpers.Broker(redis_port, **cfg)
        made.append(b)
        return b.start(wait=wait)

    yield make
    errors = []
    for b in made:
        try:
            b.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)
