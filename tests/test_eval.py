"""Closed-loop evaluation on small scenarios whose right answer is known."""

import json
import subprocess
import sys

import pytest

from controller.core.anomaly import ModelTables
from simulator.decodepath import profile_decode
from simulator.evaluate import DEFAULT_MODEL, evaluate, load_model, run_cabinet
from simulator.rulesource import RuleSource
from simulator.train import train
from tests.scen_helpers import scenario, scenario_text

UNAUTHORISED = """
[[action]]
kind = "door_open"
at = "+10m"

[[incident]]
kind = "theft"
start = "+10m"
end = "+15m"
"""


def test_entry_delay_detects_an_unauthorised_door_in_30_s():
    doc = evaluate([scenario(UNAUTHORISED)])
    (inc,) = doc["scenarios"][0]["incidents"]
    # bolt released at +10m: the entry route starts there (the door opens 1 s later); entry delay 30 s.
    assert inc["detected"] and inc["ttd_s"] == 30.0 and inc["by"] == "core: entry_expired"
    assert doc["pd"] == 1.0 and doc["nar"] == 0.0 and doc["ttd_median_s"] == 30.0


def test_an_authorised_visit_is_no_alarm_and_a_stray_door_is_a_nuisance():
    visit = '\n[[action]]\nkind = "door_open"\nat = "+10m"\n\n[[action]]\nkind = "command"\nat = "+10m15s"\nname = "maint_start"\narg = "20m"\n'
    doc = evaluate([scenario(visit, "1d")])
    assert doc["nuisance_alarms"] == 0 and doc["pd"] is None
    stray = '\n[[action]]\nkind = "door_open"\nat = "+10m"\n'
    doc = evaluate([scenario(stray, "1d")])
    assert doc["nuisance_alarms"] == 1 and doc["nar"] == 1.0 and doc["nar_per_cabinet_30d"] == 30.0
    assert doc["nar_noise_per_cabinet_30d"] == 30.0 and doc["noise_cabinet_days"] == 1.0
    doc = evaluate([scenario(stray + '\n[[incident]]\nkind = "theft"\nstart = "+10m"\nend = "+15m"\n', "1d")])
    assert doc["nuisance_alarms"] == 0 and doc["noise_cabinet_days"] == 0 and doc["nar_noise_per_cabinet_30d"] is None


def test_skipping_quiet_scans_changes_nothing_for_the_core():
    body = UNAUTHORISED + '\n[[action]]\nkind = "door_close"\nat = "+25m"\n' \
                          '\n[[action]]\nkind = "command"\nat = "+31m"\nname = "arm"\n' \
                          '\n[[action]]\nkind = "door_forced"\nat = "+40m"\n'
    scn = scenario(body)
    fast = run_cabinet(scn, scn.cabinets[0], idle_ms=1000)
    exact = run_cabinet(scn, scn.cabinets[0], idle_ms=scn.scan_ms)
    assert [(d.t_ms, d.by) for d in fast.detections] == [(d.t_ms, d.by) for d in exact.detections]
    assert len(fast.detections) == 2 and exact.scans > 5 * fast.scans


def _model_for(body, folder):
    path = folder / "noise.toml"
    path.write_text(scenario_text(body, "6h"))
    doc, _notes = train([str(path)])
    return ModelTables(doc)


NOISE = '\n[[process]]\nkind = "wind"\n[[process]]\nkind = "truck"\n[[process]]\nkind = "bms"\ncharge_at = "01:00"\n'


def test_the_model_adds_a_detection_the_core_alone_misses(tmp_path):
    model = _model_for(NOISE, tmp_path)
    # Modules pulled with no door (the core alone sees no entry): a loss.
    attack = NOISE + '\n[[action]]\nkind = "module_remove"\nat = "+2h"\ncount = 2\n\n[[incident]]\nkind = "theft"\nstart = "+2h"\nend = "+2h5m"\n'
    doc = evaluate([scenario(attack, "4h")], model=model)
    assert doc["compare"]["rules"]["pd"] == 0.0
    assert doc["compare"]["rules+model"]["pd"] == 1.0 and doc["nuisance_alarms"] == 0
    (added,) = doc["compare"]["model_adds"]
    assert "volt" in added["by"] and added["ttd_s"] <= 5.0
    assert doc["compare"]["model_by_batch"] == {"library": {
        "scenarios": 1, "incidents": 1, "detections_added": 1, "detections_lost": 0, "nuisance_added": 0,
        "added_by": {"volt": 1}, "model_nuisance_by": {}, "earns": True}}


