"""``cabguard soak``: the real gateway against the real simulator, for as long as asked.

A quiet but living cabinet (vibration noise, temperature drift, charge and
discharge cycles) is served by ``cabguard sim --commands``; ``cabguard run``
guards it with the shipped rule packs and anomaly model, docs/config.md's
example (simulator/benchsite.py), and a private Mosquitto.  Along the way the
harness restarts the gateway (SIGTERM, and SIGKILL as a power cut) and
injects the non-malicious field faults of docs/runtime.md ("Field faults"):
CRC bursts, a BMS that reboots, a one-poll dropout of the I/O module, a
loose connector, single-sample spikes, a lone vibration-peak glitch, and
NTP slewing and stepping the gateway's wall clock (simulator/wallstep.py).

At the end it reads the journal and prints every record of severity
warning or above.  Disarmed, any alarm fails the soak.  Armed
(``--armed``), an alarm passes only if it is a tamper rule's documented
trigger for a fault the harness injected (``EXPECTED_WHILE_ARMED``); the
harness then acknowledges and re-arms, as a response team would.

Everything here is real time: the soak's figures are what a cabinet shows
over the same minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from controller.core.catalog import Catalog
from controller.core.events import EV_RULE, EVENT_NAMES
from controller.journal.evidence import verified_records
from controller.journal.records import (CATALOG, CATALOG_SPECS, DATA, EVENT_A, EVENT_B, EVENT_C, EVIDENCE, INCIDENT, SEQ,
                                SEVERITY, TYPE, TYPE_NAMES)
from controller.gateway.timeline import describe
from controller.journal.verify import verify_dir
from drivers.keys import EpochKeys, load_key
from simulator.benchsite import SIM_CONFIG, bench_site, local_paths, loopback_uplink
from simulator.broker import Broker
from simulator.errors import SimError
from simulator.wallstep import WallStep

REPO = Path(__file__).resolve().parent.parent
GATEWAY = "soak-01"
SITE_NAME = "port-soak"
SEVERITIES = ("info", "warning", "alarm", "critical")
WARNING, ALARM = 1, 2
START_TIMEOUT_S = 30.0
# The first restarts come past the two-minute mark: the start-up false alarm
# this harness was built for came 120 s after every start.
FIRST_RESTARTS_S = (130.0, 150.0)
RESTART_EVERY_S = 150.0
FAULT_EVERY_S = 20.0
SLEW_S_PER_S = 0.0005        # ntpd's largest slew, 500 ppm, all along
# Rules whose documented trigger a harmless fault can be while armed
# (rules/packs/theft.toml): a device silent for longer than its offline
# hysteresis is indistinguishable from a cut cable.
EXPECTED_WHILE_ARMED = {"bms_silent", "sensor_silent"}


def site_config(d: Path, broker: str) -> str:
    """docs/config.md's example on the simulated bus, with the shipped model, the
    gateway's files in ``d`` and a clock kept by NTP (trusted, so wall times are checked)."""
    return bench_site({"gateway.id": GATEWAY, "gateway.site": SITE_NAME,
                       "core.exit_delay_s": 5,          # armed by command at 15 s, guarding before the first fault
                       "bus.port": str(d / "bus" / "rs485-1"), "gpio.pin_factory": "mock", "console": None,
                       "model.path": str(d / "port.json"), "clock.assume_trusted": True,
                       **local_paths(d), **loopback_uplink(broker)})


@dataclass
class Finding:
    """One journal record of severity warning or above."""
    seq: int
    severity: int
    text: str
    rule: str = ""
    raised: bool = False     # a rule raised (not its clearing, nor the records that follow it)

    @property
    def alarm(self) -> bool:
        return self.raised and self.severity >= ALARM


@dataclass
class Footprint:
    """The gateway's processes (``cabguard run`` and its uplink process) in steady state."""
    pss_kb: int = 0
    rss_kb: list[int] = field(default_factory=list)
    cpu_pct: float = 0.0

    def text(self) -> str:
        return "gateway processes: PSS {:.1f} MB together (RSS {} MB), CPU {:.2f} % of one core".format(
            self.pss_kb / 1024, " + ".join("{:.1f}".format(r / 1024) for r in self.rss_kb), self.cpu_pct)


