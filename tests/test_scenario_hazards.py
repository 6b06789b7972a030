"""The format's answers to the ho12 doc defects (docs/scenarios.md): a
failing cell that heats with the current, cells drifting apart, dummy
modules, a tow, a GNSS jammer, a cut that outlasts the gateway's backup,
``device`` for a device off the bus, and what ``--check`` lists."""

import subprocess
import sys

import pytest

from simulator.errors import ScenarioError
from simulator.scenario import gateway_downs
from simulator.scenariofile import loads
from simulator.world import CabinetWorld
from tests.scen_helpers import peak, scenario, scenario_text, series, value_at

MIN = 60000
CHARGE = '\n[[process]]\nkind = "bms"\ncharge_at = "00:20"\ncharge = "1h"\ncharge_a = 60.0\n'


def action(kind, extra="", at="+10m"):
    return '\n[[action]]\nkind = "{}"\nat = "{}"\n{}\n'.format(kind, at, extra)


def test_a_hot_cell_heats_with_the_current_only_and_its_siblings_do_not():
    s, _ = series(scenario(CHARGE + action("hot_cell", 'battery = "bms2"\nrise_c = 12.0\namps = 60.0'), "3h"))
    hot, cool = s["bms2.temp_max_dc"], s["bms1.temp_max_dc"]
    assert abs(value_at(hot, 19 * MIN) - value_at(cool, 19 * MIN)) <= 1      # no current yet: nothing
    gap = value_at(hot, 80 * MIN) - value_at(cool, 80 * MIN)
    assert 95 <= gap <= 125                          # ~12 °C after three time constants at 60 A
    assert value_at(s["bms2.temp_min_dc"], 80 * MIN) == value_at(s["bms1.temp_min_dc"], 80 * MIN)
    after = value_at(hot, 170 * MIN) - value_at(cool, 170 * MIN)
    assert after < 15                                # the charge over: it cools back towards the pack


def test_a_repaired_hot_cell_cools_and_a_bad_amps_is_refused():
    s, _ = series(scenario(CHARGE + action("hot_cell", 'battery = "bms2"\namps = 60.0\nduration = "30m"'), "3h"))
    at_repair = value_at(s["bms2.temp_max_dc"], 40 * MIN) - value_at(s["bms1.temp_max_dc"], 40 * MIN)
    later = value_at(s["bms2.temp_max_dc"], 75 * MIN) - value_at(s["bms1.temp_max_dc"], 75 * MIN)
    assert at_repair > 50 and later < at_repair / 2   # still charging, yet cooling: the cell was replaced
    with pytest.raises(ScenarioError, match=r"t.toml:\d+: .*hot_cell.* amps: must be more than 0"):
        scenario(action("hot_cell", "amps = 0.0"))


def test_cell_imbalance_widens_the_spread_and_leaves_the_pack_voltage():
    body = action("cell_imbalance", 'battery = "bms1"\nspread_mv = 200\nduration = "20m"\nhold = "10m"\nback = "10m"')
    s, _ = series(scenario(body, "1h"))

    def spread(t, n=1):
        return value_at(s["bms{}.cell_vmax_mv".format(n)], t) - value_at(s["bms{}.cell_vmin_mv".format(n)], t)
    assert spread(5 * MIN) == spread(5 * MIN, 2) == 12
    assert 98 <= spread(20 * MIN) - 12 <= 102                     # half way up
    assert 198 <= spread(35 * MIN) - 12 <= 202                    # held
    assert spread(55 * MIN) == 12                                 # rebalanced
    assert value_at(s["bms1.pack_mv"], 35 * MIN) == value_at(s["bms2.pack_mv"], 35 * MIN)


def test_dummy_modules_count_but_add_no_voltage():
    body = (action("module_remove", "count = 3") + action("module_insert", "count = 3\ndummy = true", at="+15m")
            + action("module_remove", "count = 1\ndummy = true", at="+20m"))
    s, _ = series(scenario(body))
    full = value_at(s["bms1.pack_mv"], 5 * MIN)
    assert value_at(s["bms1.modules"], 16 * MIN) == 8 and abs(value_at(s["bms1.pack_mv"], 16 * MIN) - full * 5 / 8) < 2
    assert value_at(s["bms1.modules"], 21 * MIN) == 7 and abs(value_at(s["bms1.pack_mv"], 21 * MIN) - full * 5 / 8) < 2
    s, _ = series(scenario(action("module_remove", "count = 8") + action("module_insert", "count = 2\ndummy = true",
                                                                         at="+15m")))
    assert value_at(s["bms1.modules"], 16 * MIN) == 2 and value_at(s["bms1.cell_vmax_mv"], 16 * MIN) == 0


