"""The gateway for real: simulated devices on ptys, mock GPIO pins, a relay coil, a journal."""

import threading
import time

import pytest

from controller.cli.rulescmd import config_catalog
from controller.core import modes
from controller.core.catalog import Catalog
from controller.core.events import CMD_ARM, CMD_LOCK, CMD_MAINT_START
from controller.gateway.run import build
from controller.gateway.tables import sign, write_table
from controller.journal import records as R
from controller.journal.evidence import verified_records
from controller.journal.verify import verify_dir
from drivers.keys import EpochKeys, load_key
from rules.compiler import SiteCatalog, compile_files
from rules.language import default_sources
from simulator.benchsite import bench_site
from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice
from tests.journaling import flashed_keys
from tests.waiting import wait_until

def _template(text: str) -> str:
    """``text`` as a str.format template with {d} and {port} where it says @D@ and @PORT@."""
    return text.replace("{", "{{").replace("}", "}}").replace("@D@", "{d}").replace("@PORT@", "{port}")


# The tests' gateway: examples/site.toml (simulator/benchsite.py) with its files
# under {d}, its bus at {port}, 50 ms scans, 1 s delays, the simulated io,
# bms1 and relay, and none of the optional sections (tests add theirs).
SITE = _template(bench_site({
    "gateway.id": "gw-test", "gateway.site": "bench", "gateway.timezone": "UTC", "gateway.scan_period_ms": 50,
    "gateway.state_dir": "@D@/state", "core.exit_delay_s": 1, "core.entry_delay_s": 1,
    "bus.name": "rs485", "bus.port": "@PORT@", "device[io].bus": "rs485", "device[bms1].bus": "rs485",
    "device[bms1].poll_ms": 500, "device[bms2]": None, "device[relay].bus": "rs485",
    "gpio.pin_factory": "mock", "rules": None, "model": None, "console": None, "uplink": None, "clock": None,
    "keys.record": "@D@/gateway/record.key",     # never there: flash.sh keeps the root off the gateway
    "keys.headend": None, "journal.dir": "@D@/journal"}))


@pytest.fixture
def cabinet(tmp_path):
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])]).start()
    sim.device("io").set(door_bolt=1)
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port=sim.bus("rs485").port))
    yield sim, site, tmp_path
    sim.stop()


def start(site):
    gw = build(str(site)).gateway
    thread = threading.Thread(target=gw.run, daemon=True)
    thread.start()
    return gw, thread


def stop(gw, thread):
    gw.stop_event.set()
    thread.join(5)
    gw.stop("test over")


def pin(gw, index):
    return gw.bank.outputs[index].device.pin.state


def test_devices_online_entry_delay_alarm_siren_and_a_verified_journal(cabinet):
    sim, site, d = cabinet
    gw, thread = start(site)
    try:
        online = [gw.catalog.index[n + ".online"] for n in ("io", "bms1", "relay")]
        assert wait_until(lambda: all(gw.image[i] for i in online))
        assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(2) == "ok"
        assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
        sim.device("io").set(door_open=1)
        assert wait_until(lambda: gw.state.mode == modes.ENTRY, 2)
        assert wait_until(lambda: gw.state.mode == modes.ALARM, 3)
        assert pin(gw, 0) and pin(gw, 1)
        gw.submit(CMD_LOCK, 0, "downlink", "headend")
        assert wait_until(lambda: sim.device("relay").values.get("k1") == 1, 3)
        pins = [gw.bank.outputs[i].device.pin for i in (0, 1)]
    finally:
        stop(gw, thread)
    assert not pins[0].state and not pins[1].state  # safe state: quiet
    report = verify_dir(d / "journal", load_key(d / "keys" / "record.key"))
    assert report.ok, report


def test_two_commands_of_one_code_in_one_scan_are_judged_each_on_its_own(cabinet):
    """The first arm arms the cabinet; the second, in the same scan, finds it
    arming and is refused.  Outcomes and journal say so of each (they were
    once matched by command code: both journaled refused)."""
    sim, site, d = cabinet
    gw = build(str(site)).gateway
    first = gw.submit(CMD_ARM, 0, "console", "ana")
    second = gw.submit(CMD_ARM, 0, "downlink", "headend")    # both queued before the first scan
    thread = threading.Thread(target=gw.run, daemon=True)
    thread.start()
    try:
        assert first.outcome.result(5) == "ok"
        assert second.outcome.result(5) == "refused: not allowed in mode arming"
        assert gw.state.mode in (modes.ARMING, modes.ARMED)
    finally:
        stop(gw, thread)
    keys = EpochKeys(load_key(d / "keys" / "record.key"))
    commands = [r[R.DATA] for r in verified_records(d / "journal", keys) if r[R.TYPE] == R.COMMAND]
    assert [(c[R.COMMAND_SOURCE], c[R.COMMAND_ACCEPTED], c.get(R.COMMAND_REASON, "")) for c in commands] == [
        ("console", True, ""), ("downlink", False, "not allowed in mode arming")]


