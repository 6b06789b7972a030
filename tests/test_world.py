"""The world model: deterministic, and every action and process has its shape."""

import hashlib

from controller.core.events import COMMAND_CODES
from simulator.world import CabinetWorld
from tests.scen_helpers import peak, scenario, series, value_at

MIN = 60000


def digest(scn):
    h = hashlib.sha256()
    for t, changes, cmds in CabinetWorld(scn, scn.cabinets[0]).stream():
        h.update(repr((t, changes, cmds)).encode())
    return h.hexdigest()


def test_same_scenario_same_stream_and_seed_matters():
    body = '\n[[process]]\nkind = "wind"\n[[process]]\nkind = "truck"\n[[process]]\nkind = "bms"\ncharge_at = "00:10"\n'
    assert digest(scenario(body)) == digest(scenario(body))
    assert digest(scenario(body)) != digest(scenario(body.replace('kind = "truck"', 'kind = "truck"\nseed = 99')))


def test_initial_image_and_signal_names():
    s, cmds = series(scenario())
    assert value_at(s["io.online"], 0) == 1 and value_at(s["bms2.online"], 0) == 1
    assert value_at(s["io.door_bolt"], 0) == 1 and value_at(s["bms1.modules"], 0) == 8
    assert value_at(s["bms1.serial"], 0) == 100000 and value_at(s["bms2.serial"], 0) == 100001
    assert 400000 < value_at(s["bms1.pack_mv"], 0) < 450000
    assert value_at(s["sys.week_hour"], 0) == 0          # Monday 00:00 local
    assert value_at(s["sys.week_hour"], 3600000) == 1
    assert cmds[0] == (0, (COMMAND_CODES["arm"], 0))
    assert max(v for _t, v in s["io.vib_rms_mg"]) < 5    # a quiet cabinet: the sensor floor


def action(kind, extra="", at="+10m"):
    return '\n[[action]]\nkind = "{}"\nat = "{}"\n{}\n'.format(kind, at, extra)


def test_door_actions():
    s, _ = series(scenario(action("door_open") + action("door_close", at="+20m") + action("door_forced", at="+30m")))
    assert value_at(s["io.door_bolt"], 10 * MIN) == 0 and value_at(s["io.door_open"], 10 * MIN) == 0
    assert value_at(s["io.door_open"], 10 * MIN + 1000) == 1
    assert value_at(s["io.door_open"], 20 * MIN) == 0 and value_at(s["io.door_bolt"], 20 * MIN + 1000) == 1
    forced = 30 * MIN + 1000
    assert value_at(s["io.door_open"], forced) == 1 and value_at(s["io.door_bolt"], forced) == 1
    assert peak(s["io.vib_peak_mg"], 30 * MIN, forced) > 1400


def test_vibration_tilt_and_lift():
    s, _ = series(scenario(action("vibration", 'duration = "10s"\nrms_mg = 300') + action("tilt", 'deg = 4.0', "+20m")
                           + action("lift", "accel_mg = 250", "+40m")))
    assert 250 < peak(s["io.vib_rms_mg"], 10 * MIN, 10 * MIN + 9000) < 360
    assert value_at(s["io.vib_rms_mg"], 10 * MIN + 12000) < 5
    assert value_at(s["io.tilt_mdeg"], 20 * MIN + 1000) < 4000
    assert value_at(s["io.tilt_mdeg"], 20 * MIN + 10000) == 4000
    assert value_at(s["io.tilt_mdeg"], 22 * MIN) == 0           # back after the duration
    assert value_at(s["io.accel_z_mg"], 40 * MIN) == 250 and value_at(s["io.accel_z_mg"], 40 * MIN + 3000) == 0


def test_modules_cables_power_and_faults():
    s, _ = series(scenario(action("module_remove", 'battery = "bms2"') + action("module_insert", 'battery = "bms2"\nserial = 4242', "+15m")
                           + action("cable_cut", 'device = "bms1"\nduration = "2m"', "+20m")
                           + action("power_cut", 'duration = "1m"', "+30m")
                           + action("sensor_fault", 'signal = "io.temp_dc"\nfault = "spike"\nvalue = 999', "+40m")))
    t = 10 * MIN + 2000
    assert value_at(s["bms2.modules"], t) == 7 and value_at(s["bms2.modules"], t - 100) == 8
    assert value_at(s["bms2.pack_mv"], t - 100) - value_at(s["bms2.pack_mv"], t) > 45000
    assert value_at(s["bms2.modules"], 15 * MIN + 2000) == 8 and value_at(s["bms2.serial"], 15 * MIN + 2000) == 4242
    assert value_at(s["bms1.online"], 20 * MIN) == 0 and value_at(s["bms1.online"], 22 * MIN) == 1
    assert value_at(s["io.supply_mv"], 30 * MIN) == 0 and value_at(s["io.online"], 30 * MIN + 200) == 0
    assert value_at(s["io.supply_mv"], 31 * MIN) == 24000 and value_at(s["io.online"], 31 * MIN + 200) == 1
    assert value_at(s["io.temp_dc"], 40 * MIN) == 999 and value_at(s["io.temp_dc"], 41 * MIN) < 400


