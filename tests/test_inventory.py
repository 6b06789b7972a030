"""The batteries' inventory across a restart (controller/core/step.py, ``_inventory``).

A gateway whose power is pulled during a break-in scans nothing while the
modules go: the rules start again without history, so only the persisted
inventory (each battery's last modules and serial) can tell.  Table-driven,
in-process, on the pure core.
"""

import contextlib
import io

import pytest

from controller.core import modes
from controller.core.catalog import Catalog, device_signals
from controller.core.events import CMD_ARM, CMD_DISARM, CMD_MAINT_START, EV_INVENTORY, EV_MODE
from controller.core.step import CoreConfig, CoreState, step
from controller.devtools import mpy

SERIAL = 550200


def make():
    specs = device_signals("bms1", [("modules", "count", 0), ("serial", "count", 0)])
    specs += device_signals("bms2", [("modules", "count", 0), ("serial", "count", 0)])
    specs += device_signals("io", [("door", "bool", 0)])
    catalog = Catalog(specs)
    config = CoreConfig({"exit_delay_ms": 1000, "entry_delay_ms": 1000}, (catalog.index["io.door"],))
    return catalog, CoreState(catalog, config)


def answer(catalog, image, dev, modules, serial):
    image[catalog.index[dev + ".online"]] = 1
    image[catalog.index[dev + ".modules"]] = modules
    image[catalog.index[dev + ".serial"]] = serial


def before_restart(command, read=True):
    """A gateway that read both packs (8 modules each), got ``command`` and ran
    into it; returns what it persisted."""
    catalog, state = make()
    image = catalog.new_image()
    if read:
        answer(catalog, image, "bms1", 8, SERIAL)
        answer(catalog, image, "bms2", 8, SERIAL + 1)
    step(state, (image, [(CMD_ARM, 0)]), 0)
    if command is not None:
        step(state, (image, [(command, 0)]), 2000)
    step(state, (image, []), 3000)
    return state.persisted()


def after_restart(persisted, modules, serial):
    """A fresh core resumed from ``persisted``; bms1 answers first with
    ``modules`` and ``serial``, one scan later bms2 as it was."""
    catalog, state = make()
    state.resume_after_restart(persisted, 100000, 100000)
    image = catalog.new_image()
    events = list(step(state, (image, []), 100000)[1])     # nothing answers yet
    answer(catalog, image, "bms1", modules, serial)
    events += step(state, (image, []), 100100)[1]
    answer(catalog, image, "bms2", 8, SERIAL + 1)
    events += step(state, (image, []), 100200)[1]
    return catalog, state, events


@pytest.mark.parametrize("command, modules, serial, changed, alarm", [
    (None, 6, SERIAL, ["bms1.modules"], True),                      # armed: modules gone while down
    (None, 8, 387112, ["bms1.serial"], True),                       # armed: the pack swapped while down
    (None, 0, SERIAL, ["bms1.modules"], True),                      # armed: the whole pack gone
    (None, 8, SERIAL, [], False),                                   # armed: an honest restart
    (None, 9, SERIAL, [], False),                                   # a module added is no loss
    (CMD_MAINT_START, 6, SERIAL, ["bms1.modules"], False),          # a technician's visit: on the record
    (CMD_DISARM, 8, 387112, ["bms1.serial"], False),                # nothing guarded: on the record
])
def test_a_change_across_a_restart_alarms_only_while_guarding(command, modules, serial, changed, alarm):
    catalog, state, events = after_restart(before_restart(command), modules, serial)
    seen = [catalog.names[e[1]] for e in events if e[0] == EV_INVENTORY]
    assert seen == changed
    assert (state.mode == modes.ALARM) == alarm
    assert any(e[0] == EV_MODE and e[2] == modes.ALARM for e in events) == alarm


def test_batteries_never_read_before_the_restart_are_not_judged():
    _, state, events = after_restart(before_restart(None, read=False), 0, 1)
    assert not [e for e in events if e[0] == EV_INVENTORY] and state.mode == modes.ARMED


def test_a_second_restart_before_a_battery_answers_keeps_the_first_runs_inventory():
    catalog, state = make()
    state.resume_after_restart(before_restart(None), 100000, 100000)
    step(state, (catalog.new_image(), []), 100000)              # down again before any battery answered
    _, _, events = after_restart(state.persisted(), 7, SERIAL)
    assert [e[1:] for e in events if e[0] == EV_INVENTORY] == [(catalog.index["bms1.modules"], 8, 7)]


def test_the_inventory_follows_the_readings_and_changes_persisted_only_with_them():
    catalog, state = make()
    image = catalog.new_image()
    answer(catalog, image, "bms1", 8, SERIAL)
    step(state, (image, []), 0)
    first = state.persisted()
    step(state, (image, []), 100)
    assert state.persisted() == first
    image[catalog.index["bms1.modules"]] = 7
    step(state, (image, []), 200)
    assert state.persisted()[5][0] == (catalog.index["bms1.modules"], 7, SERIAL)
    image[catalog.index["bms1.online"]] = 0
    image[catalog.index["bms1.modules"]] = 0                     # offline: its reading is not news
    step(state, (image, []), 300)
    assert state.persisted()[5][0] == (catalog.index["bms1.modules"], 7, SERIAL)


# The same restart in MicroPython: armed, both packs read, down; bms1 comes
# back with a module gone and bms2 with another serial.
RESTART = """
from controller.core.catalog import Catalog, device_signals
from controller.core.events import CMD_ARM
from controller.core.step import CoreConfig, CoreState, step
specs = device_signals('bms1', [('modules', 'count', 0), ('serial', 'count', 0)])
specs += device_signals('bms2', [('modules', 'count', 0), ('serial', 'count', 0)])
catalog = Catalog(specs)
def answer(image, dev, modules, serial):
    image[catalog.index[dev + '.online']] = 1
    image[catalog.index[dev + '.modules']] = modules
    image[catalog.index[dev + '.serial']] = serial
config = CoreConfig({'exit_delay_ms': 1000})
state = CoreState(catalog, config)
image = catalog.new_image()
answer(image, 'bms1', 8, 550200)
answer(image, 'bms2', 8, 550201)
step(state, (image, [(CMD_ARM, 0)]), 0)
step(state, (image, []), 2000)
saved = state.persisted()
state = CoreState(catalog, config)
state.resume_after_restart(saved, 90000, 90000)
image = catalog.new_image()
answer(image, 'bms1', 7, 550200)
answer(image, 'bms2', 8, 387112)
out, events = step(state, (image, []), 90000)
print(saved, list(out), list(events), state.persisted())
"""


@pytest.mark.skipif(not mpy.available(), reason="MicroPython not set up (make setup)")
def test_micropython_judges_the_restart_as_cpython_does():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(RESTART, {})
    assert "(12," in printed.getvalue()          # EV_INVENTORY was emitted
    (out,) = mpy.run([RESTART])
    assert out == printed.getvalue()


def test_a_snapshot_taken_before_a_battery_answers_replays_the_judgement():
    catalog, state = make()
    state.resume_after_restart(before_restart(None), 100000, 100000)
    step(state, (catalog.new_image(), []), 100000)
    _, replay = make()
    replay.restore(state.snapshot())                # an evidence window cut here
    image = catalog.new_image()
    answer(catalog, image, "bms1", 7, SERIAL)
    events = step(replay, (image, []), 100100)[1]
    assert (EV_INVENTORY, catalog.index["bms1.modules"], 8, 7) in events and replay.mode == modes.ALARM
