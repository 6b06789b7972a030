"""The running gateway: the imperative shell around ``step()``.

Theory of operation
-------------------
One thread runs the scan loop on absolute deadlines (controller/gateway/scantimer.py).
Each scan, in order:

1. copy each bus poller's newest snapshot into the input image (no I/O),
   and drain the cameras' reports and the GNSS fixes into it
   (controller/gateway/cameras.py, position.py);
2. write the gateway's own signals: its GPIO inputs, read every scan
   (the mains sense and the enclosure tamper switch, ``sys.mains_up`` /
   ``sys.mains_down`` / ``sys.tamper``, controller/gateway/inputs.py),
   ``sys.late_scans`` when it moved, and
   clock trust, journal backlog, disk, ``sys.week_hour`` and the ``sched.*``
   values when the housekeeping thread has refreshed them (once a second),
   not every scan;
3. take the commands queued since the last scan (console, downlink, the
   shell's own fault reports);
4. ``step()`` — the only place where anything is decided (the anomaly
   model, when the site has one, runs inside it in front of the table's
   rules and writes ``anom.score`` / ``anom.top``);
5. drive the outputs at once, then hand every event to the journal
   (O(1), the writer thread does the disk), the changed mode and lock
   ahead of the records that announce them (the same writer saves them
   first, so the state file is never behind the journal);
6. ping the systemd watchdog.

Everything slow lives beside the loop and talks to it through queues: one
thread per bus, the journal writer, the console, the uplink, and a
housekeeping thread that refreshes the cached health values (clock trust,
disk, backlog) once a second.  The loop never blocks on a
disk, a bus or a network.
"""

from __future__ import annotations

import collections
import functools
import json
import queue
import re
import shutil
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable

from controller import __version__
from controller.core import ticks
from controller.core.events import (
    ALARM, CMD_FAULT, COMMAND_NAMES, CRITICAL, EV_DURESS, EV_REFUSED, EV_RULE, INFO, SEVERITY_NAMES, WARNING,
)
from controller.core.modelrules import ModelRules
from controller.core.modes import MODE_NAMES
from controller.core.outputs import safe_state
from controller.core.step import CoreState, step
from controller.errors import CabguardError
from controller.gateway.actuators import OutputBank, build_bank
from controller.gateway.cameras import CameraFeed
from controller.gateway.lanlink import LanLink
from controller.gateway.inputs import GatewayInputs
from controller.gateway.position import DeviceFixes, PositionError, PositionFilter, load_survey, save_survey
from controller.gateway.health import HealthReporter
from controller.gateway.scantimer import ScanTimer
from controller.gateway.settings import GatewaySettings
from controller.gateway.site import Site
from controller.gateway.sitefiles import EPOCH_KEY_FILE
from controller.gateway.statefile import StateFile
from controller.gateway.status import StatusView
from controller.gateway.tables import TableSlot
from controller.gateway.timeline import describe
from controller.gateway.webhook import Webhook
from controller.journal import records as R
from controller.link.opcuaproc import OpcuaProcess
from controller.journal.evidence import EvidenceRing, evidence_record, incident_record
from controller.journal.journal import Journal
from drivers.clock import Clock
from drivers.errors import DriverError, KeyFileError
from drivers.keys import load_key
from drivers.gnss import NmeaReader
from drivers.modbus import events as bus
from drivers.sdnotify import Notifier

FAULT_OUTPUT_READBACK = 1
FAULT_OUTPUT_WRITE = 2
FAULT_NO_TABLE = 3
HOUSEKEEPING_S = 1.0
PORT_RETRY_S = 5.0
SWITCH_INTERVAL_S = 0.0005
EVIDENCE_BEFORE_MS = 10_000   # an incident's evidence: the image this long before it ...
EVIDENCE_AFTER_MS = 10_000    # ... and this long after
POSITION_FILE = "position.json"   # the surveyed position (`pos survey`)
# `password = "..."`, `broker_secret = '...'`, `token = ...`: the value goes, the key stays.
_SECRET = re.compile(r"""^(\s*[A-Za-z0-9_\-]*(?:password|secret|token)[A-Za-z0-9_\-]*\s*=\s*).*$""", re.IGNORECASE)


