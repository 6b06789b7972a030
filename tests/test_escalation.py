"""Escalation plans (controller/core/escalation.py): steps and delays per
severity and mode, driven by step(), cancelled by an ack, replayed bit for bit."""

import pytest

from controller.core import modes
from controller.core.catalog import Catalog, device_signals
from controller.core.escalation import (
    STEP_CAMERA, STEP_LIGHTS, STEP_LOCK, STEP_SIREN, STEP_UPLINK, Plans,
)
from controller.core.events import ALARM, CMD_ACK, CMD_ARM, CRITICAL, EV_ESCALATION, EV_LOCK, EV_MODE
from controller.core.outputs import OUT_CAMERA, OUT_LIGHTS, OUT_LOCK, OUT_SIREN, OUT_STROBE
from controller.core.step import CoreConfig, CoreState, step
from controller.core.trace import replay_lines
from controller.gateway.config import ConfigError, parse
from tests.sitetext import MINIMAL_SITE
from tests.traces import PLANS, random_trace

PORT_PLAN = {"alarm.armed": [["siren", 0], ["strobe", 0], ["lights", 0], ["uplink", 0],
                             ["camera", 2000], ["lock", 120000]]}


class ScriptedRules:
    def __init__(self, script):
        self.script = script

    def scan(self, image, now, mode):
        return self.script.get(now, ())


def make(plans=None, rules=None):
    catalog = Catalog(device_signals("io", [("door", "bool", 0)]))
    values = {"exit_delay_ms": 1000, "entry_delay_ms": 1000, "siren_max_ms": 300000}
    if plans:
        values["escalation"] = plans
    return catalog, CoreState(catalog, CoreConfig(values, (catalog.index["io.door"],)), rules), catalog.new_image()


def run(state, image, t, cmds=()):
    out, events = step(state, (image, list(cmds)), t)
    return list(out), list(events)


def forced_entry(catalog, state, image):
    """Arm, open the door, let the entry delay run out: ALARM at t=3000."""
    run(state, image, 0, [(CMD_ARM, 0)])
    run(state, image, 1000)
    image[catalog.index["io.door"]] = 1
    run(state, image, 2000)
    out, ev = run(state, image, 3000)
    assert state.mode == modes.ALARM
    return out, ev


def test_the_default_plans_keep_the_old_behaviour():
    catalog, state, image = make()
    out, ev = forced_entry(catalog, state, image)
    assert out[OUT_SIREN] == out[OUT_STROBE] == 1 and out[OUT_LOCK] == out[OUT_LIGHTS] == out[OUT_CAMERA] == 0
    assert [e[0] for e in ev] == [EV_MODE]          # nothing new in the journal
    _, state, image = make(rules=ScriptedRules({10: [(4, CRITICAL, 0, 1)]}))
    out, ev = run(state, image, 10)
    assert out[OUT_LOCK] == 1 and (EV_LOCK, 1, 5, 0) in ev
    assert not [e for e in ev if e[0] == EV_ESCALATION]


def test_a_port_plan_takes_its_steps_in_time_and_locks_unless_acknowledged():
    catalog, state, image = make(PORT_PLAN)
    out, ev = forced_entry(catalog, state, image)
    assert (out[OUT_SIREN], out[OUT_STROBE], out[OUT_LIGHTS], out[OUT_CAMERA], out[OUT_LOCK]) == (1, 1, 1, 0, 0)
    assert (EV_ESCALATION, STEP_UPLINK, ALARM, 1) in ev
    out, ev = run(state, image, 4999)
    assert out[OUT_CAMERA] == 0 and ev == []
    out, ev = run(state, image, 5000)
    assert out[OUT_CAMERA] == 1 and ev == [(EV_ESCALATION, STEP_CAMERA, ALARM, 1)]
    out, ev = run(state, image, 123000)
    assert out[OUT_LOCK] == 1
    assert ev == [(EV_LOCK, 1, 0, 0), (EV_ESCALATION, STEP_LOCK, ALARM, 1)]
    out, ev = run(state, image, 124000, [(CMD_ACK, 0)])
    assert out[OUT_LOCK] == 1 and out[OUT_LIGHTS] == out[OUT_CAMERA] == out[OUT_SIREN] == 0
    assert not [e for e in ev if e[0] == EV_ESCALATION]     # nothing left to cancel


def test_an_ack_before_the_lock_cancels_it():
    catalog, state, image = make(PORT_PLAN)
    forced_entry(catalog, state, image)
    out, ev = run(state, image, 60000, [(CMD_ACK, 0)])
    assert state.mode == modes.DISARMED
    assert (EV_ESCALATION, STEP_LOCK, ALARM, 0) in ev
    out, ev = run(state, image, 200000)
    assert out[OUT_LOCK] == 0 and out[OUT_LIGHTS] == 0 and ev == []