def test_eval_cli_json_and_report(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(scenario_text(UNAUTHORISED, "1h"))
    args = [sys.executable, "-m", "controller.cli.main", "eval", str(path), "--json", "--no-model"]
    pytest.importorskip("matplotlib")
    r = subprocess.run(args + ["--report", str(tmp_path / "rep")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"pd", "nar", "ttd_median_s", "ttd_p95_s", "scenarios", "compare"} <= set(doc)
    assert (tmp_path / "rep" / "t-1.png").stat().st_size > 1000
    assert "t-1.png" in (tmp_path / "rep" / "report.md").read_text()


def test_eval_cli_refuses_a_bad_scenario(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(scenario_text('\n[[action]]\nkind = "teleport"\nat = "+1m"\n', "1h"))
    r = subprocess.run([sys.executable, "-m", "controller.cli.main", "eval", str(path)], capture_output=True, text=True)
    assert r.returncode == 1 and "bad.toml:" in r.stderr and "unknown action 'teleport'" in r.stderr
    assert "Traceback" not in r.stderr


def test_shipped_model_loads_and_is_small():
    from simulator.evaluate import DEFAULT_MODEL
    assert DEFAULT_MODEL.stat().st_size <= 16 * 1024
    assert load_model(str(DEFAULT_MODEL)).threshold > 0


def test_help_lists_eval_and_model_train_and_a_bad_model_is_a_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "controller.cli.main", "--help"], capture_output=True, text=True)
    assert "eval" in r.stdout and "model" in r.stdout
    bad = tmp_path / "m.json"
    bad.write_text('{"cabguard_model": 1}')
    path = tmp_path / "s.toml"
    path.write_text(scenario_text("", "10m"))
    r = subprocess.run([sys.executable, "-m", "controller.cli.main", "eval", str(path), "--model", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "m.json: model key 'window_ms'" in r.stderr


def test_values_reach_the_image_through_the_decode_path():
    # A decode path that loses the door's contacts (a broken profile) hides the entry.
    def factory(catalog):
        door = (catalog.index["io.door_open"], catalog.index["io.door_bolt"])
        return lambda changes: [(i, v) for i, v in changes if i not in door]
    scn = scenario(UNAUTHORISED)
    assert run_cabinet(scn, scn.cabinets[0], decode_factory=factory).detections == []
    assert len(run_cabinet(scn, scn.cabinets[0]).detections) == 1


FORCED = '\n[[action]]\nkind = "door_forced"\nat = "+10m"\n\n[[incident]]\nkind = "theft"\nstart = "+10m"\nend = "+15m"\n'


def test_the_compiled_packs_run_through_the_profile_decode_path():
    from simulator.decodepath import profile_decode
    from simulator.rulesource import RuleSource
    rules = RuleSource()
    assert "shift_change" in rules.schedules and "maintenance" in rules.schedules
    scn = scenario(FORCED + '\n[[process]]\nkind = "wind"\n')
    doc = evaluate([scn], rules_factory=rules, decode_factory=profile_decode())
    (inc,) = doc["scenarios"][0]["incidents"]
    # the door opens 1 s into the burst with the bolt engaged: the pack's door_forced
    assert inc["detected"] and inc["by"] == "rule door_forced.io" and inc["ttd_s"] <= 2.0
    assert doc["nuisance_alarms"] == 0


def test_the_decode_path_clamps_like_the_registers():
    from simulator.decodepath import profile_decode
    from simulator.world import cabinet_catalog
    scn = scenario()
    catalog = cabinet_catalog(scn, scn.cabinets[0])
    decode = profile_decode()(catalog)
    peak, week = catalog.index["io.vib_peak_mg"], catalog.index["sys.week_hour"]
    # io-dvt keeps the peak in one u16 register: 70000 mg cannot reach the image.
    assert decode([(peak, 70000), (week, 5)]) == [(peak, 65535), (week, 5)]
    assert decode([(peak, 1200)]) == [(peak, 1200)]


def test_sunspec_points_sharing_a_scale_factor_decode_together():
    from simulator.decodepath import profile_decode
    from simulator.world import cabinet_catalog
    scn = scenario()
    catalog = cabinet_catalog(scn, scn.cabinets[0])
    decode = profile_decode({"battery": "sunspec-battery"})(catalog)
    pack = catalog.index["bms1.pack_mv"]
    got = dict(decode([(pack, 409612)]))
    assert abs(got[pack] - 409612) <= 10      # rounded to the scale factor the encoder chose


def test_decoding_straight_into_the_image_writes_what_the_decoded_changes_say():
    """decode.into (the gateway's common case) writes, in order, the values decode() returns:
    each decoded (a clamped one clamped)."""
    from simulator.decodepath import profile_decode
    from simulator.world import CabinetWorld, cabinet_catalog
    scn = scenario()
    catalog = cabinet_catalog(scn, scn.cabinets[0])
    for battery in ("bms16-vendor", "sunspec-battery"):
        decode = profile_decode({"battery": battery})(catalog)
        listed, truth, image = catalog.new_image(), catalog.new_image(), catalog.new_image()
        clamped = (catalog.index["io.vib_peak_mg"], 70000)      # beyond its u16 register
        for n, (_t, changes, _cmds) in enumerate(CabinetWorld(scn, scn.cabinets[0], catalog).stream()):
            if n % 7 == 0:
                changes = changes + [clamped]
            for i, v in decode(changes):
                listed[i] = v
            decode.into(changes, truth, image)
            assert image == truth == listed
            assert n % 7 or image[clamped[0]] == 65535
            if n == 300:
                break
        assert any(v for v in listed)


def test_the_world_reports_its_cells_per_module_as_each_profile_gives_it():
    """The world's module is the one its vendor profile states (16 cells), and its
    BMSs report it at +0, so a rule reads it through either profile's decode path."""
    from simulator.decodepath import profile_decode
    from simulator.sensors import CELLS_PER_MODULE
    from simulator.world import CabinetWorld, cabinet_catalog
    from drivers.modbus.profiles import load_profile
    assert load_profile("bms16-vendor").constants == {"cells_per_module": CELLS_PER_MODULE}
    scn = scenario()
    catalog = cabinet_catalog(scn, scn.cabinets[0])
    cells = [catalog.index["bms{}.cells_per_module".format(n)] for n in (1, 2)]
    first = dict(next(iter(CabinetWorld(scn, scn.cabinets[0], catalog).stream()))[1])
    assert [first.get(i) for i in cells] == [CELLS_PER_MODULE] * 2
    for battery in ("bms16-vendor", "sunspec-battery"):
        decode = profile_decode({"battery": battery})(catalog)
        assert decode([(cells[0], CELLS_PER_MODULE)]) == [(cells[0], 16)]
    # the vendor's figure is its profile's: no register could carry another
    assert profile_decode()(catalog)([(cells[0], 2)]) == [(cells[0], 16)]


QUIET_RESTARTS = """
[[process]]
kind = "wind"
[[process]]
kind = "bms"
charge_at = "00:05"
charge = "20m"

[[action]]
kind = "gateway_restart"
at = "+3m"
down = "20s"

[[action]]
kind = "power_cut"
at = "+8m"
duration = "5s"

[[action]]
kind = "gateway_restart"
at = "+12m"
down = "5s"

[[action]]
kind = "cable_cut"
device = "bms1"
at = "+20m"
duration = "15s"
"""


def test_a_quiet_cabinet_boots_like_a_gateway_and_stays_quiet_through_restarts():
    scn = scenario(QUIET_RESTARTS, "30m", armed=False)
    seen = []

    class Watch:
        """Rules that note what the gateway's image holds at its first scans."""

        def __init__(self, catalog):
            self.online = catalog.index["bms2.online"]
            self.pack = catalog.index["bms2.pack_mv"]

        def scan(self, image, now, mode):
            seen.append((now, image[self.online], image[self.pack]))
            return ()
    run_cabinet(scn, scn.cabinets[0], Watch, idle_ms=100)
    starts = [0, 200000, 725000]            # the start, and each restart's first scan
    for t0 in starts:
        first = [s for s in seen if s[0] >= t0][:3]
        # Unread and offline at the start; online with its value at its first poll
        # (one device per scan: bms1, bms2, io).
        assert [(t - t0, on, pack > 0) for t, on, pack in first] == [(0, 0, False), (100, 0, False), (200, 1, True)]
    assert not [s for s in seen if 180000 <= s[0] < 200000]   # down: nobody scans
    doc = evaluate([scn], rules_factory=RuleSource(), model=load_model(str(DEFAULT_MODEL)),
                   decode_factory=profile_decode())
    assert doc["nuisance_alarms"] == 0 and doc["compare"]["rules"]["nuisance_alarms"] == 0


YANKED = """
[[action]]
kind = "gateway_restart"
at = "+10m"
down = "3m"

[[action]]
kind = "door_open"
at = "+10m20s"

[[action]]
kind = "module_remove"
at = "+11m"
battery = "bms2"
count = 2

[[action]]
kind = "door_close"
at = "+12m"
"""


@pytest.mark.parametrize("armed, detected", [(True, True), (False, False)])
def test_eval_resumes_like_the_gateway_and_sees_modules_gone_while_it_was_down(armed, detected):
    # the core alone (no rules): only the persisted inventory can tell
    incident = '\n[[incident]]\nkind = "theft"\nstart = "+10m"\nend = "+20m"\n' if armed else ""
    doc = evaluate([scenario(YANKED + incident, "30m", armed=armed)])
    if detected:
        (inc,) = doc["scenarios"][0]["incidents"]
        assert inc["detected"] and inc["by"] == "core: inventory bms2.modules 8 -> 6"
        assert 180 <= inc["ttd_s"] <= 190         # at the first poll after the 3 minutes down
    assert doc["nuisance_alarms"] == 0


def test_a_grid_outage_read_by_the_mains_sense_is_no_alarm_and_a_cut_feed_in_the_grid_up_is():
    """docs/config.md, "Mains sense": outages armed and disarmed, one of 12 s (the
    module back as the mains return), then the cabinet's own feed cut."""
    body = ''.join('\n[[action]]\nkind = "grid_outage"\nat = "{}"\nduration = "{}"\n'.format(at, length)
                   for at, length in (("+5m", "12s"), ("+10m", "20m"), ("+40m", "3m")))
    cut = '\n[[action]]\nkind = "power_cut"\nat = "+50m"\n[[incident]]\nkind = "tamper"\ncabinet = "c1"\nstart = "+50m"\nend = "+51m"\n'
    for armed in (True, False):
        doc = evaluate([scenario(body, armed=armed)], RuleSource(), decode_factory=profile_decode())
        assert doc["nuisance_alarms"] == 0
    unsensed = scenario(body.replace("[[action]]", "mains_sense = false\n[[action]]", 1))
    assert evaluate([unsensed], RuleSource(), decode_factory=profile_decode())["nuisance_alarms"] == 3
    doc = evaluate([scenario(body + cut)], RuleSource(), decode_factory=profile_decode())
    (inc,) = doc["scenarios"][0]["incidents"]
    assert inc["detected"] and inc["by"] == "rule supply_lost.io" and inc["ttd_s"] == 0.0
    assert doc["nuisance_alarms"] == 0


def test_a_theft_during_a_grid_outage_is_caught_by_the_packs_that_keep_their_supply():
    """docs/rules.md, "What the theft pack cannot tell apart": an outage
    blinds the I/O module (door, vibration, tilt), and the door forced
    during it shows nothing; the packs ride through on their own supplies,
    so the modules taken are module_removed."""
    body = '''
[[action]]
kind = "grid_outage"
at = "+10m"
duration = "40m"
[[action]]
kind = "door_forced"
at = "+20m"
[[action]]
kind = "module_remove"
at = "+22m"
battery = "bms2"
count = 2
[[incident]]
kind = "theft"
cabinet = "c1"
start = "+20m"
end = "+25m"
'''
    doc = evaluate([scenario(body)], RuleSource(), decode_factory=profile_decode())
    theft = doc["scenarios"][0]["incidents"][0]
    # the door (+20m) unseen; the modules at +22m, reported 2 s later
    assert theft["detected"] and theft["by"] == "rule module_removed.bms2" and theft["ttd_s"] == 122.0