def test_stuck_sensor_holds_its_value():
    body = '\n[[process]]\nkind = "truck"\nper_hour = 60.0\n' + action("sensor_fault", 'duration = "20m"')
    s, _ = series(scenario(body))
    during = [v for t, v in s["io.vib_rms_mg"] if 10 * MIN < t < 30 * MIN]
    assert during == [] and len([v for t, v in s["io.vib_rms_mg"] if t > 30 * MIN]) > 100


def test_faults_on_event_reported_contacts_act_at_once_and_hide_door_actions():
    """docs/scenarios.md, sensor_fault: door, bolt and tamper switch are read
    at +0, so a spike ends, a stuck contact hides the door moved under it,
    and the true state shows when the fault ends."""
    s, _ = series(scenario(action("sensor_fault", 'signal = "io.tamper"\nfault = "spike"\nvalue = 1\nduration = "30s"')))
    assert s["io.tamper"] == [(0, 0), (10 * MIN, 1), (10 * MIN + 30000, 0)]
    s, _ = series(scenario(action("sensor_fault", 'signal = "io.door_open"\nfault = "stuck"\nduration = "10m"')
                           + action("door_open", "", "+12m") + action("door_close", "", "+15m")
                           + action("door_open", "", "+18m")))
    assert s["io.door_open"] == [(0, 0), (20 * MIN, 1)]           # hidden while stuck; open when it ends
    assert s["io.door_bolt"] == [(0, 1), (12 * MIN, 0), (15 * MIN + 1000, 1), (18 * MIN, 0)]
    s, _ = series(scenario(action("sensor_fault", 'signal = "io.door_bolt"\nfault = "zero"\nduration = "5m"')))
    assert s["io.door_bolt"] == [(0, 1), (10 * MIN, 0), (15 * MIN, 1)]   # at once, no door action needed


def test_a_silent_device_keeps_its_last_reading_until_it_answers_again():
    """docs/scenarios.md: nobody reads a device that is offline, so a door
    moved while the I/O module is silent shows only when it answers again
    (a real gateway's image keeps the last reading: docs/rules.md)."""
    s, _ = series(scenario(action("door_open", "", "+5m") + action("cable_cut", 'device = "io"\nduration = "10m"')
                           + action("door_close", "", "+12m") + action("door_open", "", "+25m")))
    assert s["io.door_open"] == [(0, 0), (5 * MIN + 1000, 1), (20 * MIN, 0), (25 * MIN + 1000, 1)]
    assert [v for t, v in s["io.door_bolt"] if 10 * MIN <= t < 20 * MIN] == []


def test_a_zeroed_sensor_reads_zero_for_ever_unless_given_a_duration():
    body = '\n[[process]]\nkind = "truck"\nper_hour = 60.0\n'
    s, _ = series(scenario(body + action("sensor_fault", 'fault = "zero"')))
    assert value_at(s["io.vib_rms_mg"], 10 * MIN) == 0
    assert [v for t, v in s["io.vib_rms_mg"] if t >= 10 * MIN] == [0]   # nothing after the zero
    s, _ = series(scenario(body + action("sensor_fault", 'fault = "zero"\nduration = "5m"')))
    assert len([v for t, v in s["io.vib_rms_mg"] if t > 15 * MIN]) > 100


def test_thermal_ramp_and_slow_theft():
    s, _ = series(scenario(action("thermal_ramp", 'rise_c = 30.0\nduration = "10m"') +
                           action("theft_slow", 'battery = "bms2"\nduration = "20m"', "+30m")))
    before = value_at(s["bms1.temp_max_dc"], 10 * MIN - 100)
    assert 280 < value_at(s["bms1.temp_max_dc"], 21 * MIN) - before < 320
    assert value_at(s["io.door_bolt"], 30 * MIN) == 0 and value_at(s["io.door_open"], 30 * MIN + 20000) == 1
    assert value_at(s["bms2.modules"], 36 * MIN) == 7 and value_at(s["bms2.modules"], 48 * MIN) == 6
    assert peak(s["io.vib_rms_mg"], 31 * MIN, 49 * MIN) < 20      # quiet work
    assert value_at(s["io.door_open"], 50 * MIN) == 0 and value_at(s["io.door_bolt"], 50 * MIN) == 1