def test_a_critical_raise_during_an_alarm_switches_to_the_critical_plan():
    plans = {"alarm.disarmed": [["strobe", 0]], "critical.disarmed": [["siren", 0], ["lock", 5000]]}
    _, state, image = make(plans, ScriptedRules({10: [(0, ALARM, 0, 1)], 1000: [(2, CRITICAL, 0, 1)]}))
    out, _ = run(state, image, 10)
    assert out[OUT_STROBE] == 1 and out[OUT_SIREN] == 0
    out, ev = run(state, image, 1000)
    assert out[OUT_SIREN] == 1 and out[OUT_LOCK] == 0
    out, ev = run(state, image, 5999)
    assert out[OUT_LOCK] == 0
    out, ev = run(state, image, 6000)
    assert out[OUT_LOCK] == 1 and (EV_LOCK, 1, 3, 0) in ev


def test_no_siren_in_the_plan_means_no_retrigger_either():
    plans = {"alarm.disarmed": [["lights", 0]]}
    _, state, image = make(plans, ScriptedRules({10: [(0, ALARM, 0, 1)], 50: [(1, ALARM, 0, 1)]}))
    out, _ = run(state, image, 10)
    assert out[OUT_LIGHTS] == 1 and out[OUT_SIREN] == out[OUT_STROBE] == 0
    out, _ = run(state, image, 50)
    assert out[OUT_SIREN] == 0


def test_the_trace_header_carries_the_plans_and_a_snapshot_the_progress():
    lines = random_trace(4, scans=3000, plans=PLANS)
    assert '"escalation"' in lines[0]
    first = replay_lines(lines, keep_timeline=True)
    assert any(ev[0] == EV_ESCALATION for _, _, _, evs in first.timeline for ev in evs)
    assert replay_lines(lines).digest() == first.digest()
    assert replay_lines(random_trace(4, scans=3000)).digest() != first.digest()
    catalog, state, image = make(PORT_PLAN)
    forced_entry(catalog, state, image)
    snap = state.snapshot()
    _, again, _ = make(PORT_PLAN)
    again.restore(snap)
    assert run(again, image, 123000) == run(state, image, 123000)


@pytest.mark.parametrize("doc, problem", [
    ({"alarm.nowhere": []}, "want '<alarm|critical>"),
    ({"warning.armed": []}, "want '<alarm|critical>"),
    ({"alarm.armed": [["horn", 0]]}, "want [one of siren"),
    ({"alarm.armed": [["lock", -1]]}, "delay in ms"),
    ({"alarm.armed": [["lock", 0], ["lock", 5]]}, "listed twice"),
])
def test_a_bad_plan_is_refused_naming_it(doc, problem):
    with pytest.raises(ValueError, match=r".*" + problem.replace("[", r"\[").replace("|", r"\|")):
        Plans(doc)


SITE = MINIMAL_SITE


def test_the_site_config_sets_plans_in_seconds_and_names_mistakes():
    from controller.gateway.config import core_values
    cfg = parse(SITE + """
[escalation.alarm]
armed = [{ do = "siren" }, { do = "lights" }, { do = "lock", after_s = 120 }]
disarmed = []
""", "site.toml")
    values = core_values({}, cfg.doc["escalation"])
    assert values["escalation"] == {"alarm.armed": [["siren", 0], ["lights", 0], ["lock", 120000]],
                                    "alarm.disarmed": []}
    plans = CoreConfig(values).escalation
    assert plans.plan(ALARM, 0) == ((STEP_SIREN, 0), (STEP_LIGHTS, 0), (STEP_LOCK, 120000))
    assert plans.plan(CRITICAL, 0)[-1] == (STEP_LOCK, 0)           # untouched: the default
    with pytest.raises(ConfigError) as e:
        parse(SITE + """
[escalation.alarm]
armed = [{ do = "lock" }, { do = "lock", after_s = 5 }, { do = "horn" }]
[escalation.warning]
armed = []
""", "site.toml")
    text = str(e.value)
    assert "escalation.alarm.armed[2].do: want one of 'siren'" in text
    assert "escalation.alarm.armed: step 'lock' is listed twice" in text
    assert "escalation.warning: name must match alarm|critical" in text


def test_the_uplink_step_is_an_alarm_record_and_the_others_are_news():
    from controller.journal.records import event_severity
    assert event_severity((EV_ESCALATION, STEP_UPLINK, ALARM, 1)) == ALARM
    assert event_severity((EV_ESCALATION, STEP_LOCK, ALARM, 1)) == 0
    assert event_severity((EV_ESCALATION, STEP_UPLINK, ALARM, 0)) == 0


