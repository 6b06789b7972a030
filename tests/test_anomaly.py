"""The anomaly model: integer scoring, the adaptation guard, and MicroPython parity."""

import json

import pytest

from controller.core.anomaly import FEATURES, N_FEATURES, AnomalyModel, ModelTables, qlog
from controller.devtools import mpy
from simulator.world import CabinetWorld
from tests.scen_helpers import scenario

ARMED, DISARMED = 2, 0


def tables(level=40, **adapt):
    doc = {"cabguard_model": 1, "window_ms": 1000, "margin": 4, "threshold": 40,
           "pre": [0] * N_FEATURES, "weight": [4] * N_FEATURES, "base": [level] * N_FEATURES,
           "hi": bytes([level] * (168 * N_FEATURES)).hex(),
           "adapt": dict({"cap": 6, "step_windows": 2, "holdoff_windows": 3}, **adapt)}
    return doc


def recorded(body, duration="30m"):
    """A world stream as (t, changes) plus the catalog index."""
    scn = scenario(body, duration)
    world = CabinetWorld(scn, scn.cabinets[0])
    return [(t, ch) for t, ch, _c in world.stream()], dict(world.catalog.index)


def run(doc, scans, index, mode):
    model = AnomalyModel(ModelTables(doc), index, (DISARMED,))
    image = [0] * (max(index.values()) + 1)
    out = []
    for t, changes in scans:
        for i, v in changes:
            image[i] = v
        out.append(model.scan(image, t, mode))
    return model, out


def test_qlog_is_a_monotone_integer_log():
    assert [qlog(x) for x in (0, 1, 2, 3, 4, 8, 1024)] == [0, 0, 16, 24, 32, 48, 160]
    assert qlog(1 << 20) == 255
    values = [qlog(x) for x in range(1, 5000)]
    assert values == sorted(values)


def test_a_burst_scores_and_names_its_features():
    scans, index = recorded('\n[[action]]\nkind = "vibration"\nat = "+10m"\nrms_mg = 400\npeak_mg = 1500\n')
    model, out = run(tables(), scans, index, ARMED)
    before = [s for (t, _c), s in zip(scans, out) if t < 600000]
    assert max(score for score, _top in before) == 0
    burst = [(score, top) for (t, _c), (score, top) in zip(scans, out) if 600000 < t < 606000]
    score, top = max(burst)
    assert score >= 40 and FEATURES[top] in ("vib", "peak")


def test_adaptation_is_bounded_and_frozen_while_armed_or_elevated():
    # Levels slightly above the baseline (inside the margin): a disarmed
    # cabinet adapts, but never past the cap; an armed one never does.
    scans, index = recorded("", "20m")
    doc = tables(level=0, cap=6)
    doc["margin"] = 48
    disarmed, _ = run(doc, scans, index, DISARMED)
    armed, _ = run(doc, scans, index, ARMED)
    grown = [disarmed.hi[f] for f in range(N_FEATURES)]
    assert max(grown) == 6 and max(armed.hi) == 0
    # An elevated score holds adaptation off: a thief who keeps it busy teaches it nothing.
    noisy, index2 = recorded('\n[[action]]\nkind = "vibration"\nat = "+0s"\nduration = "20m"\nrms_mg = 200\n', "20m")
    busy, out = run(tables(level=0, cap=60), noisy, index2, DISARMED)
    assert min(score for score, _t in out[50:]) > 0 and max(busy.hi) == 0


def test_bad_model_files_are_refused():
    doc = tables()
    doc["hi"] = "00ff"
    with pytest.raises(ValueError, match="'hi' must hold"):
        ModelTables(doc)
    with pytest.raises(ValueError, match="cabguard anomaly model"):
        ModelTables({"format": 2})


# A cabinet's 15 minutes with every feature at work: trucks and wind, a forced
# door, a module out, a thermal ramp and a power cut.
BUSY = ('\n[[process]]\nkind = "wind"\n[[process]]\nkind = "truck"\nper_hour = 40.0\n'
        '\n[[process]]\nkind = "bms"\ncharge_at = "00:05"\n'
        '\n[[action]]\nkind = "door_forced"\nat = "+5m"\n\n[[action]]\nkind = "module_remove"\nat = "+6m"\n'
        '\n[[action]]\nkind = "thermal_ramp"\nat = "+8m"\nduration = "2m"\n'
        '\n[[action]]\nkind = "power_cut"\nat = "+11m"\nduration = "1m"\n')


def scored_both_modes(doc, scans, index):
    """{mode: (scores, adapted baseline, explain())} armed and disarmed."""
    results = {}
    for mode in (ARMED, DISARMED):
        model, out = run(doc, scans, index, mode)
        results[mode] = (out, model.hi.hex(), model.explain())
    return results


