import pytest

from controller.devtools.pgserver import PgServer
from simulator.broker import Broker
from tests.scheduling import check_group, schedule


def pytest_collection_modifyitems(items):
    schedule(items)


def pytest_runtest_setup(item):
    check_group(item)


@pytest.fixture
def broker():
    b = Broker().start()
    yield b
    b.cleanup()


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL for the session (private port and data folder); each test takes a new database."""
    server = PgServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def pg(pg_server):
    """The URL of a new, empty PostgreSQL database."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """The head end's store, once per backend: a SQLite path or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "headend.db")
    return request.getfixturevalue("pg")
