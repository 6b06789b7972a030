"""What ``cabguard eval --check`` lists beyond the visits (simulator/checklist.py, docs/scenarios.md
"Errors"), for the ho14 doc defects: each drawn visit's sign-in, which action forces a signal and
whether it is an honest fault, overlapping forces of one signal, changes a fault hides, and a drawn
visit that meets a hand-scripted door."""

from controller.core.events import COMMAND_CODES
from simulator.checklist import scripted
from simulator.sensors import CMD
from simulator.world import CabinetWorld
from tests.scen_helpers import scenario

MIN = 60000
SHIFT = '\n[[process]]\nkind = "shift"\ntimes = ["00:30"]\nvisit_prob = 1.0\nauth_delay = ["{}", "{}"]\n'


def action(kind, extra="", at="+10m"):
    return '\n[[action]]\nkind = "{}"\nat = "{}"\n{}\n'.format(kind, at, extra)


def listing(body, duration="2h"):
    return "\n".join(scripted(scenario(body, duration))) + "\n"


def test_a_drawn_visit_lists_its_sign_in_and_says_when_it_is_later_than_the_entry_delay():
    for lo, hi, late in (("2s", "8s", False), ("40s", "50s", True)):
        scn = scenario(SHIFT.format(lo, hi), "2h")
        world = CabinetWorld(scn, scn.cabinets[0])
        (unbolted, *_rest), = world.visits
        unbolted -= unbolted % 100                           # on its scan
        sign_in, = [t for t, _seq, op, a, _b in world.events if op == CMD and a == COMMAND_CODES["maint_start"]]
        lines = [x for x in scripted(scn) if "signs in" in x]
        lag = (sign_in - unbolted) / 1000
        note = ", later than the entry delay: refused if the cabinet was armed (ALARM)" if late else ""
        assert lines == ["  c1 {} a visit signs in (maint_start) {:g} s after its unbolting{}".format(
            _local(sign_in), lag, note)]
        assert (lag > 30) == late


def _local(ms):
    s = ms // 1000
    return "Mon 2026-03-16T{:02d}:{:02d}:{:02d}+01:00 (+{}h{:02d}m{:02d}s)".format(
        s // 3600, s // 60 % 60, s % 60, s // 3600, s // 60 % 60, s % 60)


def test_a_forced_signal_names_its_action_and_an_honest_failure_says_so():
    out = listing(action("sensor_failure", 'signal = "io.tilt_mdeg"\nduration = "5m"')
                  + action("sensor_fault", 'signal = "io.vib_rms_mg"\nduration = "5m"', at="+30m"))
    assert "(+0h10m00s) io.tilt_mdeg stuck (sensor_failure, honest)\n" in out
    assert "(+0h15m00s) io.tilt_mdeg reads true again (sensor_failure, honest)\n" in out
    assert "(+0h30m00s) io.vib_rms_mg stuck (sensor_fault)\n" in out


def test_a_signal_forced_by_overlapping_cuts_reads_true_only_when_the_last_ends():
    out = listing(action("power_cut") + action("grid_outage", 'duration = "15m"', at="+20m"))
    assert ("(+0h35m00s) io.supply_mv stays forced: the grid_outage ends, the power_cut since "
            "Mon 2026-03-16T00:10:00+01:00 (+0h10m00s) still lasts") in out
    assert "io.supply_mv reads true again" not in out
    both_end = listing(action("power_cut", 'duration = "30m"') + action("grid_outage", 'duration = "15m"', at="+20m"))
    assert "(+0h35m00s) io.supply_mv stays forced" in both_end
    assert "(+0h40m00s) io.supply_mv reads true again (power_cut)\n" in both_end


def test_a_change_a_fault_hides_says_so():
    out = listing(action("sensor_fault", 'signal = "io.door_open"\nduration = "30m"', at="+5m")
                  + action("door_open") + action("door_close", at="+20m")
                  + action("cable_cut", 'device = "io"\nduration = "10m"', at="+40m") + action("door_open", at="+45m"))
    assert "(+0h10m00s) bolt released\n" in out                 # the bolt's contact is not the one stuck
    assert "(+0h10m01s) door opens (hidden: io.door_open forced by a sensor_fault)\n" in out
    assert "(+0h20m00s) door closes (hidden: io.door_open forced by a sensor_fault)\n" in out
    assert "(+0h20m01s) bolt engaged\n" in out
    assert "(+0h45m00s) bolt released (hidden: io offline by a cable_cut)\n" in out
    assert "(+0h50m00s) io.online reads true again (cable_cut)\n" in out


def test_a_drawn_visit_that_meets_a_hand_scripted_door_is_warned_of_a_door_left_open_is_not():
    scn = scenario(SHIFT.format("5s", "10s"), "2h")
    (unbolted, *_rest), = CabinetWorld(scn, scn.cabinets[0]).visits
    around = "+{}s".format(unbolted // 1000 - 60), "+{}s".format(unbolted // 1000 + 60)
    clash = listing(SHIFT.format("5s", "10s") + action("door_open", at=around[0]) + action("door_close", at=around[1]))
    assert "{} warning: a drawn visit (unbolted here".format(_local(unbolted)) in clash
    assert "meets the hand-scripted door open or unbolted from {} to".format(_local(unbolted - 60000)) in clash
    apart = listing(SHIFT.format("5s", "10s") + action("door_open", at="+1h30m") + action("door_close", at="+1h40m"))
    forced = listing(SHIFT.format("5s", "10s") + action("door_forced", at="+1m"))
    assert "warning" not in apart and "warning" not in forced