def test_a_model_restored_from_another_s_state_goes_on_scoring_as_it_would_have():
    # Taken before the busy minutes: the door, the module pulled and the power
    # cut after it are scored by the restored model from the saved readings.
    scans, index = recorded(BUSY, "14m")
    cut = next(k for k, (t, _c) in enumerate(scans) if t >= 4 * 60000)
    whole, expected = run(tables(), scans, index, ARMED)
    first, _out = run(tables(), scans[:cut], index, ARMED)
    other, _out = run(tables(), scans, index, ARMED)     # it read what comes after: the saved readings are older
    other.restore(json.loads(json.dumps(first.state())))
    image = [0] * (max(index.values()) + 1)
    for _t, changes in scans[:cut]:
        for i, v in changes:
            image[i] = v
    out = []
    for t, changes in scans[cut:]:
        for i, v in changes:
            image[i] = v
        out.append(other.scan(image, t, ARMED))
    assert out == expected[cut:] and max(s for s, _top in out) >= 40
    assert other.state() == whole.state()


@pytest.mark.skipif(not mpy.available(), reason="MicroPython not set up (make setup)")
def test_micropython_scores_bit_for_bit():
    scans, index = recorded(BUSY, "15m")
    doc = tables(level=30)
    results = scored_both_modes(doc, scans, index)
    assert_micropython_scores(doc, scans, index, results)
    assert max(s for s, _t in results[ARMED][0]) > 0


def assert_micropython_scores(doc, scans, index, results):
    files = {"scans.json": json.dumps(scans), "index.json": json.dumps(index), "model.json": json.dumps(doc)}
    code = ("import json\nfrom controller.core.anomaly import AnomalyModel, ModelTables\n"
            "scans = json.load(open('/app/scans.json'))\nindex = json.load(open('/app/index.json'))\n"
            "doc = json.load(open('/app/model.json'))\n"
            "for mode in (2, 0):\n"
            "    m = AnomalyModel(ModelTables(doc), index, (0,))\n"
            "    image = [0] * (max(index.values()) + 1)\n"
            "    out = []\n"
            "    for t, ch in scans:\n"
            "        for i, v in ch:\n"
            "            image[i] = v\n"
            "        out.append(list(m.scan(image, t, mode)))\n"
            "    print(json.dumps([out, ''.join(['%02x' % b for b in m.hi]), [list(x) for x in m.explain()]]))\n")
    (text,) = mpy.run([code], files)
    lines = text.strip().splitlines()
    for mode, line in zip((ARMED, DISARMED), lines):
        out, hi, why = json.loads(line)
        assert [tuple(x) for x in out] == results[mode][0]
        assert hi == results[mode][1] and [tuple(x) for x in why] == results[mode][2]


def renamed(index, scans, *modules):
    """The same cabinet with its I/O module ``io`` named ``modules[0]`` (docs/config.md)
    and each further module a quiet one of its own, online from the first scan."""
    first = modules[0] + "."
    out = {(first + n[3:] if n.startswith("io.") else n): i for n, i in index.items()}
    quiet = {"online": 1, "door_bolt": 1, "supply_mv": 24000}     # still, cold: below every reading of io
    extra = []
    for m in modules[1:]:
        for short in [n[3:] for n in sorted(index) if n.startswith("io.")]:
            out[m + "." + short] = len(out)
            extra.append((out[m + "." + short], quiet.get(short, 0)))
    return out, [(t, (changes + extra) if k == 0 else changes) for k, (t, changes) in enumerate(scans)]


@pytest.mark.parametrize("modules", [("door",), ("io1", "io2"), ("cab", "io")])
def test_an_io_module_named_otherwise_is_read_as_io_is(modules):
    """The model finds its I/O modules by their class's signals, not by the name io:
    named otherwise, or beside a second, quiet module, the cabinet scores as it did."""
    scans, index = recorded(BUSY, "15m")
    doc = tables(level=30)
    expected = scored_both_modes(doc, scans, index)
    index2, scans2 = renamed(index, scans, *modules)
    got = scored_both_modes(doc, scans2, index2)
    assert got == expected
    blind = {n: i for n, i in index.items() if not n.startswith("io.")}    # what a model that found none scores
    assert scored_both_modes(doc, scans, blind) != expected


@pytest.mark.skipif(not mpy.available(), reason="MicroPython not set up (make setup)")
def test_the_second_io_module_is_watched_too_and_micropython_agrees():
    scans, index = recorded("", "12m")
    index2, scans2 = renamed(index, scans, "io1", "io2")
    burst = [(600000 + k * 1000, [(index2["io2.vib_rms_mg"], 400), (index2["io2.vib_peak_mg"], 1500)])
             for k in range(5)] + [(605000, [(index2["io2.vib_rms_mg"], 3), (index2["io2.vib_peak_mg"], 9)])]
    scans2 = sorted(scans2 + burst, key=lambda s: s[0])
    doc = tables()
    results = scored_both_modes(doc, scans2, index2)
    score, top = max(results[ARMED][0])
    assert score >= 40 and FEATURES[top] in ("vib", "peak")
    assert_micropython_scores(doc, scans2, index2, results)


