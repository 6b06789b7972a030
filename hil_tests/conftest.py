"""The HIL rig: a gateway flashed by flash.sh into a temporary root and run as
its own process, the simulated cabinet on a bus, Mosquitto, and the console.

Default: the simulated devices are served on a pty and the console is a pty
(everything on this machine).  ``--bench-config FILE`` serves the simulated
devices on a real serial adapter wired to the gateway's adapter and talks to
the console over a second pair (hil_tests/bench.example.toml, docs/flashing.md).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import pytest

from controller.console.auth import PeopleStore, code_at
from controller.gateway.tables import read_payload
from controller.headend.collect import Collector, run as collect_run
from controller.journal.evidence import verified_records
from controller.cli.provision import write_first_epoch
from controller.gateway.sitefiles import EPOCH_KEY_FILE
from drivers.keys import EpochKeys, load_key
from rules.payload import decode_payload
from simulator.broker import Broker
from simulator.bus import SimBus, Simulator, open_raw_port
from simulator.slave import SimDevice
from tests.scheduling import FLASH_GROUP  # noqa: F401 (re-exported to the cases)
from tests.test_console_server import Terminal
from tests.waiting import wait_until  # noqa: F401 (re-exported to the cases)

REPO = Path(__file__).resolve().parent.parent
GATEWAY = "gw-hil"
SITE = "hil-bench"
START_TIMEOUT_S = 20
SERIAL = 4242
# Door forced to siren coil on, as seen on the bus: one scan (50 ms), the io
# poll (100 ms), the relay coil write (19200 baud, 5-40 ms turnarounds), plus a
# process's scheduling noise.
SIREN_BUDGET_S = 0.5


def pytest_addoption(parser):
    parser.addoption("--bench-config", metavar="FILE", default=None,
                     help="run the HIL cases against the real serial ports named in FILE")


class Bench:
    """Ports and broker: the pty defaults, or a bench file's real adapters."""

    def __init__(self, path: str | None, tmp: Path):
        doc = tomllib.loads(Path(path).read_text()) if path else {}
        gw, bench = doc.get("gateway", {}), doc.get("bench", {})
        self.real = bool(path)
        self.baud = gw.get("baud", 19200)   # the simulator's wire: a real bus's rate and turnarounds
        self.gateway_bus = gw.get("bus_port", str(tmp / "sim" / "rs485"))
        self.sim_bus = bench.get("bus_port")
        self.gateway_console = gw.get("console_port", "pty:/run/cabguard/console")
        self.bench_console = bench.get("console_port")
        self.broker = bench.get("broker")
        if path and not all((self.sim_bus, self.bench_console, gw.get("bus_port"), gw.get("console_port"))):
            raise pytest.UsageError("{}: want [gateway] bus_port, console_port and [bench] bus_port, "
                                    "console_port (hil_tests/bench.example.toml)".format(path))


class Rig:
    def __init__(self, tmp: Path, bench: Bench, broker_address: str):
        self.tmp = tmp
        self.root = tmp / "root"
        self.bench = bench
        self.broker = broker_address
        self.keys = tmp / "keys"
        self.site_toml = self.root / "etc/cabguard/site.toml"
        self.cabguard = self.root / "opt/cabguard/venv/bin/cabguard"
        self.state = self.root / "var/lib/cabguard"
        self.journal = self.state / "journal"
        self.console_path = (str(self.root) + bench.gateway_console[4:] if bench.gateway_console.startswith("pty:")
                             else bench.bench_console)
        self.sim: Simulator | None = None
        self.flash_s = 0.0

    def flash(self, *extra: str) -> subprocess.CompletedProcess:
        template = (REPO / "hil_tests/site.toml.in").read_text()
        site = self.tmp / "site.toml"
        site.write_text(template.replace("@BUS@", self.bench.gateway_bus).replace("@BAUD@", str(self.bench.baud))
                        .replace("@CONSOLE@", self.bench.gateway_console).replace("@BROKER@", self.broker))
        self.root.mkdir(exist_ok=True)
        t0 = time.monotonic()
        done = subprocess.run([str(REPO / "flash.sh"), "--config", str(site), "--gateway", GATEWAY, "--site", SITE,
                               "--technician", "ana", "--in-place", "--keys-out", str(self.keys), *extra, str(self.root)],
                              capture_output=True, text=True)
        self.flash_s = time.monotonic() - t0
        return done

    def start_sim(self) -> Simulator:
        devices = [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2), SimDevice("relay", "relay4", 4)]
        self.sim = Simulator([SimBus("rs485", devices, self.bench.baud, serial_port=self.bench.sim_bus)]).start()
        if not self.bench.real:
            self.sim.link(self.tmp / "sim")
        return self.sim

    def reset_cabinet(self) -> None:
        """A closed, bolted cabinet with a known pack, every coil off, no faults."""
        assert self.sim
        io, bms, relay = (self.sim.device(n) for n in ("io", "bms1", "relay"))
        for dev in (io, bms, relay):
            dev.set_fault(None)
        io.set(door_open=0, door_bolt=1, tamper=0, supply_mv=24000)
        bms.set(modules=1, serial=SERIAL, pack_mv=52800, soc_pct=80)
        relay.set(k1=0, k2=0, k3=0, k4=0)

    def wipe_state(self) -> None:
        """A gateway as flashed: no journal, no core state, the keys and epoch 0 of the record key."""
        shutil.rmtree(self.state, ignore_errors=True)
        self.journal.mkdir(parents=True)
        write_first_epoch(self.keys / "record.key", self.state / EPOCH_KEY_FILE)

    def records(self) -> list[dict]:
        return list(verified_records(self.journal, EpochKeys(load_key(self.keys / "record.key"))))

    def rule_ids(self) -> list[str]:
        """The rule ids of the flashed table, in table order (a rule event names its index)."""
        table = self.root / "etc/cabguard/rules.table"
        payload = read_payload(table, load_key(self.root / "etc/cabguard/keys/installer.key"))
        return [rule[0] for rule in decode_payload(payload, str(table))["rules"]]

    def console_status(self) -> str:
        """``status`` over a fresh console session (after a restart)."""
        if not self.bench.real and not os.path.exists(self.console_path):
            return ""
        console = Console(self.console_path, self.bench.baud, self.bench.real)
        try:
            console.sync()
            return console.status()
        finally:
            console.close()

    def technician_code(self) -> str:
        people = PeopleStore(self.root / "etc/cabguard/people.toml")
        return code_at(people.people["ana"].secret, time.time())