@dataclass
class Report:
    minutes: float
    armed: bool
    restarts: int = 0
    faults: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    expected: list[Finding] = field(default_factory=list)
    records: int = 0
    footprint: Footprint | None = None
    journal_problems: list[str] = field(default_factory=list)   # what `cabguard verify` found

    @property
    def alarms(self) -> list[Finding]:
        return [f for f in self.findings if f.alarm]

    @property
    def passed(self) -> bool:
        return not self.alarms and not self.journal_problems

    def print(self, out=sys.stdout) -> None:
        print("soak: {:.1f} min {}, {} gateway restarts, {} faults injected, {} records".format(
            self.minutes, "armed" if self.armed else "disarmed", self.restarts, len(self.faults), self.records),
            file=out)
        for name in self.faults:
            print("  fault   " + name, file=out)
        for f in self.expected:
            print("  expected  seq {:>6}  {:<8} {}".format(f.seq, SEVERITIES[f.severity], f.text), file=out)
        for f in self.findings:
            print("  RECORD    seq {:>6}  {:<8} {}".format(f.seq, SEVERITIES[f.severity], f.text), file=out)
        if self.footprint:
            print(self.footprint.text(), file=out)
        print("cabguard verify: {}".format("; ".join(self.journal_problems) or
                                           "every MAC, the chain and the wall times check out"), file=out)
        verdict = "passed" if self.passed else "FAILED: {} alarm(s) on a quiet cabinet, {} journal problem(s)".format(
            len(self.alarms), len(self.journal_problems))
        print("soak {}: {} warning-or-worse record(s), {} alarm(s){}".format(
            verdict, len(self.findings), len(self.alarms),
            ", {} expected tamper alarm(s)".format(len(self.expected)) if self.armed else ""), file=out)