PORT_MODEL = "rules/models/port.json"
HEALTHY = {"io.door_bolt": 1, "io.supply_mv": 24000, "io.temp_dc": 231, "io.vib_rms_mg": 3, "io.vib_peak_mg": 9,
           "bms1.pack_mv": 52800, "bms1.temp_max_dc": 245, "bms1.temp_min_dc": 240, "bms1.modules": 8,
           "bms1.soc_pct": 80, "bms1.serial": 4711, "bms1.cell_vmax_mv": 3310, "bms1.cell_vmin_mv": 3290}


def boot(events, minutes=6):
    """The shipped model over a disarmed cabinet whose image starts unread
    (all 0, devices offline); ``events``: {ms: {signal: value}}.  -> (the
    largest score, the features that ever scored, the model's threshold)."""
    _scans, index = recorded("", "1m")
    with open(PORT_MODEL, encoding="utf-8") as f:
        model = AnomalyModel(ModelTables(json.load(f)), index, (DISARMED,))
    image = [0] * (max(index.values()) + 1)
    image[index["sys.clock_trusted"]] = 1
    worst = 0
    scored = set()
    for t in range(0, minutes * 60000, 100):
        for name, v in events.get(t, {}).items():
            image[index[name]] = v
        worst = max(worst, model.scan(image, t, DISARMED)[0])
        scored |= set(name for name, _points in model.explain())
    return worst, scored, model.t.threshold


def online(*devices, **values):
    out = {d + ".online": 1 for d in devices}
    out.update({k: v for k, v in HEALTHY.items() if k.split(".")[0] in devices})
    return out


def test_devices_coming_online_late_are_no_step_or_rise_for_the_model():
    # The I/O module at its first poll, the BMS 2.5 s later (its own period).
    assert boot({500: online("io"), 3000: online("bms1")})[:2] == (0, set())


def test_a_device_returning_with_other_values_is_no_step_for_the_model():
    back = dict(online("bms1"), **{"bms1.pack_mv": 40000, "bms1.temp_max_dc": 380, "bms1.current_ma": 50000})
    _worst, scored, _threshold = boot({500: online("io", "bms1"), 120000: {"bms1.online": 0}, 135000: back,
                                       200000: {"io.online": 0}, 203000: dict(online("io"), **{"io.door_bolt": 0})})
    # A device silent is the silence rules' (not a feature); what it reads when back is no step.
    assert scored == set()


def test_honest_faults_are_no_anomaly_a_spike_and_supply_noise():
    spike = {500: online("io", "bms1"), 120000: {"bms1.temp_max_dc": 245 + 200}, 121000: {"bms1.temp_max_dc": 245}}
    assert boot(spike)[1] == set()                                      # one poll at +20 C: no rise
    noise = {500: online("io", "bms1")}
    noise.update({t: {"io.supply_mv": 24100 - 150 * (t // 1000 % 2)} for t in range(60000, 120000, 1000)})
    assert boot(noise)[1] == set()                                      # 150 mV of wander: no power drop
    warming = {500: online("io", "bms1")}
    warming.update({t: {"bms1.temp_max_dc": 245 + (t - 60000) // 2000} for t in range(60000, 300000, 1000)})
    assert "temp" in boot(warming)[1]                                   # held: a pack warming up still is


def test_the_same_step_while_the_device_answers_is_scored():
    worst, scored, threshold = boot({500: online("io", "bms1"), 120000: {"bms1.pack_mv": 40000}})
    assert worst >= threshold and scored == {"volt"}


@pytest.mark.parametrize("rms, peak, scores", [
    (3, 9000, False),        # a lone peak glitch: the register high for one poll, the RMS idle
    (28, 65535, False),      # the same at the top of the register, a shaking-free cabinet
    (300, 4200, True),       # a knock: the RMS rises with the peak (crest 14)
])
def test_a_lone_peak_glitch_is_no_knock_a_knock_with_its_rms_is(rms, peak, scores):
    events = {500: online("io", "bms1"), 120000: {"io.vib_rms_mg": rms, "io.vib_peak_mg": peak},
              120100: {"io.vib_rms_mg": 3, "io.vib_peak_mg": 9}}
    worst, scored, threshold = boot(events, minutes=3)
    assert (worst >= threshold) is scores and ("peak" in scored) is scores