def test_alarm_and_lock_survive_a_restart(cabinet):
    sim, site, d = cabinet
    gw, thread = start(site)
    gw.submit(CMD_LOCK, 0, "console", "ana")
    gw.submit(CMD_ARM, 0, "console", "ana")
    assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
    sim.device("io").set(door_open=1)
    assert wait_until(lambda: gw.state.mode == modes.ENTRY, 3)
    # power cut during the entry delay, once the records queued so far are on disk
    gw.stop_event.set()
    thread.join(5)
    assert gw.journal.flush(5)
    gw2, thread2 = start(site)
    try:
        assert gw2.state.mode == modes.ALARM and gw2.state.lock == 1  # crash-and-smash protection
    finally:
        stop(gw2, thread2)
        gw.journal.close()
        for poller in gw.site.pollers:  # the "dead" first run's threads
            poller.stop()
        gw.bank.close()


def test_missing_port_starts_anyway_with_devices_offline(tmp_path):
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port="/dev/ttyUSB9"))
    gw, thread = start(site)
    try:
        time.sleep(0.3)
        assert gw.image[gw.catalog.index["io.online"]] == 0
        assert any("serial port /dev/ttyUSB9 does not exist" in line for line in gw.recent)
    finally:
        stop(gw, thread)


def test_lock_coil_holds_through_shutdown_and_is_rewritten_after_restart(cabinet):
    sim, site, d = cabinet
    gw, thread = start(site)
    gw.submit(CMD_LOCK, 0, "console", "ana")
    assert wait_until(lambda: sim.device("relay").values.get("k1") == 1, 3)
    stop(gw, thread)
    assert sim.device("relay").values.get("k1") == 1   # the lock is not released by a shutdown
    sim.device("relay").set(k1=0)                      # e.g. the module lost power meanwhile
    gw2, thread2 = start(site)
    try:
        assert wait_until(lambda: sim.device("relay").values.get("k1") == 1, 3)
    finally:
        stop(gw2, thread2)


def test_warning_or_worse_events_are_logged_and_the_status_line_shows_the_active_alarm(cabinet):
    sim, site, d = cabinet
    lines: list[str] = []
    gw = build(str(site), log=lines.append).gateway
    thread = threading.Thread(target=gw.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: gw.image[gw.catalog.index["io.online"]])
        assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(2) == "ok"
        assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
        sim.device("io").set(door_open=1)
        assert wait_until(lambda: gw.state.mode == modes.ALARM, 5)
        assert wait_until(lambda: any(line.startswith(("alarm: ", "critical: ")) for line in lines), 2), lines
        assert lines[0].startswith("started: gateway gw-test")
        gw.active_rules.add("door_forced.io")
        gw.last_event = "rule temp_high.bms1 cleared"
        assert gw.status.status_line().endswith("| active: door_forced.io")
    finally:
        stop(gw, thread)


def test_a_root_record_key_on_the_gateway_is_journaled_and_logged(cabinet):
    """Forward security holds only while the gateway has nothing but its current
    epoch key (docs/keys.md): a root record key left at [keys] record is a warning."""
    import shutil
    sim, site, d = cabinet
    (d / "gateway").mkdir()
    shutil.copy(d / "keys" / "record.key", d / "gateway" / "record.key")
    lines: list[str] = []
    gw = build(str(site), log=lines.append).gateway
    thread = threading.Thread(target=gw.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: any("the root record key {}/gateway/record.key is on the gateway".format(d) in line
                                      for line in lines), 5), lines
    finally:
        stop(gw, thread)
    keys = EpochKeys(load_key(d / "keys" / "record.key"))
    health = [r[R.DATA] for r in verified_records(d / "journal", keys) if r[R.TYPE] == R.HEALTH]
    assert any(h[R.HEALTH_CODE] == R.HEALTH_ROOT_KEY for h in health), health


def test_the_slow_facts_reach_the_image_each_time_housekeeping_refreshes_them(cabinet):
    """The loop writes clock trust, journal backlog, disk, week hour and the schedules
    into the image only after the housekeeping thread refreshed them, not every scan:
    each refresh must still reach the image (here the backlog, growing with records
    no uplink takes)."""
    _sim, site, _d = cabinet
    gw, thread = start(site)
    index = gw.catalog.index
    try:
        for _ in range(3):
            backlog = int(gw.journal.health().get("backlog", 0))
            gw.journal.append(R.health(gw.context(False), R.HEALTH_STARTED, "a record", 0))
            assert wait_until(lambda: gw.image[index["sys.journal_backlog"]] > backlog, 5)
        def image_says() -> list[int]:
            return [gw.image[index[n]] for n in ("sys.journal_backlog", "sys.disk_free_pct", "sys.clock_trusted",
                                                  "sys.week_hour")] + [gw.image[index["sched." + n]]
                                                                       for n in gw.site.schedules.names()]
        assert wait_until(lambda: image_says() == [gw.backlog, gw.disk_free_pct, int(gw.trusted), gw.week_hour,
                                                   *gw.sched_values], 5), image_says()
    finally:
        stop(gw, thread)