def test_crane_cycles_only_in_working_hours_and_trucks_peak():
    s, _ = series(scenario('\n[[process]]\nkind = "crane"\nhours = ["02:00", "03:00"]\n', "4h"))
    assert peak(s["io.vib_rms_mg"], 0, 2 * 60 * MIN) < 5
    assert peak(s["io.vib_rms_mg"], 2 * 60 * MIN, 3 * 60 * MIN + 3 * MIN) > 25
    t, _ = series(scenario('\n[[process]]\nkind = "truck"\nper_hour = 30.0\n', "1h"))
    big = [v for _t, v in t["io.vib_peak_mg"] if v > 150]
    assert 5 < len(big) < 400


def test_storm_wobbles_and_rain_is_low_noise():
    s, _ = series(scenario('\n[[process]]\nkind = "storm"\nper_day = 0.0\nat = ["+10m"]\nlength = "1h"\n', "2h"))
    tilts = [v for t, v in s["io.tilt_mdeg"] if 20 * MIN < t < 60 * MIN]
    assert max(tilts) > 100 and min(tilts) < -100
    r, _ = series(scenario('\n[[process]]\nkind = "rain"\nper_day = 0.0\nat = ["+10m"]\n', "2h"))
    assert 3 < peak(r["io.vib_rms_mg"], 20 * MIN, 60 * MIN) < 12


def test_shift_visit_authenticates_within_the_entry_delay():
    body = '\n[[process]]\nkind = "shift"\ntimes = ["02:00"]\nvisit_prob = 1.0\n'
    s, cmds = series(scenario(body, "4h"))
    opened = [t for t, v in s["io.door_open"] if v == 1]
    assert len(opened) == 1
    auth = [t for t, (code, _arg) in cmds if code == COMMAND_CODES["maint_start"]]
    assert len(auth) == 1 and 0 < auth[0] - opened[0] < 30000
    assert [c for _t, (c, _a) in cmds].count(COMMAND_CODES["maint_stop"]) == 1
    assert value_at(s["sched.shift_change"], 2 * 60 * MIN) == 1 and value_at(s["sched.shift_change"], 3 * 60 * MIN) == 0


def test_maintenance_window_and_bms_cycles():
    body = ('\n[[process]]\nkind = "maintenance"\ndays = ["mon"]\nat = "01:00"\nlength = "1h"\n'
            '\n[[process]]\nkind = "bms"\ncharge_at = "00:10"\ncharge = "1h"\ncharge_a = 100.0\ndischarge_at = "02:00"\ndischarge = "1h"\n')
    s, _ = series(scenario(body, "4h"))
    assert value_at(s["sched.maintenance"], 61 * MIN) == 1 and value_at(s["sched.maintenance"], 121 * MIN) == 0
    assert value_at(s["bms1.modules"], 80 * MIN) == 7               # the authorised module swap
    assert value_at(s["bms1.modules"], 95 * MIN) == 8
    assert value_at(s["bms1.current_ma"], 40 * MIN) < -80000        # charging
    assert value_at(s["bms1.current_ma"], 150 * MIN) > 30000        # discharging
    assert value_at(s["bms1.soc_pct"], 70 * MIN) > value_at(s["bms1.soc_pct"], 5 * MIN)
    assert value_at(s["bms1.temp_max_dc"], 70 * MIN) > value_at(s["bms1.temp_max_dc"], 5 * MIN)


def test_schedule_windows_of_one_name_overlap_as_a_union():
    body = ('\n[[schedule]]\nname = "shift_change"\nfrom = "01:00"\nto = "02:00"\n'
            '\n[[process]]\nkind = "shift"\ntimes = ["02:00"]\nwindow = "60m"\nvisit_prob = 0.0\n')
    s, _ = series(scenario(body, "4h"))
    sched = s["sched.shift_change"]
    assert value_at(sched, 59 * MIN) == 0 and value_at(sched, 61 * MIN) == 1
    assert value_at(sched, 130 * MIN) == 1          # the [[schedule]] ended at 02:00, the shift window goes on
    assert value_at(sched, 151 * MIN) == 0


