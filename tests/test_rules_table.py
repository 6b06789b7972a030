"""The portable evaluator: timing functions, latching, hysteresis, modes,
change-driven evaluation, and its place in step()."""

import random
import re

import pytest

from controller.cli.rulescmd import site_catalog
from controller.core import modes, ticks
from controller.core.catalog import Catalog
from controller.core.errors import TableError
from controller.core.evaluator import Evaluator, evaluator_from_header, rules_source
from controller.core.events import EV_LOCK, EV_MODE, EV_RULE
from controller.core.step import CoreConfig, CoreState, step
from controller.core.table import OP_BIT, OP_EQ_K, OP_GE_K, OP_GT_K, OP_LE_K, OP_LT_K, OP_NE_K, Table, cell_of
from controller.core.table import tests_moved as moved  # (a test_* name would be collected)
from controller.core.trace import replay_lines
from controller.devtools.bench.rules import compile_text, random_rules, rules_trace
from rules.compiler import compile_files
from rules.language import default_sources
from rules.payload import json_data

ARMED, DISARMED, ALARM, MAINT, ARMING = modes.ARMED, modes.DISARMED, modes.ALARM, modes.MAINTENANCE, modes.ARMING


def evaluator(text, every_scan=False):
    catalog, _site = site_catalog(None)
    compiled = compile_text(text)
    return catalog, Evaluator(Table(compiled.data, catalog.size), every_scan)


ONLINE = ("io.online", "bms1.online", "bms2.online", "relay.online")


def run(text, script, start=0, online=ONLINE):
    """``script``: (ms, {signal: value}, mode); returns [(ms, rule id, raised)].
    The devices in ``online`` answer from the start (a device's signals are
    unknown to the stateful ops while it is offline)."""
    catalog, ev = evaluator(text)
    image = catalog.new_image()
    for name in online:
        image[catalog.index[name]] = 1
    out = []
    for ms, changes, mode in script:
        for name, v in changes.items():
            image[catalog.index[name]] = v
        for r, _sev, _act, raised in ev.scan(image, ticks.wrap(start + ms), mode):
            out.append((ms, ev.table.ids[r], raised))
    return out


def rule(when, extra=""):
    return '[[rule]]\nid = "r"\nwhen = "{}"\nseverity = "info"\n{}\n'.format(when, extra)


def every(ms_from, ms_to, step_ms, mode, changes=None):
    return [(ms, dict(changes or {}) if ms == ms_from else {}, mode) for ms in range(ms_from, ms_to, step_ms)]


def test_for_duration_raises_after_holding_and_clears_at_once():
    script = every(0, 100, 100, DISARMED) + [(100, {"io.tamper": 1}, DISARMED)] + every(200, 2200, 100, DISARMED) \
        + [(2200, {"io.tamper": 0}, DISARMED)]
    assert run(rule("io.tamper", 'for = "2s"'), script) == [(2100, "r", 1), (2200, "r", 0)]


def test_for_restarts_when_the_condition_drops():
    script = [(0, {"io.tamper": 1}, 0), (1500, {"io.tamper": 0}, 0), (1600, {"io.tamper": 1}, 0),
              (3000, {}, 0), (3600, {}, 0)]
    assert run(rule("io.tamper", 'for = "2s"'), script) == [(3600, "r", 1)]


def test_held_works_across_the_tick_wrap():
    script = [(0, {"io.tamper": 1}, 0), (1000, {}, 0), (2000, {}, 0)]
    assert run(rule("held(io.tamper, '2s')"), script, start=ticks.MASK - 500) == [(2000, "r", 1)]


def test_within_remembers_for_its_window():
    script = [(0, {"io.vib_peak_mg": 900}, 0), (100, {"io.vib_peak_mg": 0}, 0),
              (5000, {"io.door_open": 1}, 0), (20000, {"io.door_open": 0}, 0), (20100, {"io.door_open": 1}, 0)]
    got = run(rule("io.door_open and within(io.vib_peak_mg > 800, '10s')"), script)
    assert got == [(5000, "r", 1), (20000, "r", 0)]


def test_count_counts_rises_in_a_sliding_window():
    script = []
    for k in range(4):
        script += [(k * 1000, {"io.door_open": 1}, 0), (k * 1000 + 500, {"io.door_open": 0}, 0)]
    script += [(20000, {}, 0)]
    got = run(rule("count(io.door_open, '10s') >= 3"), script)
    # The first scan only primes: a condition already true then is not a rise.
    assert got == [(3000, "r", 1), (20000, "r", 0)]


