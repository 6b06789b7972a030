import pytest

from controller.core import modes
from controller.core.errors import ModeError
from controller.core.step import CoreConfig


def machine():
    return modes.ModeMachine(CoreConfig({"exit_delay_ms": 1000, "entry_delay_ms": 2000,
                                         "maint_default_ms": 5000, "maint_max_ms": 9000}))


def test_every_mode_accepts_every_internal_event():
    for mode, row in modes.TRANSITIONS.items():
        for ev in modes.INTERNAL_EVENTS:
            assert ev in row, (modes.MODE_NAMES[mode], modes.EVENT_NAMES[ev])


def test_illegal_command_names_state_and_event():
    m = machine()
    m.fire(modes.RAISE_ALARM, 0)
    with pytest.raises(ModeError, match="mode alarm does not accept disarm"):
        m.fire(modes.DISARM, 10)
    assert m.mode == modes.ALARM


def test_exit_then_entry_delay_then_alarm():
    m = machine()
    m.fire(modes.ARM, 0)
    assert m.mode == modes.ARMING and m.expiry(999) == -1
    assert m.expiry(1000) == modes.EXIT_DONE
    m.fire(modes.EXIT_DONE, 1000)
    m.fire(modes.ENTRY_OPENED, 5000)
    assert m.mode == modes.ENTRY and m.remaining(6000) == 1000
    assert m.expiry(7000) == modes.ENTRY_EXPIRED
    m.fire(modes.ENTRY_EXPIRED, 7000)
    assert m.mode == modes.ALARM


def test_maintenance_resumes_armed_and_is_capped():
    m = machine()
    m.fire(modes.ARM, 0)
    m.fire(modes.EXIT_DONE, 1000)
    m.fire(modes.MAINT_START, 2000, 60000)
    assert m.mode == modes.MAINTENANCE and m.remaining(2000) == 9000
    m.fire(modes.MAINT_EXPIRED, 11000)
    assert m.mode == modes.ARMING


def test_maintenance_from_disarmed_resumes_disarmed():
    m = machine()
    m.fire(modes.MAINT_START, 0)
    assert m.remaining(0) == 5000
    m.fire(modes.MAINT_STOP, 100)
    assert m.mode == modes.DISARMED


def test_only_the_command_sets_the_visits_window():
    m = machine()
    m.fire(modes.MAINT_START, 0, 8000)
    for event in (modes.ENTRY_OPENED, modes.RAISE_ALARM, modes.EXIT_DONE, modes.RAISE_FAULT):
        m.fire(event, 1000)                      # the door opens, a rule raises: the visit keeps its end
        assert m.mode == modes.MAINTENANCE and m.remaining(1000) == 7000
    m.fire(modes.MAINT_START, 2000, 3000)        # a new request sets a new end
    assert m.remaining(2000) == 3000


def test_a_fault_never_disarms():
    m = machine()
    m.fire(modes.ARM, 0)
    m.fire(modes.EXIT_DONE, 1000)
    m.fire(modes.RAISE_FAULT, 1100)
    assert m.mode == modes.ARMED


def test_restore_after_restart():
    for persisted, expected in ((modes.ALARM, modes.ALARM), (modes.ENTRY, modes.ALARM),
                                (modes.ARMING, modes.ARMED), (modes.DISARMED, modes.DISARMED),
                                (modes.MAINTENANCE, modes.MAINTENANCE), (99, modes.DISARMED)):
        m = machine()
        m.restore(persisted, modes.ARMING, 0)
        assert m.mode == expected
    m = machine()
    m.restore(modes.MAINTENANCE, modes.ARMING, 100)
    assert m.remaining(100) == 5000
    m.fire(modes.MAINT_STOP, 200)
    assert m.mode == modes.ARMING
