"""The model's rule: when the anomaly score raises, at which severity, and not twice for one cause."""

import pytest

from controller.core import modes, ticks
from controller.core.anomaly import FEATURES, HOURS, ModelTables
from controller.core.events import ALARM, WARNING
from controller.core.modelrules import EXPLAINED_KEEP, ModelRules
from simulator.scenariofile import loads
from simulator.world import cabinet_catalog

# Every feature's envelope at level 100 but vibration (40: a few mg) and
# power (0: every device answers, the supply holds); power weighs less, so
# a hard shake outscores a cut cable.
LEVELS = [40 if f == "vib" else 0 if f == "power" else 100 for f in FEATURES]
MODEL = {"cabguard_model": 1, "features": list(FEATURES), "window_ms": 500,
         "pre": [0] * 9, "weight": [1 if f == "power" else 4 for f in FEATURES], "margin": 8, "threshold": 48, "base": LEVELS,
         "hi": bytes(LEVELS * HOURS).hex(), "adapt": {"cap": 12, "step_windows": 720, "holdoff_windows": 720}}


def cabinet():
    scn = loads('[scenario]\nname = "m"\nstart = 2026-01-05T00:00:00Z\nduration = "1h"\n[[cabinet]]\nid = "c"\n')
    return cabinet_catalog(scn, scn.cabinets[0])


def play(script, visit_ms=4 * 3600000, rules=None):
    """Scan every 100 ms; ``script`` is [(second, {signal: value}, mode)] (``rules``: a
    ModelRules over cabinet()'s catalog, for a test to look into).
    -> [(second, severity, raised)] of the model's rule."""
    catalog = cabinet()
    rules = rules or ModelRules(ModelTables(MODEL), catalog, visit_ms=visit_ms)
    image = catalog.new_image()
    for name in ("io.online", "bms1.online", "bms2.online", "sys.clock_trusted", "io.door_bolt"):
        image[catalog.index[name]] = 1
    image[catalog.index["io.vib_rms_mg"]] = 3
    at = {int(s * 10): (changes, m) for s, changes, m in script}
    mode, out = modes.ARMED, []
    for k in range(max(at) + 20):
        if k in at:
            changes, mode = at[k]
            for name, v in changes.items():
                image[catalog.index[name]] = v
        for index, severity, _actions, up in rules.scan(image, ticks.wrap(k * 100), mode):
            assert index == rules.rule_index
            out.append((k / 10, severity, up))
    return out


def test_a_supply_cut_alarms_while_armed_a_silent_device_is_the_silence_rules():
    assert play([(0, {"io.supply_mv": 24100}, modes.ARMED), (3, {"io.supply_mv": 12000}, modes.ARMED)]) == \
        [(3.0, ALARM, 1), (3.5, ALARM, 0)]
    assert play([(0, {}, modes.ARMED), (3, {"bms1.online": 0}, modes.ARMED)]) == []


def test_a_supply_cut_while_the_alarm_sounds_is_a_warning_and_what_comes_after_re_arming_alarms():
    script = [(0, {"io.supply_mv": 24100, "bms1.pack_mv": 409600}, modes.ALARM),
              (3, {"io.supply_mv": 12000}, modes.ALARM),                    # cut while the alarm already sounds
              (10, {}, modes.DISARMED), (11, {}, modes.ARMING), (20, {}, modes.ARMED)]
    assert play(script) == [(3.0, WARNING, 1), (3.5, WARNING, 0)]
    assert (30.0, ALARM, 1) in play(script + [(30, {"bms1.pack_mv": 358400}, modes.ARMED)])


def test_the_model_alarms_only_on_evidence_of_loss_never_on_gain():
    # Shaking alone is the rules' business: the model warns.
    assert play([(0, {}, modes.ARMED), (3, {"io.vib_rms_mg": 900}, modes.ARMED)]) == [(3.0, WARNING, 1)]
    # Modules arriving (pack voltage up), current starting: no step at all.
    assert play([(0, {"bms1.pack_mv": 204800}, modes.DISARMED), (3, {"bms1.pack_mv": 409600}, modes.DISARMED)]) == []
    assert play([(0, {}, modes.ARMED), (3, {"bms1.current_ma": 90000}, modes.ARMED)]) == []
    # The same, lost: current that stops flowing while armed.
    assert play([(0, {"bms1.current_ma": 90000}, modes.ARMED), (3, {"bms1.current_ma": 0}, modes.ARMED)]) == \
        [(3.0, ALARM, 1), (3.5, ALARM, 0)]


def test_a_module_pulled_alarms_on_a_cabinet_left_disarmed_but_not_while_a_person_is_at_it():
    def pulled(before, mode, visit_ms=4 * 3600000):
        return play([(0, {"bms1.pack_mv": 409600}, before), (1, {}, mode), (3, {"bms1.pack_mv": 358400}, mode)],
                    visit_ms)
    # A step is one window's news: the rule clears with the next window.
    assert pulled(modes.DISARMED, modes.DISARMED) == [(3.0, ALARM, 1), (3.5, ALARM, 0)]     # left disarmed: nobody's visit
    assert pulled(modes.ARMED, modes.MAINTENANCE) == [(3.0, WARNING, 1), (3.5, WARNING, 0)]  # logged in
    assert pulled(modes.ARMED, modes.DISARMED) == [(3.0, WARNING, 1), (3.5, WARNING, 0)]     # a call-out disarmed it
    assert pulled(modes.ARMED, modes.DISARMED, visit_ms=1500) == [(3.0, ALARM, 1), (3.5, ALARM, 0)]  # long gone


def test_the_explanations_kept_are_bounded_to_the_latest_raises():
    """A gateway runs for years: only the latest EXPLAINED_KEEP explanations stay."""
    rules = ModelRules(ModelTables(MODEL), cabinet())
    shakes = [(second, {"io.vib_rms_mg": 900 if second % 2 == 0 else 3}, modes.ARMED) for second in range(2, 60)]
    raised = [t for t, _severity, up in play(shakes, rules=rules) if up]
    assert len(raised) > EXPLAINED_KEEP    # more raises than are kept, or the test proves nothing
    assert len(rules.explained) == EXPLAINED_KEEP
    assert [ticks.wrap(round(t * 1000)) for t in raised[-EXPLAINED_KEEP:]] == [t for t, _why in rules.explained]
    assert all(why and why[0][0] == "vib" for _t, why in rules.explained)


def test_the_model_file_says_which_losses_may_alarm_and_never_a_gain():
    pulled = [(0, {"bms1.pack_mv": 409600}, modes.ARMED), (3, {"bms1.pack_mv": 358400}, modes.ARMED)]
    def only(features):
        return ModelRules(ModelTables(dict(MODEL, alarm_on=features)), cabinet())
    assert play(pulled, rules=only(["current"])) == [(3.0, WARNING, 1), (3.5, WARNING, 0)]
    assert play(pulled, rules=only(["volt"])) == [(3.0, ALARM, 1), (3.5, ALARM, 0)]
    for bad in (["vib"], "volt", ["volt", 3]):
        with pytest.raises(ValueError, match="model key 'alarm_on' must be a list of loss features"):
            ModelTables(dict(MODEL, alarm_on=bad))
