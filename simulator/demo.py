"""``cabguard demo``: a living cabinet through one scripted night.

Everything is real except the world: the simulator's devices answer Modbus
RTU on pseudo-terminals, a gateway runs its scan loop against them with the
default rule packs compiled and signed for the demo site, people log in on
the console pty with TOTP codes, records go through a private Mosquitto to
the reference receiver, and at the end ``cabguard verify`` checks the
journal.  Only the wall clock is compressed: the night from 21:58 to 02:16
passes in about a minute (``--seconds``), while delays and rule durations
run in real seconds.

The night is data (``NIGHT``): what the world does and what people type,
at night-clock times.  This module is the one place that drives the
simulator and the controller together.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from controller.cli.keygen import generate_keys
from controller.cli.provision import write_first_epoch
from controller.gateway.sitefiles import EPOCH_KEY_FILE
from controller.cli.rulescmd import config_catalog
from controller.console.auth import PeopleStore, code_at
from controller.core import modes
from controller.core.catalog import Catalog
from controller.core.outputs import OUT_LOCK, OUT_SIREN
from controller.gateway.loop import Gateway
from controller.gateway.run import build
from controller.gateway.tables import sign, write_table
from controller.headend.collect import Collector, run as collect_run
from controller.journal.verify import verify_dir
from drivers.clock import Clock
from drivers.cose import ALG_AES_MAC_128_128
from drivers.keys import load_key
from rules.compiler import SiteCatalog, compile_files
from rules.language import default_sources
from simulator.benchsite import SIM_CONFIG, bench_site, local_paths, loopback_uplink
from simulator.broker import Broker
from simulator.config import load_config
from simulator.errors import SimError

NIGHT_START = "21:58"
FORCED_AT = "02:10"

# (real second of a 60 s night, night time, what happens, how): "sim DEVICE
# k=v ..." changes the world, "console WHO LINE" is typed on the console
# (WHO logs in first).  Real seconds are spaced so that real-time rules
# (delays, `for`, `within`, polls) see what a real night would show them.
NIGHT = (
    (2, "22:00", "shift change: the night shift checks the cabinet", "sim io door_bolt=0 door_open=1"),
    (3, "22:01", "door closed and bolted", "sim io door_open=0 door_bolt=1"),
    (4, "22:02", "supervisor Ben arms the cabinet from the console", "console ben arm"),
    (12, "23:05", "a straddle crane passes: the cabinet shakes", "sim io vib_rms_mg=310 vib_peak_mg=650"),
    (15, "23:09", "the crane has gone", "sim io vib_rms_mg=12 vib_peak_mg=40"),
    (20, "00:30", "technician Ana arrives and starts a maintenance visit", "console ana maint start 30m"),
    (22, "00:32", "Ana unbolts and opens the door", "sim io door_bolt=0 door_open=1"),
    (26, "00:44", "Ana closes and bolts the door", "sim io door_open=0 door_bolt=1"),
    (28, "00:46", "Ana ends the visit: the cabinet re-arms", "console ana maint stop"),
    (38, "02:10", "the door is forced (the bolt still engaged)", "sim io door_open=1 vib_rms_mg=900 vib_peak_mg=4200"),
    (44, "02:11", "a battery module is pulled out of bms2", "sim bms2 modules=7 pack_mv=358400"),
    (54, "02:15", "the response team acknowledges the alarm", "console ben ack"),
)
NIGHT_END = (60, "02:16")
# Below this the scenes no longer fit the real exit delay (3 s) and BMS poll (1 s).
MIN_SECONDS = 30.0
# The demo's minute shows a few heartbeats; a site's own is the example's (30 s).
DEMO_HEARTBEAT_S = 5


def site_config(out: Path, sim_port: str, broker: str | None, console_link: Path | None,
                heartbeat_s: int | None = DEMO_HEARTBEAT_S) -> str:
    """docs/config.md's example as the demo's cabinet: the night's schedules and
    short delays, UTC (the night clock's), no model, files in ``out``; the uplink's
    heartbeat every ``heartbeat_s`` (None: the example's)."""
    changes: dict[str, object] = {
        "gateway.id": "demo-01", "gateway.site": "demo-port", "gateway.timezone": "UTC",
        "core.exit_delay_s": 3, "core.entry_delay_s": 10, "core.siren_max_s": 60,
        "bus.port": sim_port, "gpio.pin_factory": "mock", "model": None,
        "schedules.shift_change.windows": [{"days": "mon-sun", "from": "21:45", "to": "22:15"}],
        "schedules.maintenance.windows": [{"days": "mon-sun", "from": "00:00", "to": "01:00"}],
        **local_paths(out)}
    if console_link:
        changes.update({"console.port": "pty:{}".format(console_link), "console.people": str(out / "people.toml")})
    else:
        changes["console"] = None
    changes.update(loopback_uplink(broker, heartbeat_s) if broker else {"uplink": None})
    return bench_site(changes)


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def night_offset_s(hhmm: str) -> int:
    """Seconds of night clock from NIGHT_START (the night crosses midnight)."""
    return ((_minutes(hhmm) - _minutes(NIGHT_START)) % 1440) * 60


class NightClock(Clock):
    """Real monotonic time for the scan loop; a trusted wall clock that runs
    through the night by keyframes (real second -> night second), linearly
    in between, so the night takes ``seconds`` while each scene gets real time."""

    def __init__(self, seconds: float, start_wall_s: float):
        super().__init__(assume_trusted=True)
        scale = seconds / NIGHT_END[0]
        self.keys = [(0.0, 0.0)] + [(real * scale, float(night_offset_s(hhmm)))
                                    for real, hhmm, *_ in NIGHT + (NIGHT_END,)]
        self.t0 = time.monotonic()
        self.start_wall_s = start_wall_s

    def real_at(self, hhmm: str) -> float:
        """The monotonic time at which the night clock shows ``hhmm``."""
        night = night_offset_s(hhmm)
        for (r0, n0), (r1, n1) in zip(self.keys, self.keys[1:]):
            if n0 <= night <= n1:
                return self.t0 + r0 + (r1 - r0) * (night - n0) / max(1.0, n1 - n0)
        return self.t0 + self.keys[-1][0]

    def wall_s(self) -> float:
        elapsed = time.monotonic() - self.t0
        for (r0, n0), (r1, n1) in zip(self.keys, self.keys[1:]):
            if elapsed <= r1:
                return self.start_wall_s + n0 + (n1 - n0) * (elapsed - r0) / max(1e-9, r1 - r0)
        return self.start_wall_s + self.keys[-1][1]

    def trusted(self) -> bool:
        return True

    def stepped_ms(self) -> int:
        return 0        # the night runs fast on purpose: never a step

    def night_time(self) -> str:
        return time.strftime("%H:%M", time.gmtime(self.wall_s()))


def _tonight_start() -> float:
    """Today's NIGHT_START, UTC (the demo site's timezone)."""
    today = time.gmtime()
    midnight = time.mktime(time.struct_time((today.tm_year, today.tm_mon, today.tm_mday, 0, 0, 0, 0, 0, 0)))
    midnight -= time.timezone if time.localtime().tm_isdst == 0 else time.altzone
    return midnight + _minutes(NIGHT_START) * 60


class Console:
    """The demo's people at the console pty, typing as picocom would."""

    def __init__(self, link: Path, people: PeopleStore):
        import os

        self.os = os
        self.fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        self.people = people
        self.who = ""
        self.text = b""
        os.write(self.fd, b"\r")
        self._read_until(b"(anyone)> ")  # the banner and the first prompt

    def _read_until(self, marker: bytes, timeout_s: float = 3.0) -> str:
        import select

        deadline = time.monotonic() + timeout_s
        while marker not in self.text and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.05)[0]:
                self.text += self.os.read(self.fd, 4096)
        out, _, self.text = self.text.partition(marker)
        return out.decode("ascii", "replace")

    def _say(self, line: str) -> str:
        """Type a line; the answer is what comes between its echo and the next prompt."""
        self.os.write(self.fd, (line + "\r").encode())
        self._read_until(line.encode() + b"\r\n")
        answer = self._read_until(b")> ")
        return answer.rsplit("\r\n", 1)[0].replace("\r\n", " ").strip()

    def type(self, who: str, line: str) -> str:
        if who != self.who:
            self._say("login {} {}".format(who, code_at(self.people.people[who].secret, time.time())))
            self.who = who
        return self._say(line)

    def close(self) -> None:
        self.os.close(self.fd)


def prepare(out: Path, sim_port: str, broker: str | None, console_link: Path | None,
            heartbeat_s: int | None = DEMO_HEARTBEAT_S) -> Path:
    """Keys, people, the site config and its signed rule table, in ``out``
    (the demo's; the runtime bench uses it too, without console or uplink)."""
    if not (out / "keys" / "record.key").exists():
        generate_keys("demo-01", out / "keys", ALG_AES_MAC_128_128)
    if not (out / "state" / EPOCH_KEY_FILE).exists() and not list((out / "journal").glob("*.seg")):
        (out / "state").mkdir(parents=True, exist_ok=True)
        write_first_epoch(out / "keys" / "record.key", out / "state" / EPOCH_KEY_FILE)
    people = PeopleStore(out / "people.toml")
    for who in ("ben", "ana"):
        if who not in people.people:
            people.enrol(who, "technician")
    site = out / "site.toml"
    site.write_text(site_config(out, sim_port, broker, console_link, heartbeat_s))
    specs, classes = config_catalog(str(site))
    catalog = Catalog(specs)
    compiled = compile_files(default_sources([]), SiteCatalog(catalog.specs(), classes, catalog.digest()))
    write_table(out / "rules.table", sign(compiled.encode(), load_key(out / "keys" / "installer.key")))
    return site


def start_broker(explicit: str | None) -> tuple[str | None, Broker | None]:
    """The broker to use: the one given, or a private Mosquitto if installed, or none."""
    if explicit:
        return explicit, None
    try:
        broker = Broker().start()
    except SimError as e:
        print("cabguard demo: no uplink ({})".format(e), file=sys.stderr)
        return None, None
    return broker.address, broker


class StatusLine:
    """Mode, active alarms, devices online, outputs; and the gateway's events as they come."""

    def __init__(self, gateway: Gateway, clock: NightClock):
        self.gateway = gateway
        self.clock = clock
        self.tty = sys.stdout.isatty()
        self.last = ""
        self.seen = 0

    def text(self) -> str:
        gw = self.gateway
        state = gw.state
        online = sum(gw.image[gw.catalog.index[d + ".online"]] for d in gw.catalog.devices)
        alarms = ", ".join(sorted(gw.active_rules)) or "none"
        return "[{}] mode {:<11} | alarms: {} | devices {}/{} online | siren {} lock {}".format(
            self.clock.night_time(), modes.MODE_NAMES[state.mode].upper(), alarms, online,
            len(gw.catalog.devices), "ON" if state.outputs[OUT_SIREN] else "off",
            "ON" if state.outputs[OUT_LOCK] else "off")

    def say(self, line: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(line, flush=True)
        self.last = ""

    def refresh(self) -> None:
        recent = list(self.gateway.recent)
        for line in recent[self.seen:]:
            self.say("          gateway: " + line.split(" ", 1)[1])
        self.seen = len(recent)
        text = self.text()
        if self.tty:
            sys.stdout.write("\r\033[K" + text)
            sys.stdout.flush()
        elif text[8:] != self.last[8:]:  # without a tty, only changes (not the clock) are news
            print(text, flush=True)
        self.last = text

    def until(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.refresh()
            time.sleep(0.1)


class Demo:
    def __init__(self, out: Path, seconds: float, broker: str | None, console_link: str | None):
        self.out = out
        self.seconds = seconds
        self.console_link = Path(console_link) if console_link else out / "console"
        self.sim = load_config(SIM_CONFIG).start()
        self.broker, self.own_broker = start_broker(broker)
        self.collector: Collector | None = None
        self.stop_rx = threading.Event()
        self.facts: dict[str, float] = {}

    def run(self) -> int:
        site = prepare(self.out, self.sim.bus("rs485-1").port, self.broker, self.console_link)
        self.clock = NightClock(self.seconds, _tonight_start())
        self.services = build(str(site), clock=self.clock)
        gw = self.services.gateway
        loop = threading.Thread(target=gw.run, name="scan-loop", daemon=True)
        loop.start()
        if self.broker:
            self.collector = Collector(self.out / "headend.db", [load_key(self.out / "keys" / "record.key")])
            threading.Thread(target=collect_run, args=(self.broker, "cabguard", self.collector),
                             kwargs={"stop_event": self.stop_rx, "client_id": "cabguard-demo-collect"},
                             daemon=True).start()
        console = Console(self.console_link, PeopleStore(self.out / "people.toml"))
        print("cabguard demo: gateway demo-01 with io, bms1, bms2 and a relay module on a simulated RS-485 "
              "bus;\nthe night from {} to {} in {:.0f} s{}.\n".format(
                  NIGHT_START, NIGHT_END[1], self.seconds, "; uplink to " + self.broker if self.broker else ""))
        try:
            self.play(console, StatusLine(gw, self.clock))
        finally:
            console.close()
            gw.stop_event.set()
            loop.join(5)
            if self.broker:
                time.sleep(1.0)  # the uplink's last acknowledgements
            self.services.stop("demo over")
            self.stop_rx.set()
        return self.summary()

    def play(self, console: Console, status: StatusLine) -> None:
        for _real, hhmm, note, how in NIGHT:
            status.until(self.clock.real_at(hhmm))
            status.say("{}  world:   {}".format(hhmm, note))
            words = how.split()
            if words[0] == "sim":
                values = {k: int(v) for k, v in (w.split("=") for w in words[2:])}
                forced = hhmm == FORCED_AT
                if forced:
                    self.facts["forced_at"] = time.monotonic()
                self.sim.device(words[1]).set(**values)
                if forced:
                    self._time_to_siren()
            else:
                line = " ".join(words[2:])
                status.say("          console: {}> {}  ->  {}".format(words[1], line, console.type(words[1], line)))
        status.until(self.clock.real_at(NIGHT_END[1]))
        if status.tty:
            print()

    def _time_to_siren(self) -> None:
        """From the forced door to the siren output being set, as the demo sees it."""
        gw = self.services.gateway
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not gw.state.outputs[OUT_SIREN]:
            time.sleep(0.001)
        if gw.state.outputs[OUT_SIREN]:
            self.facts["siren_after_ms"] = (time.monotonic() - self.facts["forced_at"]) * 1000

    def summary(self) -> int:
        gw = self.services.gateway
        print("\nIncident summary")
        for line in gw.recent:
            if " raised (" in line:
                print("  " + line)
        if "siren_after_ms" in self.facts:
            print("  forced door to siren output: {:.0f} ms".format(self.facts["siren_after_ms"]))
        lock = self.sim.device("relay").values.get("k1")
        print("  battery output lock (relay.k1 coil): {}".format("ENGAGED" if lock else "off"))
        print("  mode at the end: {}".format(modes.MODE_NAMES[gw.state.mode]))
        report = verify_dir(self.out / "journal", load_key(self.out / "keys" / "record.key"))
        print("\ncabguard verify {}: {} records, {}".format(
            self.out / "journal", report.records,
            "OK - every MAC and the whole chain check out" if report.ok else "{} PROBLEMS".format(len(report.problems))))
        if self.collector is not None:
            rep = self.collector.report()
            print("head end (cabguard collect): {} records verified, {} rejected, {} chain breaks".format(
                rep["stored"], rep["rejected"], rep["chain_breaks"]))
        return 0 if report.ok else 1

    def close(self) -> None:
        self.sim.stop()
        if self.own_broker is not None:
            self.own_broker.cleanup()


def main(args: argparse.Namespace) -> int:
    keep = bool(args.out)
    out = Path(args.out) if keep else Path(tempfile.mkdtemp(prefix="cabguard-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("journal", "state"):
        shutil.rmtree(out / stale, ignore_errors=True)
    for name in ("headend.db", "headend.db-wal", "headend.db-shm"):   # the head end's SQLite runs in WAL mode
        (out / name).unlink(missing_ok=True)
    demo = Demo(out, max(MIN_SECONDS, float(args.seconds)), args.broker, args.console_link)
    try:
        status = demo.run()
    finally:
        demo.close()
    if keep:
        print("\nkept in {0}: journal/, keys/, site.toml, rules.table; replay an incident with\n"
              "  cabguard replay {0}/journal --incident SEQ --key {0}/keys/record.key".format(out))
    else:
        shutil.rmtree(out, ignore_errors=True)
    return status