def test_a_tow_jolts_tilts_and_rolls_for_good():
    s, _ = series(scenario(action("tow", "deg = 2.0")))
    assert value_at(s["io.accel_z_mg"], 10 * MIN) == 40 and value_at(s["io.accel_z_mg"], 10 * MIN + 3000) == 0
    assert value_at(s["io.tilt_mdeg"], 30 * MIN) == 2000 and value_at(s["io.tilt_mdeg"], 59 * MIN) == 2000
    assert peak(s["io.vib_rms_mg"], 50 * MIN, 59 * MIN) >= 50


def test_a_gnss_jammer_takes_the_fix_not_the_receiver():
    body = '\n[[process]]\nkind = "gnss"\n' + action("gnss_jam", 'duration = "5m"') + action("carry", at="+11m")
    s, _ = series(scenario(body, "30m"))
    assert value_at(s["pos.fix"], 12 * MIN) == 0 and value_at(s["pos.sats"], 12 * MIN) == 0
    assert value_at(s["pos.online"], 12 * MIN) == 1
    assert value_at(s["pos.dist_m"], 14 * MIN) < 10                # held where the jam began
    assert value_at(s["pos.fix"], 20 * MIN) == 1 and value_at(s["pos.dist_m"], 20 * MIN) > 30
    with pytest.raises(ScenarioError, match="gnss_jam: cabinet c1 has no GNSS receiver"):
        scenario(action("gnss_jam"))


def test_a_cut_outlasting_the_backup_stops_the_gateway_until_the_supply_returns():
    def downs(extra):
        scn = scenario(extra, "2h")
        return gateway_downs(scn, "c1")
    assert downs(action("power_cut", 'duration = "1h"')) == []                           # the backup holds
    assert downs(action("power_cut", 'duration = "1h"\nbackup = "20m"')) == [(30 * MIN, 70 * MIN)]
    assert downs(action("power_cut", 'backup = "0s"')) == [(10 * MIN, 120 * MIN + 1)]  # for good: never back
    assert downs(action("grid_outage", 'duration = "10m"\nbackup = "20m"')) == []        # back before it ran flat
    assert downs(action("grid_outage", 'duration = ""\nbackup = "1h"')) == [(70 * MIN, 120 * MIN + 1)]
    # Evaluated as a restart: nobody scans while it is off, and it boots again.
    seen = []

    class Watch:
        def __init__(self, catalog):
            pass

        def scan(self, image, now, mode):
            seen.append(now)
            return ()
    from simulator.evaluate import run_cabinet
    scn = scenario(action("power_cut", 'duration = "10m"\nbackup = "2m"'), "30m", armed=False)
    run_cabinet(scn, scn.cabinets[0], Watch, idle_ms=100)
    assert not [t for t in seen if 12 * MIN <= t < 20 * MIN] and 20 * MIN in seen


def test_a_device_named_in_place_of_a_signal_goes_offline():
    s, _ = series(scenario(action("sensor_failure", 'device = "bms2"\nfault = "offline"\nduration = "5m"')))
    assert value_at(s["bms2.online"], 12 * MIN) == 0 and value_at(s["bms2.online"], 16 * MIN) == 1
    for extra, msg in (('device = "io"\nfault = "stuck"', "only with fault = \"offline\""),
                       ('device = "io"\nsignal = "io.tamper"\nfault = "offline"', "not both"),
                       ('device = "bus"\nfault = "offline"', "want io or bms1"),
                       ('device = "bms3"\nfault = "offline"', "has only bms1 … bms2")):
        with pytest.raises(ScenarioError, match=msg):
            scenario(action("sensor_fault", extra))


def test_the_new_keys_default_to_the_old_behaviour():
    """``dummy = false`` and ``backup = ""`` spelt out give the stream (and gateway) of the file without them."""
    def stream(body):
        scn = scenario(body, "2h")
        return list(CabinetWorld(scn, scn.cabinets[0]).stream()), gateway_downs(scn, "c1")
    old = CHARGE + action("module_insert", "count = 2") + action("power_cut", 'duration = "5m"', at="+30m")
    new = CHARGE + action("module_insert", "count = 2\ndummy = false") + action(
        "power_cut", 'duration = "5m"\nbackup = ""', at="+30m")
    assert stream(old) == stream(new) and stream(old)[1] == []