def test_a_shift_window_that_ended_before_the_start_is_not_open_at_the_start():
    s, _ = series(scenario('\n[[process]]\nkind = "shift"\ntimes = ["06:00"]\nvisit_prob = 0.0\n', "8h"))
    sched = s["sched.shift_change"]
    assert value_at(sched, 0) == 0 and value_at(sched, 5 * 60 * MIN) == 0    # yesterday's 06:00 window is over
    assert value_at(sched, 6 * 60 * MIN) == 1
    s, _ = series(scenario('\n[[process]]\nkind = "shift"\ntimes = ["23:50"]\nvisit_prob = 0.0\n', "1h"))
    sched = s["sched.shift_change"]
    assert value_at(sched, 0) == 1 and value_at(sched, 6 * MIN) == 0     # 23:35 to 00:05: under way at the start


def test_a_pried_panel_trips_the_tamper_switch_until_shut_or_for_good():
    s, _ = series(scenario(action("panel_open", 'duration = "5m"')))
    assert s["io.tamper"] == [(0, 0), (10 * MIN + 1000, 1), (15 * MIN + 1000, 0)]
    assert peak(s["io.vib_peak_mg"], 10 * MIN, 10 * MIN + 2000) > 700          # the pry bar
    s, _ = series(scenario(action("panel_open")))
    assert s["io.tamper"] == [(0, 0), (10 * MIN + 1000, 1)]                     # "": sprung for good


def test_a_booked_window_opens_its_schedule_on_its_cabinet_only():
    two = '\n[[cabinet]]\nid = "c2"\n'
    scn = scenario(two + '\n[[action]]\nkind = "booked_window"\nat = "+10m"\ncabinet = "c1"\nlength = "20m"\n')
    s, _ = series(scn)
    assert s["sched.maintenance"] == [(10 * MIN, 1), (30 * MIN, 0)]
    other = CabinetWorld(scn, scn.cabinets[1])
    names = other.catalog.names
    assert "sched.maintenance" in names                           # the site's calendar has the name ...
    assert not [v for _t, changes, _c in other.stream() for i, v in changes if names[i] == "sched.maintenance"]


def test_a_weather_front_moves_the_cabinet_and_slowly_the_packs():
    body = action("weather_front", 'delta_c = -12.0\nramp = "1h"\nhold = "4h"\nback = "1h"', "+1h")
    s, _ = series(scenario(body, "8h"))
    base, _ = series(scenario("", "8h"))
    cab = [value_at(s["io.temp_dc"], t) - value_at(base["io.temp_dc"], t) for t in (50 * MIN, 90 * MIN, 3 * 60 * MIN, 7 * 60 * MIN + MIN)]
    assert cab[0] == 0 and -70 < cab[1] < -50 and cab[2] == -120 and cab[3] == 0
    pack = value_at(s["bms1.temp_max_dc"], 5 * 60 * MIN) - value_at(base["bms1.temp_max_dc"], 5 * 60 * MIN)
    assert -120 < pack < -80                                     # the packs follow with their hour's lag
    stays, _ = series(scenario(action("weather_front", 'delta_c = 5.0\nramp = "10m"'), "3h"))
    assert value_at(stays["io.temp_dc"], 3 * 60 * MIN) - value_at(base["io.temp_dc"], 3 * 60 * MIN) == 50


def test_a_camera_event_without_end_stays_until_the_scenario_ends():
    cams = '\n[[process]]\nkind = "cameras"\n'
    s, _ = series(scenario(cams + action("camera_event", 'event = "tamper"\nduration = ""')))
    assert s["cam.gate.tamper"] == [(10 * MIN, 1)] and [v for _t, v in s["zone.tamper"]][-1] == 1
    s, _ = series(scenario(cams + action("camera_event", 'event = "tamper"\nduration = "0s"')))
    assert value_at(s["cam.gate.tamper"], 10 * MIN) == 0        # "0s" is no time at all, not for ever


def test_honest_failures_and_outages_act_as_the_faults_they_mirror():
    truck = '\n[[process]]\nkind = "truck"\nper_hour = 60.0\n'
    s, _ = series(scenario(truck + action("sensor_failure", 'fault = "zero"')))
    assert [v for t, v in s["io.vib_rms_mg"] if t >= 10 * MIN] == [0]
    s, _ = series(scenario(action("sensor_failure", 'signal = "bms2.temp_max_dc"\nfault = "offline"')))
    assert value_at(s["bms2.online"], 10 * MIN) == 0 and value_at(s["bms2.online"], 59 * MIN) == 0
    s, _ = series(scenario(action("grid_outage", 'duration = "20m"')))
    assert value_at(s["io.supply_mv"], 10 * MIN) == 0 and value_at(s["io.online"], 10 * MIN + 200) == 0
    assert value_at(s["io.supply_mv"], 30 * MIN) == 24000 and value_at(s["bms1.online"], 20 * MIN) == 1
    s, _ = series(scenario(action("grid_outage", 'duration = ""')))
    assert value_at(s["io.supply_mv"], 59 * MIN) == 0 and value_at(s["io.online"], 59 * MIN) == 0