class Cabinet:
    """The simulator process and the quiet life of the cabinet it serves."""

    def __init__(self, workdir: Path, seed: int):
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.proc: subprocess.Popen | None = None
        self.t0 = time.monotonic()
        self.spike: dict[str, dict[str, int]] = {}

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [_cabguard(), "sim", "--config", str(SIM_CONFIG), "--link", str(self.workdir / "bus"),
             "--commands"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, start_new_session=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("serving"):
                return
        raise SimError("cabguard sim stopped before serving: {}".format(self.proc.wait()))

    def send(self, line: str) -> None:
        """One ``cabguard sim --commands`` line; its answer must be ``ok``."""
        assert self.proc and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer.startswith("ok"):
            raise SimError("simulator refused '{}': {}".format(line, answer or "it exited"))

    def live(self) -> None:
        """One second of a quiet cabinet: vibration noise, temperatures that
        drift with the day, a charge / discharge cycle ramped as a charger does."""
        t = time.monotonic() - self.t0
        rms = self.rng.randint(6, 28)
        self.send("set io vib_rms_mg={} vib_peak_mg={} supply_mv={}".format(
            rms, rms * 3 + self.rng.randint(0, 25), 24100 + self.rng.randint(-40, 40)))
        # A 6-minute cycle: rest, charge at up to 18 A, rest, discharge; at
        # most 2 A a second, as a BMS-managed charger ramps.
        phase = (t % 360.0) / 360.0
        level = min(1.0, max(0.0, 1.0 - abs(phase * 4.0 - 1.0) * 1.5)) - \
            min(1.0, max(0.0, 1.0 - abs(phase * 4.0 - 3.0) * 1.5))
        current = int(level * 18000)
        drift = int(4 * ((t / 90.0) % 2.0 - 1.0))            # +-0.4 degrees, slowly
        temps = {"bms1": 245 + drift, "bms2": 262 - drift}
        packs = {"bms1": 52800 + current // 100, "bms2": 409600 + current // 20}
        for dev in ("bms1", "bms2"):
            values = {"current_ma": current if dev == "bms1" else -current // 2,
                      "temp_max_dc": temps[dev], "pack_mv": packs[dev]}
            values.update(self.spike.pop(dev, {}))
            self.send("set {} {}".format(dev, " ".join("{}={}".format(k, v) for k, v in sorted(values.items()))))

    def stop(self) -> None:
        _terminate(self.proc, 10)


class GatewayProc:
    """``cabguard run`` as its systemd unit runs it, on a wall clock that NTP may step (``clock``)."""

    def __init__(self, workdir: Path, clock: WallStep):
        self.workdir = workdir
        self.clock = clock
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "gateway.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([_cabguard(), "run", "--config", str(self.workdir / "site.toml")],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=self.clock.env())

    def restart(self, kill: bool) -> None:
        assert self.proc
        if kill:
            self.proc.send_signal(signal.SIGKILL)   # a power cut: no goodbye
            self.proc.wait(10)
        else:
            self.stop()
        self.start()

    def stop(self) -> None:
        _terminate(self.proc, 20)

    def pids(self) -> list[int]:
        return gateway_pids(self.proc)

    def check_alive(self) -> None:
        if self.proc and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise SimError("cabguard run exited with {}:\n{}".format(self.proc.returncode, tail))


@dataclass
class Fault:
    """A harmless field fault: sim commands at its start, and again at its end."""
    name: str
    begin: tuple[str, ...]
    end: tuple[str, ...]
    seconds: float
    silent_device: str = ""      # a device unreadable long enough to go offline (armed: a silence alarm)
    clock_step_s: float = 0.0    # NTP steps the gateway's wall clock by this much


def field_faults(rng: random.Random, round_no: int = 0) -> list[Fault]:
    """One round of docs/runtime.md's field faults, with this round's random lengths.
    The clock is stepped back in even rounds (a clock that ran fast: wall
    times go back) and forward in odd ones (a slow clock, or an RTC that
    lost time while the network was down)."""
    reboot_s = rng.uniform(5.0, 20.0)
    glitch_mg = rng.randint(5000, 65535)
    step_s = rng.uniform(5.0, 60.0) * (1 if round_no % 2 else -1)
    return [
        Fault("CRC-error burst on the bus (io, 1.5 s)", ("fault io crc",), ("fault io none",), 1.5,
              silent_device="io"),
        Fault("NTP steps the wall clock ({:+.1f} s)".format(step_s), (), (), 0.0, clock_step_s=step_s),
        Fault("BMS bms1 reboots ({:.0f} s silent, same serial)".format(reboot_s),
              ("fault bms1 silence",), ("fault bms1 none",), reboot_s, silent_device="bms1"),
        Fault("one-poll dropout of the I/O module", ("fault io silence",), ("fault io none",), 0.1),
        Fault("loose connector on bms2 (40 % of answers lost, 20 s)",
              ("fault bms2 silence rate=0.4",), ("fault bms2 none",), 20.0, silent_device="bms2"),
        Fault("single-sample spikes (bms1 temperature for one BMS poll, io supply for one I/O poll)",
              ("spike",), (), 0.0),
        Fault("CRC-error burst on the bus (bms2, 3 s)", ("fault bms2 crc",), ("fault bms2 none",), 3.0,
              silent_device="bms2"),
        Fault("lone vibration-peak glitch (io peak register at {} mg for one poll, RMS idle)".format(glitch_mg),
              ("set io vib_peak_mg={}".format(glitch_mg),), ("set io vib_peak_mg=40",), 0.1),
    ]


class Soak:
    """The run: a one-second loop of cabinet life, and an agenda of restarts,
    faults and commands at soak seconds, all drawn up front from the seed."""

    def __init__(self, minutes: float, armed: bool, workdir: Path, seed: int, out=sys.stdout):
        self.duration_s = minutes * 60.0
        self.armed = armed
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.out = out
        self.report = Report(minutes, armed)
        self.broker: Broker | None = None
        self.cabinet = Cabinet(workdir, seed)
        self.clock = WallStep(workdir)
        self.gateway = GatewayProc(workdir, self.clock)
        self.silenced: set[str] = set()          # devices the harness made fall silent
        self.agenda: list[tuple[float, int, Callable[[], None]]] = []
        self.probe: tuple[list[int], float, float] | None = None
        self.t0 = 0.0

    # -- set-up ---------------------------------------------------------------

    def prepare(self) -> None:
        d = self.workdir
        for sub in ("bus", "journal", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.clock.build()
        self.broker = Broker().start()
        (d / "site.toml").write_text(site_config(d, self.broker.address))
        shutil.copy(REPO / "rules/models/port.json", d / "port.json")
        _check(["keys", "gen", "--gateway", GATEWAY, "--out", str(d / "keys")])
        _check(["provision", "epoch-key", str(d / "keys/record.key"), "-o", str(d / "state/record-epoch.key")])
        packs = sorted(str(p) for p in (REPO / "rules/packs").glob("*.toml"))
        _check(["rules", "compile", *packs, "-o", str(d / "rules.table"), "--key", str(d / "keys/installer.key"),
                "--config", str(d / "site.toml")])
        _check(["config", "check", str(d / "site.toml")])

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.agenda.append((when, len(self.agenda), action))

    def plan(self) -> None:
        """Restarts past the two-minute mark, a field fault every FAULT_EVERY_S, the
        arming (``--armed``), and the footprint's last minute."""
        if self.armed:
            self.at(15.0, lambda: self.command("arm"))
        for n, when in enumerate(self.restart_times()):
            self.at(when, lambda kill=(n % 2 == 0): self.restart(kill))
        faults: list[Fault] = []
        rounds = 0
        when = 20.0
        while when < self.duration_s - FAULT_EVERY_S:
            if not faults:
                faults = field_faults(self.rng, rounds)
                rounds += 1
            self.plan_fault(when, faults.pop(0))
            when += FAULT_EVERY_S
        if self.duration_s >= 120.0:
            self.at(self.duration_s - 61.0, self.start_probe)

    def restart_times(self) -> list[float]:
        times = [t for t in FIRST_RESTARTS_S if t < self.duration_s - 10]
        t = FIRST_RESTARTS_S[-1] + RESTART_EVERY_S
        while t < self.duration_s - 70:      # the last minute measures the footprint
            times.append(t)
            t += RESTART_EVERY_S
        return times

    def plan_fault(self, when: float, fault: Fault) -> None:
        self.at(when, lambda: self.begin(fault))
        if fault.end and fault.seconds >= 1.0:      # shorter ones end inside begin()
            self.at(when + fault.seconds, lambda: self.send_all(fault.end))
        if self.armed and fault.silent_device:
            # The response team finds a rebooted BMS: acknowledges, re-arms.
            self.at(when + fault.seconds + 5.0, lambda: (self.command("ack"), self.command("arm")))

    # -- the run --------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> Report:
        self.prepare()
        self.plan()
        self.agenda.sort()
        self.cabinet.start()
        self.t0 = time.monotonic()
        self.gateway.start()
        while self.now() < self.duration_s:
            tick = time.monotonic()
            self.clock.set(self.clock.offset_s + SLEW_S_PER_S)     # NTP disciplining the clock
            self.cabinet.live()
            self.gateway.check_alive()
            while self.agenda and self.agenda[0][0] <= self.now():
                self.agenda.pop(0)[2]()
            _sleep_until(tick + 1.0)
        if self.probe:
            pids, t0, cpu0 = self.probe
            self.report.footprint = footprint(pids, (t0, cpu0))
        time.sleep(2.0)
        self.gateway.stop()
        self.collect()
        return self.report

    def restart(self, kill: bool) -> None:
        self.say("gateway {} at {:.0f} s".format("killed (power cut)" if kill else "restarted", self.now()))
        self.gateway.restart(kill)
        self.report.restarts += 1

    def begin(self, fault: Fault) -> None:
        self.say("fault at {:.0f} s: {}".format(self.now(), fault.name))
        self.report.faults.append("{:>5.0f} s  {}".format(self.now(), fault.name))
        if fault.silent_device:
            self.silenced.add(fault.silent_device)
        if fault.begin == ("spike",):
            self.cabinet.spike = {"bms1": {"temp_max_dc": 245 + self.rng.randint(120, 200)}}   # until next second
            self.cabinet.send("set io supply_mv={}".format(24100 + self.rng.randint(800, 2000)))
            time.sleep(0.1)                                    # one I/O poll
            self.cabinet.send("set io supply_mv=24100")
            return
        if fault.clock_step_s:
            self.clock.set(self.clock.offset_s + fault.clock_step_s)
            return
        self.send_all(fault.begin)
        if fault.seconds < 1.0:
            time.sleep(fault.seconds)
            self.send_all(fault.end)

    def send_all(self, lines: tuple[str, ...]) -> None:
        for line in lines:
            self.cabinet.send(line)

    def start_probe(self) -> None:
        pids = self.gateway.pids()
        self.probe = (pids, time.monotonic(), sum(_proc_cpu_s(p) for p in pids))

    def command(self, name: str) -> None:
        """A signed downlink command, as the head end sends it."""
        assert self.broker
        _check(["cmd", name, "--gateway", GATEWAY, "--site", SITE_NAME, "--key", str(self.workdir / "keys/command.key"),
                "--broker", self.broker.address])

    def say(self, text: str) -> None:
        print("soak: " + text, file=self.out, flush=True)

    # -- the verdict ----------------------------------------------------------

    def collect(self) -> None:
        verified = verify_dir(self.workdir / "journal", load_key(self.workdir / "keys/record.key"))
        self.report.journal_problems = ["{} (seq {})".format(p["message"], p["seq"]) for p in verified.problems]
        rule_names = _rule_names(self.workdir)
        keys = EpochKeys(load_key(self.workdir / "keys/record.key"))
        catalog: Catalog | None = None
        for rec in verified_records(self.workdir / "journal", keys):
            self.report.records += 1
            data = rec.get(DATA) if isinstance(rec.get(DATA), dict) else {}
            if rec.get(TYPE) == CATALOG:
                catalog = Catalog([tuple(spec) for spec in data[CATALOG_SPECS]])
            severity = rec.get(SEVERITY, 0)
            if not isinstance(severity, int) or severity < WARNING:
                continue
            finding = _finding(rec, data, catalog, rule_names)
            if self.armed and finding.rule.split(".")[0] in EXPECTED_WHILE_ARMED and self.explained(finding):
                self.report.expected.append(finding)
            else:
                self.report.findings.append(finding)

    def explained(self, finding: Finding) -> bool:
        """A silence alarm is explained by a silence the harness injected on that device."""
        return finding.rule.partition(".")[2] in self.silenced

    def close(self) -> None:
        self.gateway.stop()
        self.cabinet.stop()
        if self.broker:
            self.broker.cleanup()


def _proc_cpu_s(pid: int) -> float:
    fields = Path("/proc/{}/stat".format(pid)).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_kb(pid: int, name: str) -> int:
    for line in Path("/proc/{}/smaps_rollup".format(pid)).read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def gateway_pids(proc: subprocess.Popen | None) -> list[int]:
    """A running ``cabguard run`` process and its children (the uplink process).
    Every thread's children: /proc lists a child under the thread that forked it,
    and a restarted uplink process is forked by the gateway's uplink-inbox thread."""
    if not proc or proc.poll() is not None:
        return []
    children: list[int] = []
    for task in sorted(Path("/proc/{}/task".format(proc.pid)).glob("*/children")):
        try:
            children += (int(c) for c in task.read_text().split())
        except OSError:     # the thread ended meanwhile
            continue
    return [proc.pid, *children]


def footprint(pids: list[int], since: tuple[float, float] | None = None) -> Footprint | None:
    """PSS together and each RSS of these processes, and their CPU since
    ``since`` = (monotonic time, their CPU seconds then); None if one has gone."""
    try:
        cpu_pct = 0.0
        if since is not None:
            cpu_pct = 100.0 * (sum(_proc_cpu_s(p) for p in pids) - since[1]) / (time.monotonic() - since[0])
        return Footprint(sum(_proc_kb(p, "Pss") for p in pids), [_proc_kb(p, "Rss") for p in pids], cpu_pct)
    except (OSError, ValueError, IndexError):
        return None


def _terminate(proc: subprocess.Popen | None, grace_s: float) -> None:
    """SIGTERM, as systemd stops a service; SIGKILL after ``grace_s``."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _sleep_until(deadline: float) -> None:
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)


def _finding(rec: dict, data: dict, catalog: Catalog | None, rule_names: tuple[str, ...]) -> Finding:
    """A record in the words the gateway's own timeline uses."""
    kind, seq, severity = rec.get(TYPE), rec.get(SEQ, -1), rec.get(SEVERITY, 0)
    if kind in EVENT_NAMES and catalog is not None:
        ev = (kind, data.get(EVENT_A, 0), data.get(EVENT_B, 0), data.get(EVENT_C, 0))
        rule = rule_names[ev[1]] if kind == EV_RULE and 0 <= ev[1] < len(rule_names) else ""
        return Finding(seq, severity, describe(ev, catalog, rule_names), rule, kind == EV_RULE and bool(ev[3]))
    if kind in (EVIDENCE, INCIDENT):
        return Finding(seq, severity, "{} of the alarm at seq {}".format(TYPE_NAMES[kind], data.get(1)))
    return Finding(seq, severity, "{} {}".format(TYPE_NAMES.get(kind, kind), data))


def _rule_names(workdir: Path) -> tuple[str, ...]:
    """The table's rule ids, then the model's rule (docs/anomaly.md)."""
    from controller.core.modelrules import RULE_NAME
    from controller.gateway.tables import read_payload
    from rules.payload import decode_payload

    table = workdir / "rules.table"
    payload = read_payload(table, load_key(workdir / "keys/installer.key"))
    return tuple(rule[0] for rule in decode_payload(payload, str(table))["rules"]) + (RULE_NAME,)


def _cabguard() -> str:
    here = Path(sys.executable).with_name("cabguard")
    return str(here) if here.exists() else "cabguard"


def _check(args: list[str]) -> None:
    done = subprocess.run([_cabguard(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SimError("cabguard {} failed:\n{}{}".format(" ".join(args[:2]), done.stdout, done.stderr))


def run_soak(minutes: float, armed: bool = False, workdir: Path | None = None, seed: int = 1,
             out=sys.stdout) -> Report:
    keep = workdir is not None
    d = Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="cabguard-soak-"))
    soak = Soak(minutes, armed, d, seed, out)
    try:
        return soak.run()
    finally:
        soak.close()
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    report = run_soak(args.minutes, args.armed, Path(args.out) if args.out else None, args.seed)
    report.print()
    return 0 if report.passed else 1