class GatewayProcess:
    """The installed gateway, started the way its systemd unit starts it."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.log = rig.tmp / "gateway.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(self.rig.cabguard), "run", "--config", str(self.rig.site_toml)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self) -> None:
        """A power cut: no goodbye, no flush, and /run (a tmpfs) is gone with the console's pty
        link, which would otherwise name a pty that the next program opening one is given."""
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if not self.rig.bench.real and os.path.islink(self.rig.console_path):
            os.unlink(self.rig.console_path)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


class Console(Terminal):
    """The technician's terminal on the gateway's console (pty link or bench adapter)."""

    def __init__(self, path: str, baud: int, real: bool):
        if real:
            self.fd = open_raw_port(path, baud)
            self.seen = b""
        else:
            super().__init__(path)

    def sync(self) -> None:
        """Wake the console and drop everything up to a quiet prompt (a banner prompts too)."""
        self.send(b"\r")
        self.expect(b"> ")
        while select.select([self.fd], [], [], 0.2)[0]:
            self.seen += os.read(self.fd, 4096)
        self.seen = b""

    def command(self, line: str, expect: bytes = b"> ", timeout: float = 5.0) -> str:
        self.send(line.encode() + b"\r")
        return self.expect(expect, timeout).decode(errors="replace")

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        super().close()
        self.fd = -1

    def status(self) -> str:
        """The status block (the console may print mode changes between commands)."""
        self.send(b"status\r")
        text = self.expect(b"\r\nlast ").decode(errors="replace")
        self.expect(b"> ")
        return text[text.rfind("gateway "):]



class Receiver:
    """The head-end: `cabguard collect`'s verifying receiver, in a thread."""

    def __init__(self, rig: Rig, name: str):
        self.collector = Collector(rig.tmp / "{}.db".format(name), [load_key(rig.keys / "record.key")])
        self.done = threading.Event()
        self.thread = threading.Thread(target=collect_run, args=(rig.broker, "cabguard", self.collector),
                                       kwargs={"seconds": 120, "stop_event": self.done,
                                               "client_id": "hil-" + name},
                                       daemon=True)

    def alarms(self) -> int:
        return self.collector.db.execute("SELECT COUNT(*) FROM records WHERE severity >= 2").fetchone()[0]

    def heartbeats(self) -> int:
        return self.collector.db.execute("SELECT COUNT(*) FROM heartbeats").fetchone()[0]

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)


@pytest.fixture(scope="session")
def rig(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("hil")
    bench = Bench(request.config.getoption("--bench-config"), tmp)
    broker = None
    if bench.broker is None:
        broker = Broker().start()
    rig = Rig(tmp, bench, bench.broker or broker.address)
    rig.start_sim()
    try:
        done = rig.flash()
        assert done.returncode == 0, "flash.sh failed:\n" + done.stdout + done.stderr
        yield rig
    finally:
        rig.sim.stop()
        if broker:
            broker.cleanup()


@pytest.fixture
def cabinet(rig, request):
    """A freshly flashed gateway running against a closed cabinet, and its console."""
    rig.reset_cabinet()
    rig.wipe_state()
    receiver = Receiver(rig, request.node.name)
    receiver.thread.start()
    gw = GatewayProcess(rig).start()
    console = None
    try:
        assert wait_until(lambda: rig.bench.real or os.path.exists(rig.console_path), START_TIMEOUT_S), gw.tail()
        console = Console(rig.console_path, rig.bench.baud, rig.bench.real)
        console.sync()
        seen = {"status": ""}

        def online() -> bool:
            seen["status"] = console.status()
            return all("{} online".format(d) in seen["status"] for d in ("io", "bms1", "relay"))
        assert wait_until(online, START_TIMEOUT_S, 0.2), seen["status"] + gw.tail()
        yield gw, console, receiver
    finally:
        if console and not console.closed:
            console.close()
        gw.stop()
        receiver.stop()