def test_rate_is_the_change_over_its_window_and_zero_until_then():
    script = [(ms, {"bms1.temp_max_dc": 200 + ms // 1000 * 10}, 0) for ms in range(0, 30000, 500)]
    got = run(rule("rate(bms1.temp_max_dc, '10s') > 90"), script)
    assert got == [(10000, "r", 1)]


def test_moved_is_the_change_since_its_condition_was_last_true():
    # The baseline follows the tilt while disarmed and stays where the
    # cabinet was set: a steady offset reads 0, a move from it reads the move
    # however slowly it comes (one step of 100 mdeg a minute).
    text = rule("abs(moved(io.tilt_mdeg, not mode('armed'))) > 750")
    offset = [(0, {"io.tilt_mdeg": 1200}, DISARMED), (1000, {"io.tilt_mdeg": 1250}, ARMING), (2000, {}, ARMED)]
    assert run(text, offset + [(ms, {}, ARMED) for ms in range(3000, 600000, 60000)]) == []
    levered = [(3000 + k * 60000, {"io.tilt_mdeg": 1250 - 100 * k}, ARMED) for k in range(1, 12)]
    assert run(text, offset + levered) == [(483000, "r", 1)]      # 8 minutes on: 1250 - 800 = 450
    # Disarmed, the baseline follows the tilt: nothing has moved from it.
    assert run(text, [(0, {"io.tilt_mdeg": 1200}, DISARMED), (1000, {"io.tilt_mdeg": -3000}, DISARMED)]) == []
    # The next setting takes the cabinet's attitude then.
    reset = offset + levered + [(800000, {}, DISARMED), (801000, {}, ARMED), (802000, {"io.tilt_mdeg": 200}, ARMED)]
    assert run(text, reset) == [(483000, "r", 1), (800000, "r", 0)]


def test_edges_are_one_scan_pulses_and_not_at_start():
    script = [(0, {"bms1.serial": 5, "io.door_open": 1}, 0), (100, {}, 0), (200, {"bms1.serial": 6}, 0),
              (300, {}, 0), (400, {"io.door_open": 0}, 0), (500, {}, 0)]
    assert run(rule("changed(bms1.serial)"), script) == [(200, "r", 1), (300, "r", 0)]
    assert run(rule("fell(io.door_open)"), script) == [(400, "r", 1), (500, "r", 0)]
    assert run(rule("rose(io.door_open)"), script) == []


def test_clear_when_gives_hysteresis():
    text = rule("bms1.temp_max_dc > 450", 'clear_when = "bms1.temp_max_dc < 420"')
    script = [(0, {"bms1.temp_max_dc": 460}, 0), (100, {"bms1.temp_max_dc": 430}, 0),
              (200, {"bms1.temp_max_dc": 460}, 0), (300, {"bms1.temp_max_dc": 410}, 0)]
    assert run(text, script) == [(0, "r", 1), (300, "r", 0)]


def test_latched_rule_holds_until_disarmed():
    script = [(0, {}, ARMED), (100, {"io.tamper": 1}, ARMED), (200, {"io.tamper": 0}, ALARM),
              (300, {}, ALARM), (400, {}, DISARMED)]
    assert run(rule("io.tamper", "latch = true"), script) == [(100, "r", 1), (400, "r", 0)]


def test_armed_covers_entry_and_an_alarm_raised_from_armed_but_not_arming():
    text = rule("mode('armed')")
    script = [(0, {}, ARMING), (100, {}, ARMED), (200, {}, modes.ENTRY), (300, {}, ALARM),
              (400, {}, DISARMED), (500, {}, ALARM)]
    assert run(text, script) == [(100, "r", 1), (400, "r", 0)]


def test_functions_of_constants_are_computed_not_folded_wrongly():
    script = [(0, {"io.temp_dc": 4}, 0), (100, {"io.temp_dc": 6}, 0)]
    assert run(rule("io.temp_dc > max(3, 5) and io.temp_dc > abs(-5) - 1"), script) == [(100, "r", 1)]


def test_schedule_reads_its_signal():
    script = [(0, {"sched.night": 1}, 0), (100, {"sched.night": 0}, 0)]
    assert run(rule("schedule('night')"), script) == [(0, "r", 1), (100, "r", 0)]


def test_a_quiet_scan_returns_the_shared_empty_tuple():
    catalog, ev = evaluator(rule("io.tamper"))
    image = catalog.new_image()
    ev.scan(image, 0, 0)
    assert ev.scan(image, 100, 0) is ev.scan(image, 200, 0) == ()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_change_driven_evaluation_equals_evaluating_every_rule(seed):
    text = random_rules(seed, 150)
    lines = rules_trace(compile_text(text), seed, 3000)
    catalog, lazy = evaluator(text)
    _c, full = evaluator(text, every_scan=True)
    got = []
    for which in (lazy, full):
        r = replay_lines(lines, lambda cat, head, ev=which: ev, keep_timeline=False)
        got.append((r.digest(), r.events))
    assert got[0] == got[1] and got[0][1] > 20


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_term_with_state_written_twice_in_a_rule_gives_what_it_gives_once(seed):
    # Each rule's condition twice, ``(W) and (W)``: the second copy reads the
    # first's value instead of running, and its state in rule_state() is the
    # first's, as it would be had it run on the same scans.
    text = random_rules(seed, 150)
    twice = re.sub(r"^when = '(.*)'$", r"when = '(\1) and (\1)'", text, flags=re.M)
    lines = rules_trace(compile_text(text), seed, 3000)
    got = []
    for source, every_scan in ((text, False), (twice, False), (twice, True)):
        _c, ev = evaluator(source, every_scan)
        r = replay_lines(lines, lambda cat, head, ev=ev: ev, keep_timeline=False)
        got.append((r.digest(), r.events))
        if source is twice:
            mem = ev.rule_state()["mem"]
            assert len(ev.copies) > 100
            assert all(mem[o:o + n] == mem[first:first + n] for o, first, n in ev.copies)
            assert ev.rule_state()["mem"] != [0] * len(mem)
    assert got[0] == got[1] == got[2] and got[0][1] > 20


# Shapes whose generated source (evaluator.py, rules_source) is not that of
# another spelling of the same condition: abs() and a comparison against a
# constant, a mode() read for its truth, a not over a stateful op's value, a
# comparison with a signal; each with that other spelling.
FUSED_AND_PLAIN = [
    ("abs(io.tilt_mdeg) > 300", "io.tilt_mdeg > 300 or io.tilt_mdeg < -300"),
    ("abs(io.tilt_mdeg) < 200", "io.tilt_mdeg < 200 and io.tilt_mdeg > -200"),
    ("abs(rate(io.tilt_mdeg, '4s')) > 20", "rate(io.tilt_mdeg, '4s') > 20 or rate(io.tilt_mdeg, '4s') < -20"),
    ("mode('armed') and io.door_open", "mode('armed') == 1 and io.door_open"),
    ("mode('armed') or within(io.door_open, '2s')", "mode('armed') == 1 or within(io.door_open, '2s')"),
    ("mode('armed') and io.online", "mode('armed') == 1 and io.online"),
    ("mode('armed') and within(io.door_open, '2s')", "mode('armed') == 1 and within(io.door_open, '2s')"),
    ("not held(io.door_open, '1s')", "held(io.door_open, '1s') == 0"),
    ("not within(changed(io.tilt_mdeg), '2s')", "within(changed(io.tilt_mdeg), '2s') == 0"),
    ("bms1.temp_max_dc + 10 < bms2.temp_max_dc", "bms1.temp_max_dc < bms2.temp_max_dc - 10"),
    ("bms1.temp_max_dc >= bms2.temp_max_dc", "not bms1.temp_max_dc < bms2.temp_max_dc"),
    ("rate(io.tilt_mdeg, '4s') - 5 > io.tilt_mdeg", "rate(io.tilt_mdeg, '4s') > io.tilt_mdeg + 5"),
]


@pytest.mark.parametrize("fused, plain", FUSED_AND_PLAIN)
def test_a_fused_shape_raises_and_clears_as_its_plain_spelling(fused, plain):
    lines = rules_trace(None, 7, 3000)
    got = []
    for text in (fused, plain, "io.online > 1"):   # the last never raises
        _c, ev = evaluator(rule(text))
        r = replay_lines(lines, lambda cat, head, ev=ev: ev, keep_timeline=False)
        got.append(r.digest())
    assert got[0] == got[1] != got[2]


def test_the_rules_source_is_one_python_function_per_rule_each_op_with_state_a_commented_block():
    _c, ev = evaluator(rule("held(io.door_open, '2s') and within(changed(io.tilt_mdeg), '5s')")
                       + rule("rose(io.tamper) or count(io.door_open, '1m') > 2").replace('"r"', '"s"'))
    source = rules_source(ev.table)
    names = {"mem": ev.mem, "cur": ev.cur, "wk": ev.wk}
    exec(source, names)
    assert [f.__name__ for f in names["RULES"]] == ["rule_0", "rule_1"]
    assert [line.strip() for line in source.splitlines() if line.strip().startswith("# ")][1:] == [
        "# 'r'", "# held(), state at mem[0]", "# changed(), state at mem[2]", "# within(), state at mem[4]",
        "# 's'", "# rose(), state at mem[7]", "# count(), state at mem[8]"]


def test_ops_one_after_another_under_one_guard_share_its_test():
    # changed() and the within() over it are io's: offline, both reset in one branch.
    catalog, ev = evaluator(rule("within(changed(io.tilt_mdeg), '5s') and io.door_open"))
    source = rules_source(ev.table)
    online = catalog.index["io.online"]
    assert source.count("if not im[{}]:".format(online)) == 1
    tilt, door = catalog.index["io.tilt_mdeg"], catalog.index["io.door_open"]
    image = catalog.new_image()
    image[door] = 1
    got = []
    for k, (on, t) in enumerate([(1, 0), (1, 5), (0, 5), (1, 5), (1, 9)]):
        image[online], image[tilt] = on, t
        got += [(k, c[3]) for c in ev.scan(image, k * 1000, DISARMED)]
    # Back online, changed() has no previous value: the first change is the one at scan 4.
    assert got == [(1, 1), (2, 0), (4, 1)]


def test_a_signal_changing_beside_those_that_change_every_scan_is_seen():
    # The evaluator looks at the signals that changed the scan before alone
    # while nothing else changed: the door's change must still be seen.
    text = rule("io.door_open") + rule("changed(io.vib_peak_mg) and io.vib_rms_mg > 5").replace('"r"', '"v"')
    script = [(ms, {"io.vib_peak_mg": ms // 100 % 7, "io.vib_rms_mg": 6 + ms // 100 % 2}, DISARMED)
              for ms in range(0, 3000, 100)]
    script[12][1]["io.door_open"] = 1
    script[13][1]["io.door_open"] = 0
    assert [x for x in run(text, script) if x[1] == "r"] == [(1200, "r", 1), (1300, "r", 0)]


def test_a_term_with_state_repeated_in_a_rule_pulses_in_each_copy():
    # Run twice in one scan, an edge's second run would see no edge.
    text = rule("rose(io.door_open) and rose(io.door_open) and within(changed(io.tilt_mdeg), '2s')"
                " and not not within(changed(io.tilt_mdeg), '2s')")
    script = [(0, {}, ARMED), (1000, {"io.door_open": 1, "io.tilt_mdeg": 5}, ARMED), (2000, {}, ARMED),
              (3000, {"io.door_open": 0}, ARMED), (3500, {"io.tilt_mdeg": 7}, ARMED),
              (4000, {"io.door_open": 1}, ARMED), (5000, {}, ARMED)]
    assert run(text, script) == [(1000, "r", 1), (2000, "r", 0), (4000, "r", 1), (5000, "r", 0)]


@pytest.mark.parametrize("seed", [1, 2])
def test_an_evaluator_restored_from_rule_state_goes_on_as_the_one_that_saved_it(seed):
    # The rules' functions hold the evaluator's state lists: a restore fills them.
    text = random_rules(seed, 150)
    catalog, saved = evaluator(text)
    _c, restored = evaluator(text)
    rng = random.Random(seed)
    image = catalog.new_image()
    for name in ONLINE:
        image[catalog.index[name]] = 1
    got = ([], [])
    for scan in range(4000):
        i = rng.randrange(catalog.size)
        image[i] = rng.randrange(0, 2) if catalog.units[i] == "bool" else rng.randrange(-1000, 100000)
        now, mode = ticks.wrap(ticks.MASK - 100000 + scan * 100), (ARMED, DISARMED, MAINT)[scan // 700 % 3]
        if scan == 2000:
            restored.restore_rule_state(saved.rule_state())
        for k, ev in enumerate((saved, restored) if scan >= 2000 else (saved,)):
            got[k].append(list(ev.scan(image, now, mode)) if scan >= 2000 else None)
    assert got[0][2000:] == got[1] and any(got[1])
    assert saved.rule_state() == restored.rule_state()


def test_a_rule_that_only_tests_a_signal_runs_when_a_test_changes():
    text = ('[[rule]]\nid = "a"\nseverity = "info"\n'
            'when = "abs(io.tilt_mdeg) > 5000 and bit(bms1.alarm_bits, 3) and not io.tamper"\n\n'
            '[[rule]]\nid = "b"\nseverity = "info"\nwhen = "rate(io.tilt_mdeg, \'10s\') > 5 and io.vib_peak_mg > 800"\n')
    catalog, ev = evaluator(text)
    idx = catalog.index
    assert ev.table.readers[idx["io.tilt_mdeg"]] == ((1,), ((0, ((1, OP_GT_K, 5000),)),))
    assert ev.table.readers[idx["bms1.alarm_bits"]] == ((), ((0, ((0, OP_BIT, 3),)),))
    assert ev.table.readers[idx["io.tamper"]] == ((), ((0, ((0, OP_NE_K, 0),)),))
    image = catalog.new_image()
    ev.scan(image, 0, DISARMED)
    mbit = 1 << DISARMED
    steps = [("io.tilt_mdeg", -4000, [1]), ("io.tilt_mdeg", -6000, [0, 1]), ("io.vib_peak_mg", 700, None),
             ("io.vib_peak_mg", 900, [1]), ("bms1.alarm_bits", 0b10000, None), ("bms1.alarm_bits", 0b11000, [0]),
             ("io.tamper", 1, [0]), ("io.tamper", 2, None)]
    for t, (name, value, due) in enumerate(steps, 1):
        image[idx[name]] = value
        assert ev._due(image, mbit, t) == (None if due is None else dict((r, 1) for r in due)), name


def test_a_rate_of_a_signal_runs_its_rule_only_when_a_sample_changes_the_rate():
    catalog, ev = evaluator(rule("rate(bms1.temp_max_dc, '8s') > 5"))
    i = catalog.index["bms1.temp_max_dc"]
    online = catalog.index["bms1.online"]
    assert ev.table.samplers == ((0, 0, 1000, i, online),)
    image = catalog.new_image()
    image[online] = 1
    ev.scan(image, 0, DISARMED)
    mbit = 1 << DISARMED
    for t in range(1000, 20000, 1000):           # a constant signal: samples, but the rate stays 0
        assert ev._due(image, mbit, t) is None
    image[i] = 10
    assert ev._due(image, mbit, 20000) == {0: 1}    # the signal changed
    assert ev._due(image, mbit, 21000) is None   # a sample, but the oldest is still a 0: the rate stays 10
    ev.scan(image, 21000, DISARMED)
    for t in range(22000, 28000, 1000):
        assert ev._due(image, mbit, t) is None
    assert ev._due(image, mbit, 28000) == {0: 1}    # 8 s of 10s: the rate drops to 0


@pytest.mark.parametrize("tests", [
    ((0, OP_GT_K, 5),), ((1, OP_GT_K, 5),), ((0, OP_LE_K, -3), (1, OP_GE_K, 7)), ((0, OP_EQ_K, 0),),
    ((1, OP_NE_K, 2), (0, OP_LT_K, 1)), ((0, OP_BIT, 3),), ((1, OP_BIT, 2), (0, OP_GT_K, -9)), ((1, OP_LE_K, 0),),
])
def test_a_signal_moving_inside_its_cell_moves_no_test_and_the_cell_ends_where_one_moves(tests):
    for v in range(-40, 41):
        lo, hi = cell_of(tests, v)
        assert lo <= v < hi
        for u in range(max(lo, -60), min(hi, 61)):
            assert not moved(tests, v, u), (v, u)
        assert lo < -60 or moved(tests, v, lo - 1)      # the cell is as wide as it can be
        assert hi > 60 or moved(tests, v, hi)


def test_a_sleeping_sampler_gives_what_sampling_every_step_gives():
    """A rate() over a signal that holds still sleeps; its signal changing,
    its device going offline, a long gap between scans and a snapshot wake
    it as if it had sampled all along (the every-rule reference samples at
    every scan: its rule runs at every scan)."""
    text = rule("rate(bms1.temp_max_dc, '8s') > 5")
    catalog, lazy = evaluator(text)
    _c, full = evaluator(text, every_scan=True)
    i, online = catalog.index["bms1.temp_max_dc"], catalog.index["bms1.online"]
    image = catalog.new_image()
    image[online] = 1
    script = [(t, {}) for t in range(0, 30000, 700)] + [(30000, {i: 20})] \
        + [(t, {}) for t in range(30700, 60000, 700)] + [(64000, {})] \
        + [(t, {}) for t in range(64700, 80000, 700)] + [(80000, {online: 0}), (81000, {online: 1})] \
        + [(t, {}) for t in range(81700, 100000, 700)] + [(100000, {i: 40})] + [(t, {}) for t in range(100900, 120000, 900)]
    slept = 0
    got = ([], [])
    for t, changes in script:
        for k, v in changes.items():
            image[k] = v
        for out, ev in zip(got, (lazy, full)):
            out.extend((t, change) for change in ev.scan(image, t, DISARMED))
        slept += 1 if lazy.asleep else 0
        if t % 7 == 0:
            assert lazy.rule_state()["mem"] == full.rule_state()["mem"], t
    assert got[0] == got[1] and len(got[0]) == 4
    assert slept > len(script) // 2
    assert lazy.rule_state()["mem"] == full.rule_state()["mem"]


def door_forced_state():
    catalog, site = site_catalog(None)
    table = Table(compile_files(default_sources([]), site).data, catalog.size)
    config = CoreConfig({"exit_delay_ms": 1000, "entry_delay_ms": 30000}, (catalog.index["io.door_open"],))
    return catalog, CoreState(catalog, config, Evaluator(table))


def _scan(state, catalog, image, t, changes=None, cmds=()):
    for name, v in (changes or {}).items():
        image[catalog.index[name]] = v
    return step(state, (image, list(cmds)), t)[1]


def test_door_forced_while_armed_alarms_at_once_without_waiting_for_entry_delay():
    catalog, state = door_forced_state()
    image = catalog.new_image()
    _scan(state, catalog, image, 0, {"io.online": 1, "bms1.online": 1, "bms2.online": 1, "relay.online": 1,
                                      "io.door_bolt": 1, "sys.clock_trusted": 1})
    _scan(state, catalog, image, 100, cmds=[(1, 0)])           # arm
    for t in range(200, 1500, 100):
        _scan(state, catalog, image, t)
    assert state.mode == ARMED
    events = _scan(state, catalog, image, 1500, {"io.door_open": 1})
    forced = state.rules.table.ids.index("door_forced.io")
    assert (EV_RULE, forced, 2, 1) in events
    assert state.mode == ALARM and (EV_MODE, modes.ENTRY, ALARM, modes.RAISE_ALARM) in events


def test_bus_silent_while_armed_raises_a_tamper_alarm():
    catalog, state = door_forced_state()
    image = catalog.new_image()
    _scan(state, catalog, image, 0, {"io.online": 1, "bms1.online": 1, "bms2.online": 1, "relay.online": 1})
    _scan(state, catalog, image, 100, cmds=[(1, 0)])
    for t in range(200, 1500, 100):
        _scan(state, catalog, image, t)
    events = []
    _scan(state, catalog, image, 1500, {"bms2.online": 0})
    for t in range(1600, 30000, 100):         # silent past a BMS reboot's 20 s
        events += _scan(state, catalog, image, t)
    silent = state.rules.table.ids.index("bms_silent.bms2")
    assert (EV_RULE, silent, 2, 1) in events and state.mode == ALARM


def test_critical_rule_locks_the_battery_output():
    catalog, state = door_forced_state()
    image = catalog.new_image()
    _scan(state, catalog, image, 0, {"bms1.online": 1})
    events = _scan(state, catalog, image, 100, {"bms1.alarm_bits": 1 << 1})
    rule_index = state.rules.table.ids.index("bms_over_temp.bms1")
    assert (EV_LOCK, 1, rule_index + 1, 0) in events and state.lock == 1


def test_header_table_for_another_catalog_is_refused():
    compiled = compile_text(rule("io.tamper"))
    lines = rules_trace(compiled, 1, 2)
    other = Catalog([("x.online", "bool", 0)])
    with pytest.raises(TableError, match="another signal catalog"):
        evaluator_from_header({"rules": json_data(compiled.data)}, other.digest(), other.size)
    assert replay_lines(lines, lambda cat, head: evaluator_from_header(head, cat.digest(), cat.size)).scans == 2


# -- a value never read is unknown: stateful ops and their devices' online twin --

def answering(device, start, stop, values, every_ms=1000, after=None, end_ms=None):
    """A script where ``device`` is offline (never read: its signals 0) until
    ``start`` ms, answers with ``values`` until ``stop``, then, if ``after``
    is given, is silent for 10 s and answers again with ``after`` (the
    image keeps the silent device's last values).  Scans every 100 ms up to
    ``end_ms`` (default: 3 minutes past the last change)."""
    online = device + ".online"
    events = {start: dict(values, **{online: 1})}
    if after is not None:
        events[stop] = {online: 0}
        events[stop + 10000] = dict(after, **{online: 1})
    last = max(events)
    end_ms = end_ms if end_ms is not None else last + 180000
    return [(ms, events.get(ms, {}), DISARMED) for ms in range(0, end_ms, 100)]


# Each operator, a rule that is true only from a never-read sample or from a
# sample of an offline device: a device coming online late, or coming back
# with another value after a silence, is never a rise, a fall or a change.
LATE = {
    "rate": (rule("rate(bms1.temp_max_dc, '2m') > 20"), "bms1", {"bms1.temp_max_dc": 245},
             {"bms1.temp_max_dc": 300}),
    "changed": (rule("changed(bms1.serial)"), "bms1", {"bms1.serial": 4711}, {"bms1.serial": 4712}),
    "moved": (rule("moved(bms1.temp_max_dc, mode('maintenance')) > 20"), "bms1", {"bms1.temp_max_dc": 245},
              {"bms1.temp_max_dc": 300}),
    "rose": (rule("rose(io.door_bolt)"), "io", {"io.door_bolt": 1}, {"io.door_bolt": 1}),
    "fell": (rule("fell(not io.door_bolt)"), "io", {"io.door_bolt": 1}, {"io.door_bolt": 1}),
    "count": (rule("count(io.door_bolt, '10m') >= 1"), "io", {"io.door_bolt": 1}, {"io.door_bolt": 1}),
    "within": (rule("bms1.current_ma > 10000 and within(bms1.current_ma < 500, '10s')"), "bms1",
               {"bms1.current_ma": 20000}, {"bms1.current_ma": 20000}),
    "held": (rule("held(bms1.soc_pct <= 100, '20s')"), "bms1", {"bms1.soc_pct": 80},
             {"bms1.soc_pct": 80}),
    "for": (rule("bms1.soc_pct <= 100", 'for = "20s"'), "bms1", {"bms1.soc_pct": 80},
            {"bms1.soc_pct": 80}),
}


@pytest.mark.parametrize("op", sorted(LATE))
def test_a_device_coming_online_late_is_no_history(op):
    text, device, values, _after = LATE[op]
    got = run(text, answering(device, 30000, 0, values), online=())
    if op in ("held", "for"):
        # Only samples taken while the device answered count: 20 s after it came.
        assert got == [(50000, "r", 1)]
    else:
        assert got == []


# What the device read before its silence, for each operator: the value it
# comes back with differs, or (edges, counts) would be an edge again.
BEFORE = {
    "rate": {"bms1.temp_max_dc": 245}, "moved": {"bms1.temp_max_dc": 245}, "changed": {"bms1.serial": 4711},
    "rose": {"io.door_bolt": 0}, "fell": {"io.door_bolt": 0}, "count": {"io.door_bolt": 0},
    "within": {"bms1.current_ma": 300}, "held": {"bms1.soc_pct": 80}, "for": {"bms1.soc_pct": 80},
}


@pytest.mark.parametrize("op", sorted(LATE))
def test_a_device_returning_after_a_silence_starts_a_new_history(op):
    text, device, _values, after = LATE[op]
    # Online at once with its first reading (0 ms), silent at 200 s, back at 210 s.
    script = answering(device, 0, 200000, BEFORE[op], after=after)
    got = run(text, script, online=())
    if op in ("held", "for"):
        # Raised after 20 s online; cleared by the silence; raised 20 s after the return.
        assert got == [(20000, "r", 1), (200000, "r", 0), (230000, "r", 1)]
    else:
        assert got == []


@pytest.mark.parametrize("op", sorted(LATE))
def test_a_flapping_device_never_satisfies_a_stateful_op(op):
    text, device, _values, after = LATE[op]
    online = device + ".online"
    script = []
    for k in range(60):                  # 60 times: 5 s answering, 2 s silent, values alternating
        reading = after if k % 2 else BEFORE[op]
        script += [(k * 7000, dict(reading, **{online: 1}), DISARMED), (k * 7000 + 5000, {online: 0}, DISARMED)]
    assert run(text, script, online=()) == []


def test_the_link_twins_sys_and_sched_signals_have_no_guard():
    catalog, site = site_catalog(None)
    compiled = compile_text(rule("within(bms1.online, '10s') and held(bms1.comm_ok > 0, '1s')"
                                 " and held(not sys.clock_trusted, '1s') and count(schedule('night'), '1h') > 0"
                                 " and rate(sys.journal_backlog, '1s') > 0 and rose(bms1.soc_pct > 5)"))
    guards = compiled.data["guards"]
    assert guards == [[guards[0][0], catalog.index["bms1.online"]]]   # only the rose() of bms1.soc_pct
    # A rule that watches the device go silent keeps seeing its link state.
    script = [(0, {"bms1.online": 1}, DISARMED), (1000, {"bms1.online": 0}, DISARMED), (1100, {}, DISARMED),
              (12000, {}, DISARMED)]
    assert run(rule("not bms1.online and within(bms1.online, '10s')"), script, online=()) == [
        (1000, "r", 1), (12000, "r", 0)]


def test_an_op_reading_two_devices_needs_both_online():
    text = rule("held(bms1.temp_max_dc > bms2.temp_max_dc, '2s')")
    script = [(0, {"bms1.online": 1, "bms1.temp_max_dc": 300}, DISARMED)] + \
        [(ms, {}, DISARMED) for ms in range(100, 5000, 100)] + \
        [(5000, {"bms2.online": 1, "bms2.temp_max_dc": 250}, DISARMED)] + \
        [(ms, {}, DISARMED) for ms in range(5100, 8000, 100)]
    assert run(text, script, online=()) == [(7000, "r", 1)]


def test_a_scan_gives_its_changes_in_rule_order_whatever_made_the_rules_due():
    # "b" is due by its signal's change, before "a" by the mode's: the changes still come a, b.
    text = ('[[rule]]\nid = "a"\nseverity = "info"\nwhen = "mode(\'armed\')"\n\n'
            '[[rule]]\nid = "b"\nseverity = "info"\nwhen = "io.door_open"\n')
    catalog, ev = evaluator(text)
    image = catalog.new_image()
    image[catalog.index["io.online"]] = 1
    assert list(ev.scan(image, 0, DISARMED)) == []
    image[catalog.index["io.door_open"]] = 1
    assert [(r, raised) for r, _sev, _act, raised in ev.scan(image, 1000, ARMED)] == [(0, 1), (1, 1)]


# The health and theft packs' shapes over a vibration peak that changes at
# most scans: the pairs within(changed(x), W), views comparing the peak with
# the RMS, a within() of a view, a held() timer, rose(), a for, a term
# written three times.
PAIRS_AND_VIEWS = """
[[rule]]
id = "frozen"
when = "mode('armed') and rose(not within(changed(io.vib_peak_mg), '5s'))"
severity = "alarm"

[[rule]]
id = "dead"
when = "mode('armed') and held(io.online, '4s') and not within(changed(io.vib_peak_mg), '5s')"
severity = "warning"

[[rule]]
id = "masked"
when = '''mode("armed") and io.online and (io.vib_rms_mg == 0 or io.vib_peak_mg + 10 < io.vib_rms_mg)
  and within(io.vib_rms_mg > 0 and io.vib_peak_mg >= io.vib_rms_mg, "2s") and within(changed(io.vib_peak_mg), "5s")'''
for = "1s"
severity = "alarm"

[[rule]]
id = "at_arming"
when = '''mode("arming", "armed")
  and (not within(changed(io.vib_peak_mg), "3s") or io.vib_rms_mg == 0 or io.vib_peak_mg + 10 < io.vib_rms_mg)
  and within(rose(not within(changed(io.vib_peak_mg), "3s") or io.vib_rms_mg == 0
                  or io.vib_peak_mg + 10 < io.vib_rms_mg) and within(io.door_open, "3s"), "20s")
  and not within(mode("alarm") and (not within(changed(io.vib_peak_mg), "3s") or io.vib_rms_mg == 0
                  or io.vib_peak_mg + 10 < io.vib_rms_mg), "20s")'''
severity = "alarm"
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rules_left_alone_while_their_pairs_stay_true_give_what_running_them_gives(seed):
    """Rules that watch the peak only through within(changed(...)) and
    comparisons are not run at its every change (Evaluator._quiet, _lazy):
    they raise and clear as evaluating every rule every scan does, and a
    snapshot taken at any scan carries on as the evaluator it was taken from."""
    rng = random.Random(seed)
    catalog, lazy = evaluator(PAIRS_AND_VIEWS)
    _c, full = evaluator(PAIRS_AND_VIEWS, every_scan=True)
    assert sorted(lazy.plans) == [0, 1, 2, 3]
    idx = catalog.index
    image = catalog.new_image()
    image[idx["io.online"]] = 1
    mode = DISARMED
    t = ticks.MASK - 20000   # across the tick wrap
    got = ([], [])
    restored = []
    was_lazy = 0
    for n in range(12000):
        quiet = n % 400 > 330   # a peak that holds still for a few seconds now and then
        if not quiet and rng.random() < 0.75:
            image[idx["io.vib_peak_mg"]] = rng.choice([3, 4, 5, 6, 40, 300])
        if rng.random() < 0.05:
            image[idx["io.vib_rms_mg"]] = rng.choice([0, 4, 5, 60, 400])
        if rng.random() < 0.01:
            image[idx["io.door_open"]] ^= 1
        if rng.random() < 0.002:
            image[idx["io.online"]] ^= 1
        if rng.random() < 0.004:
            mode = rng.choice([DISARMED, ARMED, ARMED, ARMING, ALARM])
        for out, ev in zip(got, (lazy, full)):
            out.extend((n, change[0], change[3]) for change in ev.scan(image, t, mode))
        was_lazy += 1 if lazy.lazy else 0
        if n % 997 == 500:
            twin = Evaluator(lazy.table)
            twin.restore_rule_state(lazy.rule_state())
            restored.append((n, twin, []))
        for start, twin, out in restored[:-1] if restored and restored[-1][0] == n else restored:
            out.extend((n, change[0], change[3]) for change in twin.scan(image, t, mode))
        t = ticks.add(t, rng.choice([1000, 1000, 1000, 700, 1300, 100]))
    assert got[0] == got[1] and len(got[0]) > 20
    assert was_lazy > 3000
    for start, twin, out in restored:
        assert out == [c for c in got[0] if c[0] > start]
        assert twin.rule_state() == lazy.rule_state()