# A forced door under the port plan, a restart at 4 s (the lights taken at
# alarm time 3 s, the camera's 2 s step at 5 s and the lock's 120 s step at
# 123 s pending), resumed on the same clock, a clock 7 s later than the old
# one (a reboot), and an unknown time since; the lines it prints are
# compared between CPython and MicroPython.
RESTART_SCRIPT = """
from controller.core import modes
from controller.core.catalog import Catalog, device_signals
from controller.core.events import CMD_ACK, CMD_ARM
from controller.core.step import UNKNOWN, CoreConfig, CoreState, step
PLAN = {"alarm.armed": [["siren", 0], ["strobe", 0], ["lights", 0], ["uplink", 0],
                        ["camera", 2000], ["lock", 120000]]}

def make():
    catalog = Catalog(device_signals("io", [("door", "bool", 0)]))
    values = {"exit_delay_ms": 1000, "entry_delay_ms": 1000, "siren_max_ms": 60000, "escalation": PLAN}
    return catalog, CoreState(catalog, CoreConfig(values, (catalog.index["io.door"],))), catalog.new_image()

def killed_at(t_kill, ack=False):
    catalog, state, image = make()
    step(state, (image, [(CMD_ARM, 0)]), 0)
    step(state, (image, []), 1000)
    image[catalog.index["io.door"]] = 1
    for t in range(2000, t_kill + 1, 500):
        step(state, (image, [(CMD_ACK, 0)] if ack and t == t_kill else []), t)
    return state.persisted()

def resumed(saved, shift, then_unknown, times):
    catalog, state, image = make()
    image[catalog.index["io.door"]] = 1
    now = times[0] + shift
    state.resume_after_restart(saved, now, UNKNOWN if then_unknown else times[0])
    lines = ["start " + modes.MODE_NAMES[state.mode] + " " + repr(list(state.outputs))]
    for t in times:
        out, ev = step(state, (image, []), t + shift)
        lines.append("{} {} {}".format(t, list(out), sorted(ev)))
    return lines

saved = killed_at(4000)
for shift, unknown in ((0, False), (7000, False), (-3000, False), (0, True)):
    print("case", shift, unknown)
    for line in resumed(saved, shift, unknown, [4100, 4999, 5000, 5100, 62000, 63000, 122999, 123000, 124000]):
        print(line)
print("ack", resumed(killed_at(4000, ack=True), 0, False, [4100, 200000]))
"""


def restart_cases(text):
    """The script's output as {case: {time: (outputs, events)}} ("start": the outputs at resume)."""
    cases, case = {}, None
    for line in text.strip().splitlines():
        head, _, rest = line.partition(" ")
        if head == "case":
            case = cases.setdefault(rest, {})
        elif head == "ack":
            cases["ack"] = rest
        elif head == "start":
            case["start"] = rest
        else:
            case[int(head)] = rest
    return cases


def test_a_restart_mid_plan_resumes_it_and_micropython_agrees():
    import contextlib
    import io
    from controller.devtools import mpy
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(RESTART_SCRIPT, {})
    cases = restart_cases(buf.getvalue())
    same = cases["0 False"]
    # siren, strobe and lights were taken before the kill: on at once, no event again
    assert same["start"] == "alarm [1, 1, 0, 5, 1, 0]"
    assert same[4100] == same[4999] == "[1, 1, 0, 5, 1, 0] []"
    assert same[5000] == "[1, 1, 0, 5, 1, 1] [(11, 3, 2, 1)]"          # the camera at its 5 s
    assert same[63000] == "[0, 1, 0, 5, 1, 1] [(5, 60000, 0, 0)]"      # the siren's minute from 3 s
    assert same[122999] == "[0, 1, 0, 5, 1, 1] []"
    assert same[123000] == "[0, 1, 1, 5, 1, 1] [(6, 1, 0, 0), (11, 5, 2, 1)]"   # the lock at its 123 s
    assert cases["7000 False"] == cases["-3000 False"] == same     # a reboot, its clock ahead or behind
    unknown = cases["0 True"]
    assert unknown[4100] == "[1, 1, 1, 5, 1, 1] [(6, 1, 0, 0), (11, 3, 2, 1), (11, 5, 2, 1)]"
    assert unknown[63000] == "[1, 1, 1, 5, 1, 1] []" and unknown[122999].startswith("[0, 1, 1")  # a new siren minute
    assert cases["ack"] == "['start disarmed [0, 0, 0, 1, 0, 0]', '4100 [0, 0, 0, 1, 0, 0] []', " \
                           "'200000 [0, 0, 0, 1, 0, 0] []']"                       # the ack stays: no lock
    if mpy.available():
        (out,) = mpy.run([RESTART_SCRIPT])
        assert restart_cases(out) == cases


def test_a_state_saved_before_escalation_progress_escalates_afresh():
    catalog, state, image = make(PORT_PLAN)
    forced_entry(catalog, state, image)
    _, fresh, image2 = make(PORT_PLAN)
    fresh.resume_after_restart(state.persisted()[:3], 50000, 50000)
    out, ev = run(fresh, image2, 50100)
    assert out[OUT_LIGHTS] == 1 and out[OUT_CAMERA] == 0
    out, ev = run(fresh, image2, 52000)
    assert out[OUT_CAMERA] == 1 and ev == [(EV_ESCALATION, STEP_CAMERA, ALARM, 1)]
