"""The whole gateway in one process: default packs, console on a pty, uplink to Mosquitto."""

import threading
import time

import pytest

from controller.cli.rulescmd import config_catalog
from controller.console.auth import PeopleStore, code_at
from controller.core import modes
from controller.core.catalog import Catalog
from controller.gateway.run import build
from controller.gateway.tables import sign, write_table
from controller.headend.cmdsend import publish
from controller.headend.collect import Collector, run as collect_run
from controller.link.wire import Topics, make_command
from drivers.keys import load_key
from rules.compiler import SiteCatalog, compile_files
from rules.language import default_sources
from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice
from tests.journaling import flashed_keys
from tests.test_console_server import Terminal
from tests.test_runtime import SITE, wait_until

EXTRA = """
[rules]
table = "{d}/rules.table"
key = "{d}/keys/installer.key"

[console]
port = "pty:{d}/console"
people = "{d}/people.toml"

[uplink]
broker = "127.0.0.1:{port}"
heartbeat_s = 5
"""


@pytest.fixture
def gateway(tmp_path, broker):
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])]).start()
    sim.device("io").set(door_bolt=1, supply_mv=24000)
    sim.device("bms1").set(modules=1, serial=4242, pack_mv=52800, soc_pct=80)
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port=sim.bus("rs485").port).replace(
        'record = "{}/gateway/record.key"'.format(tmp_path),
        'record = "{0}/gateway/record.key"\nheadend = "{0}/keys/command.key"'.format(tmp_path))
        + EXTRA.format(d=tmp_path, port=broker.port))
    specs, classes = config_catalog(str(site))
    catalog = Catalog(specs)
    compiled = compile_files(default_sources([]), SiteCatalog(catalog.specs(), classes, catalog.digest()))
    write_table(tmp_path / "rules.table", sign(compiled.encode(), load_key(tmp_path / "keys" / "installer.key")))
    people = PeopleStore(tmp_path / "people.toml")
    people.enrol("ana", "technician")
    services = build(str(site))
    thread = threading.Thread(target=services.gateway.run, daemon=True)
    thread.start()
    yield services, sim, tmp_path, people
    services.gateway.stop_event.set()
    thread.join(5)
    services.stop("test over")
    sim.stop()


def test_forced_door_alarms_at_once_and_reaches_the_head_end(gateway, broker):
    services, sim, d, _people = gateway
    gw = services.gateway
    assert gw.table.evaluator is not None and gw.state.rules is gw.table.evaluator
    collector = Collector(d / "rx.db", [load_key(d / "keys" / "record.key")])
    done = threading.Event()
    rx = threading.Thread(target=collect_run, args=(broker.address, "cabguard", collector),
                          kwargs={"seconds": 20, "stop_event": done})
    rx.start()
    assert wait_until(lambda: gw.image[gw.catalog.index["io.online"]] == 1)
    gw.submit(1, 0, "console", "ana")  # arm
    assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
    sim.device("io").set(door_open=1)      # opened while the bolt is still engaged: forced
    assert wait_until(lambda: gw.state.mode == modes.ALARM, 2)
    assert gw.timer.late_scans < 5
    assert wait_until(lambda: collector.db.execute("SELECT COUNT(*) FROM records WHERE severity >= 2").fetchone()[0] > 0, 10)
    done.set()
    rx.join()
    assert collector.rejected == 0 and collector.chain_breaks == 0


def test_technician_visit_over_the_console_raises_no_alarm(gateway):
    services, sim, d, people = gateway
    gw = services.gateway
    gw.submit(1, 0, "console", "ana")
    assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
    term = Terminal(d / "console")
    try:
        term.send(b"\r")
        term.expect(b"(anyone)> ")
        term.login(people)
        term.send(b"maint start 10m\r")
        term.expect(b"ok\r\n")
        sim.device("io").set(door_bolt=0)
        sim.device("io").set(door_open=1)
        time.sleep(1.5)
        assert gw.state.mode == modes.MAINTENANCE
        term.send(b"status\r")
        term.expect(b"mode      maintenance")
    finally:
        term.close()


def test_forged_downlink_is_refused_and_journaled(gateway, broker):
    services, sim, d, _people = gateway
    gw = services.gateway
    assert wait_until(lambda: services.uplink.connected, 10)
    time.sleep(0.3)
    topic = Topics("cabguard", "bench", "gw-test").commands
    thief = make_command(load_key(d / "keys" / "installer.key"), "gw-test", 5, int(time.time()) + 60, "disarm")
    publish(broker.address, topic, thief)
    good = make_command(load_key(d / "keys" / "command.key"), "gw-test", 6, int(time.time()) + 60, "arm")
    publish(broker.address, topic, good)
    assert wait_until(lambda: gw.state.mode in (modes.ARMING, modes.ARMED), 5)
    assert any("refused (bad-mac)" in line for line in gw.recent)


def test_a_signed_head_end_grant_lets_an_installer_in_without_a_technician(gateway, broker):
    from tests.test_console_gateway import PROMPT

    services, sim, d, _people = gateway
    gw = services.gateway
    ivo = services.path.people.enrol("ivo", "installer")
    assert wait_until(lambda: services.uplink.connected, 10)
    term = Terminal(d / "console")
    try:
        term.send(b"version\r")
        term.expect(b"rules: ")
        term.expect(PROMPT)
        term.send("login ivo {}\r".format(code_at(ivo.secret, time.time() - 30)).encode())
        term.expect(b"login failed\r\ngw-test (anyone)> ")          # no level-2 grant yet
        topic = Topics("cabguard", "bench", "gw-test").commands
        publish(broker.address, topic, make_command(load_key(d / "keys" / "command.key"), "gw-test", 7,
                                                    int(time.time()) + 60, "grant", {"minutes": 5}))
        assert wait_until(lambda: services.path.grant_active(time.time()), 5)
        term.send("login ivo {}\r".format(code_at(ivo.secret, time.time())).encode())
        term.expect(b"Logged in as ivo (installer).\r\ngw-test (installer ivo)> ")
        term.send(b"rules info\r")
        term.expect(b"rules.table: ")
        term.send("rules load {}\r".format(d / "rules.table").encode())
        term.expect(b"verified and loaded")
        (d / "forged.table").write_bytes(b"\xa0")
        term.send("rules load {}\r".format(d / "forged.table").encode())
        term.expect(b"refused: ")
        term.expect(b"the previous table stays active")
        assert gw.table.evaluator is not None
    finally:
        term.close()