def test_the_mains_sense_is_read_every_scan_and_unknown_without_one(cabinet):
    """docs/config.md, "Mains sense": a contact to ground on a pulled-up pin."""
    sim, site, d = cabinet
    gw, thread = start(site)
    try:
        assert gw.inputs.contacts == {}                                        # no [mains], no [tamper]
        index = gw.catalog.index
        assert wait_until(lambda: gw.state.scans > 3)
        assert (gw.image[index["sys.mains_up"]], gw.image[index["sys.mains_down"]]) == (0, 0)   # unknown
        assert gw.image[index["sys.tamper"]] == 0                              # gateway_tamper cannot fire
    finally:
        stop(gw, thread)
    site.write_text(site.read_text() + "\n[mains]\ngpio = 23\nactive_high = false\n")
    gw, thread = start(site)
    try:
        up, down = gw.catalog.index["sys.mains_up"], gw.catalog.index["sys.mains_down"]
        contact = gw.inputs.contacts["mains"].pin.device.pin
        assert wait_until(lambda: (gw.image[up], gw.image[down]) == (0, 1))    # pulled up, the contact open
        contact.drive_low()                                                    # the relay closes: mains present
        assert wait_until(lambda: (gw.image[up], gw.image[down]) == (1, 0))
        contact.drive_high()
        assert wait_until(lambda: (gw.image[up], gw.image[down]) == (0, 1))
    finally:
        stop(gw, thread)


def start_with_lid_shut(sim, site, d):
    """The gateway with the default packs, [mains] and [tamper] (a normally-closed
    switch to ground, the defaults), the mains present and its lid shut before the
    first scan (a mock pin idles pulled up: open)."""
    sim.device("io").set(supply_mv=24000)
    sim.device("bms1").set(modules=1, serial=4242, pack_mv=52800, soc_pct=80)
    site.write_text(site.read_text() + '\n[rules]\ntable = "{0}/rules.table"\nkey = "{0}/keys/installer.key"\n'
                    '\n[mains]\ngpio = 23\nactive_high = false\n\n[tamper]\ngpio = 24\n'.format(d))
    specs, classes = config_catalog(str(site))
    catalog = Catalog(specs)
    compiled = compile_files(default_sources([]), SiteCatalog(catalog.specs(), classes, catalog.digest()))
    write_table(d / "rules.table", sign(compiled.encode(), load_key(d / "keys" / "installer.key")))
    gw = build(str(site)).gateway
    gw.inputs.contacts["mains"].pin.device.pin.drive_low()
    lid = gw.inputs.contacts["tamper"].pin.device.pin
    lid.drive_low()
    thread = threading.Thread(target=gw.run, daemon=True)
    thread.start()
    return gw, thread, lid


def test_the_gateway_tamper_switch_is_read_every_scan_and_alarms_when_armed(cabinet):
    """docs/config.md, "Enclosure tamper": the gateway's lid pried open while armed is
    ``gateway_tamper`` (rules/packs/theft.toml), read beside the mains sense."""
    sim, site, d = cabinet
    gw, thread, lid = start_with_lid_shut(sim, site, d)
    index = gw.catalog.index
    try:
        assert wait_until(lambda: gw.image[index["sys.mains_up"]] == 1)      # the mains sense read beside it
        assert gw.image[index["sys.tamper"]] == 0
        assert wait_until(lambda: gw.image[index["io.online"]] and gw.image[index["bms1.online"]])
        assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(2) == "ok"
        assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
        assert not gw.active_rules, gw.active_rules
        lid.drive_high()                                                       # the switch opens
        assert wait_until(lambda: "gateway_tamper" in gw.active_rules, 2), (gw.active_rules, gw.recent)
        assert gw.state.mode == modes.ALARM and gw.image[index["sys.tamper"]] == 1
        lid.drive_low()
        assert wait_until(lambda: gw.image[index["sys.tamper"]] == 0, 2)
    finally:
        stop(gw, thread)


def test_the_gateway_tamper_switch_opened_in_maintenance_is_no_alarm(cabinet):
    sim, site, d = cabinet
    gw, thread, lid = start_with_lid_shut(sim, site, d)
    index = gw.catalog.index
    try:
        assert gw.submit(CMD_MAINT_START, 0, "console", "ana").outcome.result(2) == "ok"
        assert wait_until(lambda: gw.state.mode == modes.MAINTENANCE, 5)
        lid.drive_high()                                                       # the technician opens it
        assert wait_until(lambda: gw.image[index["sys.tamper"]] == 1, 2)
        opened = gw.state.scans
        assert wait_until(lambda: gw.state.scans > opened + 10, 5)             # the rule judged it 10 times over
        assert gw.state.mode == modes.MAINTENANCE and "gateway_tamper" not in gw.active_rules, gw.active_rules
    finally:
        stop(gw, thread)
