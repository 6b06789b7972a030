"""A pulled RS-485 adapter under a running, armed gateway: the devices fall silent, the
tamper rules fire, the port is reopened when it is back; a dead bus thread is restarted."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from controller.cli.rulescmd import config_catalog
from controller.core import modes
from controller.core.catalog import Catalog
from controller.core.events import CMD_ARM
from controller.gateway.run import build
from controller.gateway.tables import sign, write_table
from drivers.keys import load_key
from rules.compiler import SiteCatalog, compile_files
from rules.language import default_sources
from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice
from tests.journaling import flashed_keys
from tests.test_runtime import SITE
from tests.waiting import wait_until

DEVICES = ("io", "bms1", "relay")
RULES = """
[rules]
table = "{d}/rules.table"
key = "{d}/keys/installer.key"
"""
SIM = """
[[bus]]
name = "rs485"
[[bus.device]]
name = "io"
profile = "io-dvt"
address = 1
values = { door_bolt = 1 }
[[bus.device]]
name = "bms1"
profile = "bms16-vendor"
address = 2
values = { modules = 1, serial = 4242, pack_mv = 52800, soc_pct = 80 }
[[bus.device]]
name = "relay"
profile = "relay4"
address = 4
"""


def simulator() -> Simulator:
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])])
    sim.device("io").set(door_bolt=1)
    sim.device("bms1").set(modules=1, serial=4242, pack_mv=52800, soc_pct=80)
    return sim.start()


def gateway(d, port):
    """The site on ``port`` (the simulator's link) with the default rule packs, running."""
    flashed_keys(d)
    site = d / "site.toml"
    site.write_text(SITE.format(d=d, port=port) + RULES.format(d=d))
    specs, classes = config_catalog(str(site))
    catalog = Catalog(specs)
    compiled = compile_files(default_sources([]), SiteCatalog(catalog.specs(), classes, catalog.digest()))
    write_table(d / "rules.table", sign(compiled.encode(), load_key(d / "keys" / "installer.key")))
    services = build(str(site))
    thread = threading.Thread(target=services.gateway.run, daemon=True)
    thread.start()
    return services, thread


def stop(services, thread):
    services.gateway.stop_event.set()
    thread.join(5)
    services.stop("test over")


def online(gw):
    return [gw.image[gw.catalog.index[d + ".online"]] for d in DEVICES]


def arm(gw):
    assert wait_until(lambda: all(online(gw)))
    assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(2) == "ok"
    assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)


def noted(gw, text):
    return any(text in line for line in gw.recent)


def pulled_then_back(gw, pull, plug_in):
    """Pull the port while armed: silence, tamper alarms, a journaled loss; then it is back."""
    arm(gw)
    pull()
    assert wait_until(lambda: not any(online(gw)), 5)
    assert wait_until(lambda: {"sensor_silent.io", "bms_silent.bms1"} <= gw.active_rules, 10), (gw.active_rules, list(gw.recent))
    assert gw.state.mode == modes.ALARM
    assert noted(gw, "port_lost: port ")
    assert noted(gw, "io offline: 2 failed polls; last: port ")   # the journal says why
    assert gw.site.pollers[0].crashed() is None
    plug_in()
    assert wait_until(lambda: all(online(gw)), 10)
    assert wait_until(lambda: noted(gw, "port_reopened: "))


def test_adapter_pulled_while_armed_alarms_and_the_port_is_reopened(tmp_path):
    sim = simulator()
    link = sim.link(tmp_path / "ports")["rs485"]
    services, thread = gateway(tmp_path, link)
    back: list[Simulator] = []

    def plug_in():
        back.append(simulator())
        back[0].link(tmp_path / "ports")

    try:
        pulled_then_back(services.gateway, sim.stop, plug_in)
    finally:
        stop(services, thread)
        for s in back:
            s.stop()


def _serve(conf, ports):
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "sim", "--config", str(conf),
                             "--link", str(ports)], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("serving"):
            return proc
    raise AssertionError("cabguard sim did not start (exit {})".format(proc.wait(5)))


@pytest.mark.timeout(60)
def test_simulator_killed_while_armed_alarms_and_its_restart_is_picked_up(tmp_path):
    conf = tmp_path / "sim.toml"
    conf.write_text(SIM)
    procs = [_serve(conf, tmp_path / "ports")]
    services, thread = gateway(tmp_path, tmp_path / "ports" / "rs485")

    def kill():
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(5)

    try:
        pulled_then_back(services.gateway, kill, lambda: procs.append(_serve(conf, tmp_path / "ports")))
    finally:
        stop(services, thread)
        for p in procs:
            p.kill()
            p.wait(5)


def _crash(master):
    raise SystemExit("a bug escaped the bus thread's handlers")
    yield


def test_a_dead_bus_thread_is_journaled_and_restarted_within_a_scan(tmp_path):
    sim = simulator()
    services, thread = gateway(tmp_path, sim.bus("rs485").port)
    gw = services.gateway
    try:
        assert wait_until(lambda: all(online(gw)))
        gw.site.pollers[0].run_job(_crash)
        assert wait_until(lambda: noted(gw, "the poller thread died (SystemExit: a bug escaped"))
        assert wait_until(lambda: all(online(gw)))
        assert gw.site.pollers[0].crashed() is None
    finally:
        stop(services, thread)
        sim.stop()
