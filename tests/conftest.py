import pytest

from simulator.broker import Broker


@pytest.fixture
def broker():
    b = Broker().start()
    yield b
    b.cleanup()