def test_overlapping_faults_of_one_signal_combine_the_last_to_end_releases_it():
    """docs/scenarios.md: a feed cut for good stays cut through an honest outage that
    ends; a BMS reboot inside a longer cable cut does not bring the BMS back; a
    stuck reading overridden by a later zero reads stuck again once the zero ends."""
    cut = action("power_cut", 'duration = ""', at="+5m") + action("grid_outage", 'duration = "10m"', at="+10m")
    s, _ = series(scenario(cut))
    assert value_at(s["io.supply_mv"], 21 * MIN) == 0 and value_at(s["io.online"], 59 * MIN) == 0
    assert [v for _t, v in s["io.supply_mv"]].count(0) == 1             # one cut: never back in between
    inner = action("cable_cut", 'device = "bms1"\nduration = "30m"', at="+5m") + action(
        "bms_reboot", 'battery = "bms1"\ndown = "20s"', at="+10m")
    s, _ = series(scenario(inner))
    assert value_at(s["bms1.online"], 10 * MIN + 30000) == 0 and value_at(s["bms1.online"], 36 * MIN) == 1
    assert [v for _t, v in s["bms1.online"]] == [1, 0, 1]
    stacked = action("sensor_fault", 'signal = "io.tilt_mdeg"\nfault = "stuck"\nduration = "40m"', at="+5m") + action(
        "sensor_fault", 'signal = "io.tilt_mdeg"\nfault = "zero"\nduration = "10m"', at="+10m")
    s, _ = series(scenario(stacked))
    assert value_at(s["io.tilt_mdeg"], 15 * MIN) == 0 and value_at(s["io.tilt_mdeg"], 30 * MIN) == 0   # stuck at 0


def test_the_mains_sense_drops_with_a_grid_outage_and_not_with_a_cut_feed():
    """docs/scenarios.md, "Signals of a cabinet": sys.mains_* read upstream of the cabinet's feed."""
    s, _ = series(scenario(action("grid_outage", 'duration = "20m"')))
    assert value_at(s["sys.mains_up"], 0) == 1 and value_at(s["sys.mains_down"], 0) == 0
    assert value_at(s["sys.mains_down"], 10 * MIN) == 1 and value_at(s["sys.mains_up"], 10 * MIN) == 0
    assert value_at(s["io.supply_mv"], 10 * MIN) == 0                          # at the same scan as the feed
    assert value_at(s["sys.mains_up"], 30 * MIN) == 1 and value_at(s["sys.mains_down"], 30 * MIN) == 0
    s, _ = series(scenario(action("grid_outage", 'duration = ""')))
    assert value_at(s["sys.mains_down"], 59 * MIN) == 1
    s, _ = series(scenario(action("power_cut", 'duration = "20m"')))
    assert s["sys.mains_down"] == [(0, 0)] and s["sys.mains_up"] == [(0, 1)]     # the feed cut, the grid up
    assert value_at(s["io.supply_mv"], 10 * MIN) == 0
    unsensed = scenario(action("grid_outage", 'duration = "20m"')).cabinets[0]
    s, _ = series(scenario(action("grid_outage", 'duration = "20m"').replace("[[action]]", "mains_sense = false\n[[action]]", 1)))
    assert unsensed.mains_sense and s["sys.mains_up"] == [] and s["sys.mains_down"] == []   # unknown: never read


def test_one_crane_felt_differently_at_two_cabinets_plays_the_same_cycles():
    """docs/scenarios.md, "Limits": two processes with the same seed and
    timing keys draw the same moments, whatever their sizes and cabinets."""
    body = ('\n[[cabinet]]\nid = "c2"\n[[process]]\nkind = "crane"\ncabinet = "c1"\nseed = 4\nhours = ["00:00", "24:00"]\n'
            'rms_mg = 90\n[[process]]\nkind = "crane"\ncabinet = "c2"\nseed = 4\nhours = ["00:00", "24:00"]\nrms_mg = 20\n')
    scn = scenario(body, "2h")
    near, far = (CabinetWorld(scn, cab).episodes for cab in scn.cabinets)
    assert len(near) > 10 and [(e.start, e.end) for e in near] == [(e.start, e.end) for e in far]
    assert all(abs(a.a / b.a - 4.5) < 1e-9 for a, b in zip(near, far))
