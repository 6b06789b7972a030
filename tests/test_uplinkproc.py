"""The gateway's uplink in its own process: it survives being killed, it ends with
the gateway, and a stop aimed at the whole process group (as systemd sends it)
still persists the cursor."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from controller.headend.collect import Collector
from controller.journal import records as R
from controller.journal.verify import verify_dir
from controller.link.wire import Topics
from drivers.keys import load_key
from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice
from tests.journaling import flashed_keys
from tests.test_gateway_e2e import gateway  # noqa: F401  (the fixture)
from tests.test_runtime import SITE
from tests.test_uplink import receiver
from tests.waiting import wait_until

CLI = [sys.executable, "-m", "controller.cli.main"]
UPLINK = '\n[uplink]\nbroker = "127.0.0.1:{port}"\nheartbeat_s = 5\n'


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    kids = []
    for task in Path("/proc/{}/task".format(pid)).iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path("/proc/{}/stat".format(pid)).read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_killed_uplink_process_is_started_again_and_nothing_is_lost(gateway, broker):  # noqa: F811
    services, _sim, d, _people = gateway
    gw, uplink = services.gateway, services.uplink
    collector = Collector(d / "rx.db", [load_key(d / "keys" / "record.key")])
    done = threading.Event()
    rx = receiver(broker, collector, seconds=60.0, stop_event=done)
    assert wait_until(lambda: uplink.connected, 10)
    for _ in range(3000):
        gw.journal.append(R.telemetry(gw.context(False)))
    gw.journal.flush()
    first = uplink.process.pid
    os.kill(first, signal.SIGKILL)              # mid-drain
    assert wait_until(lambda: any("uplink process ended (exit code -9)" in line for line in gw.recent), 5)
    assert wait_until(lambda: uplink.process.pid != first and uplink.connected, 15)
    last = gw.journal.durable_seq
    assert wait_until(lambda: uplink.cursor >= last, 30)
    assert wait_until(lambda: collector.stored >= last + 1, 10)
    done.set()
    rx.join()
    report = collector.report()
    assert report["gateways"]["gw-test"]["gaps"] == [] and report["chain_breaks"] == 0, report


def _run_gateway(tmp_path: Path, broker) -> tuple[subprocess.Popen, Simulator]:
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])]).start()
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port=sim.bus("rs485").port) + UPLINK.format(port=broker.port))
    proc = subprocess.Popen(CLI + ["run", "--config", str(site)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, sim


def test_the_uplink_process_ends_with_a_killed_gateway(tmp_path, broker):
    proc, sim = _run_gateway(tmp_path, broker)
    try:
        assert wait_until(lambda: _children(proc.pid), 15)
        child = _children(proc.pid)[0]
        proc.kill()                              # no clean stop at all: the pipe just closes
        proc.wait(5)
        assert wait_until(lambda: not _alive(child), 10)
    finally:
        proc.kill()
        sim.stop()


def _retained(broker, topic: str) -> bytes:
    """The retained message on ``topic``, as a head end subscribing now sees it."""
    got: list[bytes] = []
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topic, 1)
    wait_until(lambda: client.loop(0.05) == 0 and bool(got), 5)
    client.disconnect()
    return got[0] if got else b""


def test_sigterm_to_the_whole_group_stops_cleanly_and_says_offline(tmp_path, broker):
    proc, sim = _run_gateway(tmp_path, broker)
    cursor = tmp_path / "journal" / "cursor"
    try:
        assert wait_until(cursor.exists, 15)     # connected and sending
        child = _children(proc.pid)[0]
        os.killpg(proc.pid, signal.SIGTERM)      # what systemd's KillMode=control-group does
        assert proc.wait(15) == 0, proc.stderr.read()
        assert wait_until(lambda: not _alive(child), 5)
    finally:
        proc.kill()
        sim.stop()
    report = verify_dir(tmp_path / "journal", load_key(tmp_path / "keys" / "record.key"))
    assert report.ok and json.loads(cursor.read_text())["acked"] >= 0
    assert _retained(broker, Topics("cabguard", "bench", "gw-test").state) == b"offline"