def hide_secrets(text: str) -> str:
    """A config's text with the value of every password, secret or token key replaced."""
    return "\n".join(_SECRET.sub(r'\1"(hidden)"', line) for line in text.splitlines())


class CommandTicket:
    """A core command on its way into a scan, and its outcome."""

    def __init__(self, code: int, arg: int, source: str, actor: str):
        self.code, self.arg, self.source, self.actor = code, arg, source, actor
        self.outcome: Future[str] = Future()


class Gateway:
    def __init__(self, site: Site, *, clock: Clock | None = None, notifier: Notifier | None = None,
                 on_scan: Callable[["Gateway"], None] | None = None,
                 log: Callable[[str], None] = lambda line: None):
        settings = self.settings = site.settings
        self.site = site
        self.gateway_id = settings.gateway_id
        self.state_dir = settings.state_dir
        self.clock = clock or Clock(settings.clock_assume_trusted)
        self.notifier = notifier or Notifier()
        self.catalog = site.catalog
        self.image = self.catalog.new_image()
        # The anomaly model runs in front of the table's rules (controller/core/modelrules.py).
        self.model_rules = (ModelRules(site.model, self.catalog, visit_ms=site.core_config.maint_max_ms)
                            if site.model is not None else None)
        self.state = CoreState(self.catalog, site.core_config, self.model_rules)
        self.table: TableSlot | None = None
        self.active_rules: set[str] = set()   # rules raised and not cleared, by id
        self.evidence = EvidenceRing(self.state, EVIDENCE_BEFORE_MS, EVIDENCE_AFTER_MS)
        self.on_scan = on_scan
        self.log = log      # start-up, health and warning-or-worse events, one line each (cabguard run: stderr)
        self.cameras = CameraFeed(self.catalog, [c.spec for c in settings.cameras],
                                  lambda: self.clock.monotonic_ns() // 1_000_000)
        self.refused_inputs: list[str] = []     # files refused before the journal opened: recorded at start
        self.lan = self._lan_link(settings)
        self.position: PositionFilter | None = None
        self.gnss: NmeaReader | None = None              # a receiver on a serial port ...
        self.gnss_device: DeviceFixes | None = None      # ... or on the Modbus bus
        if settings.gnss is not None:
            self.position = PositionFilter(self.catalog, settings.gnss.track, self._surveyed())
            if settings.gnss.device:
                self.gnss_device = DeviceFixes(self.catalog, settings.gnss.device)
            else:
                self.gnss = NmeaReader(settings.gnss.port, settings.gnss.baud,
                                       lambda: self.clock.monotonic_ns() // 1_000_000)
        self.webhook: Webhook | None = None
        self.opcua: OpcuaProcess | None = None     # started by run.build with [opcua]
        self.inputs = GatewayInputs(settings, self.catalog)
        self.bank: OutputBank = build_bank(settings.outputs, settings.pin_factory, site.pollers_by_device, self.lan)
        self.timer = ScanTimer(settings.scan_period_ms, self.clock.monotonic_ns)
        self.tickets: queue.SimpleQueue[CommandTicket] = queue.SimpleQueue()
        self.tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.recent: collections.deque[str] = collections.deque(maxlen=200)
        self.stop_event = threading.Event()
        self.started_pollers: set[int] = set()
        self.missing_ports: set[int] = set()     # buses whose missing port is reported (once; retried quietly)
        self.trusted = False
        self.disk_free_pct = 100
        self.backlog = 0
        self.sched_values: list[int] = []
        self.week_hour = -1
        self._sched_idx = [self.catalog.index["sched." + n] for n in site.schedules.names()]
        self.last_event = ""
        self.persisted: tuple | None = None
        self.last_late = 0
        self.lateness_ns: collections.deque[int] = collections.deque(maxlen=100000)
        index = self.catalog.index
        self._late_idx = index["sys.late_scans"]
        self._slow_idx = [index[n] for n in ("sys.clock_trusted", "sys.journal_backlog", "sys.disk_free_pct",
                                             "sys.week_hour")] + self._sched_idx
        # The slow facts' generation: the housekeeping thread moves it on after each refresh,
        # and the loop writes them into the image only when it moved (not every scan).
        self.slow_gen = 0
        self._slow_seen = -1
        self._written_late = -1
        self._poll_idx = [(p, p.indices(self.catalog)) for p in site.pollers]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.statefile = StateFile(self.state_dir / "core-state.json")
        self.journal = Journal.open(settings.journal_dir, self.gateway_id, self.state_dir / EPOCH_KEY_FILE,
                                    provisioning=self._provisioning_key(settings.record_key),
                                    budget_bytes=settings.journal_budget_bytes)
        self.health = HealthReporter(self.journal, lambda: self.context(False), self.note, log)
        self.status = StatusView(self)
        self.housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)

    def _surveyed(self) -> tuple[float, float] | None:
        """The surveyed position kept in the state folder; an unreadable one is a health record."""
        try:
            return load_survey(self.state_dir / POSITION_FILE)
        except PositionError as e:
            self.refused_inputs.append(str(e))
            return None

    def survey_position(self) -> str:
        """``pos survey`` (console): the mean of the last minute's good fixes becomes the
        surveyed position, kept in the state folder.  Runs in the loop thread."""
        if self.position is None:
            raise PositionError("no [gnss] receiver in the site config")
        done: Future[tuple] = Future()

        def survey() -> None:
            try:
                done.set_result(self.position.survey(self.clock.monotonic_ns() // 1_000_000))
            except PositionError as e:
                done.set_exception(e)
        self.run_in_loop(survey)
        try:
            lat, lon, fixes, spread = done.result(5)
        except FutureTimeout:
            raise PositionError("the scan loop did not take the survey within 5 s") from None
        save_survey(self.state_dir / POSITION_FILE, lat, lon, fixes, spread)
        return "surveyed at {:.7f}, {:.7f} from {} fixes (spread {:.1f} m)".format(lat, lon, fixes, spread)

    def _lan_link(self, settings: GatewaySettings) -> LanLink | None:
        """The LAN broker's link, if the config has one (camera events in, MQTT outputs out)."""
        if settings.lan is None:
            return None
        topics = ["{}/+".format(c.spec.topic) for c in settings.cameras if c.spec.topic]
        return LanLink(settings.lan, topics, self.cameras.on_mqtt,
                       lambda text: self.health.record(R.HEALTH_LAN, text, WARNING, source="lan"))

    @staticmethod
    def _provisioning_key(path: Path):
        """The record key from provisioning, needed only to start a new journal."""
        return load_key(path) if path.exists() else None

    # ---- context for records -------------------------------------------------

    def now_tick(self) -> int:
        return ticks.wrap(self.clock.monotonic_ns() // 1_000_000)

    def context(self, with_image: bool = True) -> R.Context:
        mono_ms = self.clock.monotonic_ns() // 1_000_000
        return R.Context(int(self.clock.wall_s() * 1000), self.trusted, mono_ms,
                         self.image if with_image else None)

    def note(self, text: str) -> None:
        self.last_event = text
        self.recent.append("{} {}".format(time.strftime("%H:%M:%S", time.localtime(self.clock.wall_s())), text))

    # ---- commands from the console and the downlink ------------------------------

    def submit(self, code: int, arg: int, source: str, actor: str) -> CommandTicket:
        """Queue a core command for the next scan; ``ticket.outcome`` says what became of it."""
        ticket = CommandTicket(code, arg, source, actor)
        self.tickets.put(ticket)
        return ticket

    def run_in_loop(self, task: Callable[[], None]) -> None:
        """Run ``task`` in the loop thread between two scans (e.g. swap a rule table)."""
        self.tasks.put(task)

    # ---- start, loop, stop ---------------------------------------------------

    def start(self) -> None:
        self.trusted = self.clock.trusted()
        self._refresh_schedules()
        self._start_pollers()
        ctx = self.context(False)
        saved = self.statefile.load(ctx)
        if saved is not None:
            self.state.resume_after_restart(saved[0], ticks.wrap(ctx.mono_ms), saved[1])
        self.persisted = self.state.persisted()
        self.bank.apply(self.state.outputs if saved is not None else safe_state(self.state.lock))
        self._journal_catalog()
        if self.lan is not None:
            self.lan.start()
        if self.gnss is not None:
            self.gnss.start()
        for why in self.refused_inputs:
            self.health.record(R.HEALTH_INPUT_REFUSED, why, ALARM)
        hook = self.settings.webhook
        if hook is not None:
            try:
                self.webhook = Webhook(hook.host, hook.port, hook.secret, self.cameras).start()
            except OSError as e:     # the cameras' webhooks go unheard: their cameras go offline
                self.health.record(R.HEALTH_LAN, "webhook {}: cannot listen: {}".format(hook.listen, e.strerror), ALARM)
        ctx = self.context(False)
        self.journal.append(R.health(ctx, R.HEALTH_STARTED, "cabguard {} config {} mode {}".format(
            __version__, self.settings.config_path, MODE_NAMES[self.state.mode]), INFO))
        self.note("started in mode {}".format(MODE_NAMES[self.state.mode]))
        if self.settings.record_key.exists():
            self.health.record(R.HEALTH_ROOT_KEY, "the root record key {} is on the gateway: whoever takes the "
                               "gateway can rewrite its whole journal with it; the head end keeps it, remove it "
                               "here (flash.sh installs only the epoch key, docs/keys.md)".format(
                                   self.settings.record_key), WARNING)
        self.housekeeper.start()

    def _start_pollers(self) -> None:
        """Start every bus whose port opens; a missing port leaves its devices offline."""
        for i, poller in enumerate(self.site.pollers):
            if i in self.started_pollers:
                continue
            try:
                poller.start()
                self.started_pollers.add(i)
            except DriverError as e:
                if i not in self.missing_ports:      # report once, keep retrying quietly
                    self.missing_ports.add(i)
                    self.health.record(R.HEALTH_BUS, str(e), ALARM)

    def run(self) -> None:
        # A thread waiting for the GIL waits up to the switch interval; 5 ms by
        # default would show as scan jitter whenever the journal writer is busy.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        anchor_ns = self.timer.start()
        for poller in self.site.pollers:
            poller.align(anchor_ns / 1e9, self.timer.period_ns / 1e9)
        self.notifier.ready("guarding: mode {}".format(MODE_NAMES[self.state.mode]))
        watchdog_every = self.notifier.watchdog_interval_s
        next_ping = time.monotonic()
        while not self.stop_event.is_set():
            lateness = self.timer.wait()
            self.lateness_ns.append(lateness)
            self.scan()
            if watchdog_every and time.monotonic() >= next_ping:
                self.notifier.watchdog()
                next_ping = time.monotonic() + watchdog_every

    def scan(self) -> None:
        """One scan: inputs, step(), outputs, records."""
        now_ns = self.clock.monotonic_ns()
        now = ticks.wrap(now_ns // 1_000_000)
        image = self.image
        for poller, indices in self._poll_idx:
            poller.copy_into(image, indices)
        self.cameras.fill(image, now_ns // 1_000_000)
        if self.position is not None:
            now_ms = now_ns // 1_000_000
            for fix in self.gnss.drain() if self.gnss is not None else self.gnss_device.take(image, now_ms):
                self.position.feed(fix)
            self.position.fill(image, now_ms)
        if self.timer.late_scans != self._written_late:
            self._written_late = self.timer.late_scans
            image[self._late_idx] = self._written_late & 0x7FFFFFFF
        self.inputs.fill(image)
        if self.slow_gen != self._slow_seen:
            self._write_slow(image)
        while not self.tasks.empty():
            self.tasks.get_nowait()()
        tickets = []
        while not self.tickets.empty():
            tickets.append(self.tickets.get_nowait())
        faults = self._bus_faults()
        commands = [(t.code, t.arg) for t in tickets] + faults if tickets else faults
        outputs, events = step(self.state, (image, commands), now)
        self.bank.apply(outputs)
        if events or tickets:
            incident = self._record(events, tickets)
            if incident is not None:
                self.evidence.incident(incident[0], incident[1], now)
                self._bookmark(incident[0], incident[1])
        for window in self.evidence.scan(now, image, commands):
            ctx = self.context(False)
            evidence_seq = self.journal.append(evidence_record(ctx, window))
            self.journal.append(incident_record(ctx, window, evidence_seq))
        if self.timer.late_scans != self.last_late:
            self.last_late = self.timer.late_scans
            self.health.record(R.HEALTH_LATE_SCANS, "{} late scans so far (last {:.1f} ms late)".format(
                self.last_late, self.timer.last_lateness_ns / 1e6))
        if self.opcua is not None:
            self.opcua.offer(image, MODE_NAMES[self.state.mode], list(self.active_rules))
        if self.on_scan:
            self.on_scan(self)

    def _write_slow(self, image: list[int]) -> None:
        """The housekeeping thread's facts and the schedules into the image (after it refreshed them)."""
        self._slow_seen = self.slow_gen
        values = [int(self.trusted), min(self.backlog, 0x7FFFFFFF), self.disk_free_pct, self.week_hour]
        for i, value in zip(self._slow_idx, values + self.sched_values):
            image[i] = value

    def _bookmark(self, seq: int, severity: int) -> None:
        """Each camera's clip around the incident raised by record ``seq``: a
        signed ``video_bookmark`` record, and a protect request to the NVR
        where the camera has a ``protect_topic`` (docs/journal.md)."""
        ctx = self.context(False)
        for cam in self.settings.cameras:
            name = cam.spec.name
            start, end = ctx.wall_ms - cam.clip_before_ms, ctx.wall_ms + cam.clip_after_ms
            protect = bool(cam.protect_topic and self.lan is not None)
            if protect:
                self.lan.post(cam.protect_topic, json.dumps({
                    "gateway": self.gateway_id, "camera": name, "start_ms": start, "end_ms": end,
                    "incident_seq": seq}).encode())
            self.health.urgent(self.journal.append(R.video_bookmark(ctx, name, start, end, seq, severity, protect)))

    def _bus_faults(self) -> list[tuple[int, int]]:
        """Bus events become health records; failed output writes become core faults."""
        faults = []
        for poller in self.site.pollers:
            death = poller.crashed()
            if death is not None:  # within one scan: its devices are offline, the bus polled again
                poller.restart()
                # An alarm, but one that repeats with every scan if the thread keeps
                # dying: bus news, so a crash loop becomes a flood record.
                self.health.record(R.HEALTH_BUS, "bus {}: the poller thread died ({}); restarted".format(
                    poller.port, death), ALARM, source="bus:{}:thread".format(poller.port))
            for bev in poller.events():
                if bev.kind in (bus.WRITE_MISMATCH, bus.WRITE_FAILED):
                    code = FAULT_OUTPUT_READBACK if bev.kind == bus.WRITE_MISMATCH else FAULT_OUTPUT_WRITE
                    faults.append((CMD_FAULT, code))
                # A pulled adapter is news every time (the poller's backoff bounds it), and an
                # alarm, as a port missing at start is; the rest goes through the device's
                # flood control, per kind.  An offline record says why (timeouts, CRC,
                # exception, port gone).
                if bev.kind in bus.PORT_KINDS:   # the poller backs off, so these cannot flood
                    self.health.record(R.HEALTH_BUS, "{} {}: {}".format(bev.device, bev.kind, bev.detail),
                                        ALARM if bev.kind == bus.PORT_LOST else WARNING)
                elif bev.kind not in (bus.ONLINE, bus.WRITE_OK):
                    self.health.record(R.HEALTH_BUS, "{} {}: {}".format(bev.device, bev.kind, bev.detail),
                                        source="bus:{}:{}".format(bev.device, bev.kind))
        return faults

    def _record(self, events, tickets: list[CommandTicket]) -> tuple[int, int] | None:
        """Journal this scan's commands and events; returns the first alarm's (seq, severity)."""
        ctx = self.context()
        incident = None
        persisted = self.state.persisted()
        if persisted != self.persisted:
            # Queued ahead of this scan's records: the journal writer saves the
            # new mode and lock before it writes the records that announce them.
            self.persisted = persisted
            self.journal.persist(functools.partial(self.statefile.save, persisted, ctx))
        # The tickets are the scan's first commands, in order: a refusal's
        # index is its ticket's, and it carries the mode that refused it.
        refused = {e[3]: e[2] for e in events if e[0] == EV_REFUSED}
        for index, t in enumerate(tickets):
            ok = index not in refused
            reason = "" if ok else "not allowed in mode " + MODE_NAMES[refused[index]]
            name = COMMAND_NAMES.get(t.code, str(t.code))
            self.health.journal_from(t.source, R.command(ctx, t.source, name, t.arg, ok, reason), protected=ok)
            t.outcome.set_result("ok" if ok else "refused: " + reason)
        for ev in events:
            if ev[0] == EV_REFUSED:
                continue  # journaled above as a refused command
            if ev[0] == EV_RULE:
                self._track_rule(ev)
            record = R.from_event(ev, ctx)
            seq = self.journal.append(record)
            severity = record[R.SEVERITY]
            if severity >= ALARM:
                incident = incident or (seq, severity)
                self.health.urgent(seq)
            if ev[0] != EV_DURESS:  # silent: never on the console's screen (events, status) nor the log
                text = describe(ev, self.catalog, self.rule_names())
                self.note(text)
                if severity >= WARNING:
                    self.log("{}: {} (seq {})".format(SEVERITY_NAMES[severity], text, seq))
        return incident

    def _track_rule(self, ev: tuple[int, int, int, int]) -> None:
        names = self.rule_names()
        name = names[ev[1]] if ev[1] < len(names) else "#{}".format(ev[1])
        if ev[3] and ev[2] >= ALARM:
            self.active_rules.add(name)
        else:
            self.active_rules.discard(name)

    def rule_names(self) -> tuple[str, ...]:
        """Rule names by the index events carry (the model's rule after the table's)."""
        if self.model_rules is not None:
            return self.model_rules.rule_names()
        rules = self.state.rules
        return tuple(rules.table.ids) if rules is not None else ()

    # ---- the rule table ------------------------------------------------------

    def use_table(self, key_path: str, table_path: str) -> None:
        """At start: load the site's table; without a good one the gateway says so loudly.

        The core still guards with its entry delay, and the FAULT it raises
        is journaled and uplinked as critical until a good table is loaded.
        So is an installer key that cannot be read: no table verifies without it."""
        try:
            key = load_key(key_path)
        except KeyFileError as e:
            self._no_table(str(e))
            return
        self.table = TableSlot(key, self.catalog)
        loaded = self.table.load(table_path)
        self.table.on_change = lambda ev: self.run_in_loop(lambda: self._use_evaluator(ev))
        if loaded:
            self.state.rules = self._with_model(self.table.evaluator)
            self.note("rule table {} loaded: {} rules".format(table_path, len(self.rule_names())))
            return
        self._no_table(self.table.error)

    def _no_table(self, why: str) -> None:
        self.health.record(R.HEALTH_TABLE_REFUSED, why, CRITICAL)
        self.submit(CMD_FAULT, FAULT_NO_TABLE, "gateway", "start")

    def _journal_catalog(self) -> None:
        """What an incident replay needs: the catalog, core settings, the running table and the model."""
        payload = self.table.payload if self.table is not None and self.table.data is not None else None
        model = self.site.model.as_doc() if self.site.model is not None else None
        self.journal.append(R.catalog(self.context(False), self.catalog.specs(), self.state.config.as_dict(),
                                      self.site.entry_zones, self.catalog.digest(), payload, model))

    def _use_evaluator(self, evaluator) -> None:
        """In the loop thread, between scans: a new table takes over."""
        self.state.rules = self._with_model(evaluator)
        self._journal_catalog()

    def _with_model(self, evaluator):
        """The evaluator step() runs: the table's, behind the anomaly model if there is one."""
        if self.model_rules is None:
            return evaluator
        self.model_rules.rules = evaluator
        return self.model_rules

    def load_rules(self, path: str) -> str:
        """A new table from the console or the downlink; a refused one leaves the old active."""
        if self.table is None:
            raise CabguardError("this site has no [rules] section, so no installer key to verify tables")
        if self.table.load(path):
            return "rule table {} verified and loaded ({} rules)".format(path, self.table.evaluator.table.size)
        self.health.record(R.HEALTH_TABLE_REFUSED, self.table.error, ALARM)
        return "refused: {}; the previous table stays active".format(self.table.error)

    def config_text(self) -> str:
        """The running config, secrets left out (key files are named, never read)."""
        return hide_secrets(Path(self.settings.config_path).read_text(encoding="utf-8"))

    def _refresh_schedules(self) -> None:
        wall = self.clock.wall_s()
        values = self.site.schedules.values(wall, self.trusted)
        self.sched_values = [values["sched." + n] for n in self.site.schedules.names()]
        self.week_hour = self.site.schedules.week_hour(wall, self.trusted)

    def _housekeeping(self) -> None:
        """Slow facts, cached for the loop: clock trust, disk, backlog, ports."""
        next_ports = time.monotonic() + PORT_RETRY_S
        while not self.stop_event.wait(HOUSEKEEPING_S):
            self.trusted = self.clock.trusted()
            stepped = self.clock.stepped_ms()
            if stepped:
                self.health.record(R.HEALTH_CLOCK_STEP, "the wall clock was stepped {} by {:.1f} s (a time "
                                   "service set it)".format("forward" if stepped > 0 else "back",
                                                            abs(stepped) / 1000), WARNING)
            self._refresh_schedules()
            health = self.journal.health()
            self.backlog = int(health.get("backlog", 0))
            budget = int(health.get("budget", 0)) or 1
            used_pct = 100 * int(health.get("bytes", 0)) // budget
            try:
                disk = shutil.disk_usage(self.journal.directory)
                disk_pct = 100 * disk.free // max(1, disk.total)
            except OSError:
                disk_pct = 0
            self.disk_free_pct = max(0, min(100 - used_pct, disk_pct))
            self.health.floods()
            if time.monotonic() >= next_ports and len(self.started_pollers) < len(self.site.pollers):
                self._start_pollers()
                next_ports = time.monotonic() + PORT_RETRY_S
            self.slow_gen += 1
            self.notifier.status(self.status.status_line())

    def stop(self, why: str = "stopped") -> None:
        """SIGTERM path: outputs to their safe state, journal flushed, buses closed."""
        self.stop_event.set()
        self.bank.safe(self.state.lock)
        self.notifier.stopping()
        try:
            self.health.floods(final=True)
            self.journal.append(R.health(self.context(False), R.HEALTH_STOPPED, why, INFO))
        finally:
            self.journal.close()
        for i, poller in enumerate(self.site.pollers):
            if i in self.started_pollers:
                poller.stop()
        self.bank.close()
        self.inputs.close()
        if self.webhook is not None:
            self.webhook.stop()
        if self.lan is not None:
            self.lan.stop()
        if self.gnss is not None:
            self.gnss.stop()
        if self.housekeeper.is_alive():
            self.housekeeper.join(2 * HOUSEKEEPING_S)