def test_check_lists_weekdays_scripted_acts_and_incident_windows(tmp_path):
    body = (action("command", 'name = "maint_start"\narg = "20m"', at="+5m") + action("door_open", at="+6m")
            + action("door_close", at="+20m") + action("power_cut", 'duration = "10m"\nbackup = "0s"', at="+40m")
            + '\n[[incident]]\nkind = "tamper"\nstart = "+40m"\nend = "+50m"\n')
    path = tmp_path / "c.toml"
    path.write_text(scenario_text(body, "1h"))
    out = subprocess.run([sys.executable, "-m", "controller.cli.main", "eval", "--check", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "local time: from Mon 2026-03-16T00:00:00+01:00 (+0h00m00s) to Mon 2026-03-16T01:00:00+01:00" in out
    assert "c1 Mon 2026-03-16T00:05:00+01:00 (+0h05m00s) command maint_start (1200 s)" in out
    assert "(+0h06m00s) bolt released" in out and "(+0h06m01s) door opens" in out
    assert "(+0h20m01s) bolt engaged" in out
    assert "(+0h40m00s) gateway stops, starts again at Mon 2026-03-16T00:50:00+01:00 (+0h50m00s)" in out
    assert ("c1 incident tamper: start Mon 2026-03-16T00:40:00+01:00 (+0h40m00s), end Mon 2026-03-16T00:50:00+01:00 "
            "(+0h50m00s), detections count to Mon 2026-03-16T00:52:00+01:00 (+0h52m00s) (grace)") in out
    lines = [x for x in out.splitlines() if x.startswith("  c1 Mon")]
    assert lines == sorted(lines, key=lambda x: x.split("(+")[1][:9])       # in time order


def _check(tmp_path, body, duration="2h"):
    path = tmp_path / "c.toml"
    path.write_text(scenario_text(body, duration))
    return subprocess.run([sys.executable, "-m", "controller.cli.main", "eval", "--check", str(path)],
                          capture_output=True, text=True, check=True).stdout


def test_check_says_when_a_door_close_leaves_the_bolt_as_it_was(tmp_path):
    """After a door_forced the bolt never moved: the door_close's bolt is listed as already engaged;
    after a door_open it is a real engaging."""
    forced = _check(tmp_path, action("door_forced", at="+10m") + action("door_close", at="+20m"))
    assert "(+0h20m01s) bolt engaged (already engaged)" in forced
    opened = _check(tmp_path, action("door_open", at="+10m") + action("door_close", at="+20m"))
    assert "(+0h20m01s) bolt engaged\n" in opened and "already" not in opened


def test_check_lists_ongoing_acts_with_their_end(tmp_path):
    body = ('\n[[process]]\nkind = "gnss"\n' + action("thermal_ramp", 'duration = "10m"\nhold = "20m"\ncool = "30m"', at="+10m")
            + action("cell_imbalance", 'duration = "25m"', at="+10m") + action("gnss_jam", 'duration = "5m"', at="+1h")
            + action("tow", at="+1h2m") + action("lift", 'duration = "30s"', at="+1h30m")
            + action("weather_front", 'ramp = "1h"\nhold = "0s"\nback = "3h"', at="+0m")
            + action("carry", 'distance_m = 2000.0\nspeed_mps = 6.0', at="+1h"))
    out = _check(tmp_path, body)
    assert ("(+0h10m00s) thermal_ramp bms1: heats until Mon 2026-03-16T00:20:00+01:00 (+0h20m00s), held until "
            "Mon 2026-03-16T00:40:00+01:00 (+0h40m00s), back by Mon 2026-03-16T01:10:00+01:00 (+1h10m00s)") in out
    assert "cell_imbalance bms1: spread widens until Mon 2026-03-16T00:35:00+01:00 (+0h35m00s), held to the end" in out
    assert "(+1h00m00s) gnss_jam until Mon 2026-03-16T01:05:00+01:00 (+1h05m00s)" in out
    assert "(+1h02m00s) tow: hitched, rolling from here on (for good)" in out
    assert "(+1h30m00s) lift: set down at Mon 2026-03-16T01:30:30+01:00 (+1h30m30s)" in out
    assert "back by Mon 2026-03-16T04:00:00+01:00 (+4h00m00s) (after the end)" in out
    # 4 s to reach 6 m/s at 1.5 m/s² (12 m), then 1988 m at 6 m/s: 335.3 s
    assert "(+1h00m00s) carry: 2000 m at up to 6 m/s, there at Mon 2026-03-16T01:05:35+01:00 (+1h05m35s)" in out


def test_an_action_without_its_cabinet_on_a_site_is_told_cabinets_too():
    two = scenario_text(action("weather_front", at="+0m")) + '\n[[cabinet]]\nid = "c2"\n'
    with pytest.raises(ScenarioError, match=r'say which cabinet \(there are 2\): cabinet = "c1", or for several '
                                            r'or the whole site cabinets = \["c1", "c2"\]'):
        loads(two, "t.toml")


def test_a_per_cabinet_shift_visits_each_cabinet_on_its_own_draws():
    """Without per_cabinet every cabinet of a shift process is visited at the same moments; with it each
    draws its own visits."""
    def visits(extra):
        text = scenario_text('\n[[cabinet]]\nid = "c2"\n[[cabinet]]\nid = "c3"\n[[process]]\nkind = "shift"\n'
                             'visit_prob = 0.5\n' + extra, "3d")
        scn = loads(text, "t.toml")
        return [CabinetWorld(scn, cab).visits for cab in scn.cabinets]
    shared, own = visits(""), visits("per_cabinet = true\n")
    assert shared[0] == shared[1] == shared[2] and shared[0]
    assert len({tuple(v) for v in own}) == 3 and all(own)
    with pytest.raises(ScenarioError, match="per_cabinet: must be bool"):
        visits('per_cabinet = "yes"\n')
