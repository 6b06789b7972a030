"""Every incident of a real gateway run replays from its evidence record as it happened.

A gateway (``cabguard run``'s Gateway, with its journal, its rule table and the
anomaly model) guards a simulated cabinet over a real pty bus: modules are
pulled while it is armed (the model's rule alarms), then, re-armed, the door
is forced.  Each incident the journal holds is rebuilt with
``incident_trace`` and re-run through ``step()``: the outputs at every scan
of the window are the ones the gateway drove, the records the replay's
events make are the journaled ones (type, severity, rule, data and the
signal snapshot, by digest), and MicroPython computes the same digest.

Then the whole way round once: ``cabguard run`` as a process against the
simulated cabinet, armed at its console and the door forced; ``cabguard replay
JOURNAL --incident SEQ`` reaches the journaled alarm from that journal alone.
"""

import hashlib
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from controller.cli.main import main as cli
from controller.console.auth import PeopleStore
from controller.core import modes, ticks
from controller.core.events import ALARM, CMD_ACK, CMD_ARM, EV_MODE, EV_REFUSED, EV_RULE, EVENT_NAMES
from controller.core.modelrules import RULE_NAME, rules_from_header
from controller.core.trace import parse_scan, replay_lines
from controller.devtools import mpy
from controller.gateway.run import build
from controller.gateway.timeline import event_json
from controller.journal import records as R
from controller.journal.evidence import EvidenceRing, incident_trace, verified_records
from drivers.cose import encode
from drivers.keys import EpochKeys, load_key
from simulator.benchsite import SIM_CONFIG
from simulator.bus import SimBus, Simulator
from simulator.config import load_config
from simulator.demo import Console, prepare
from simulator.slave import SimDevice
from tests.test_gateway_model import _site
from tests.test_runtime import stop
from tests.waiting import wait_until

BEFORE_MS, AFTER_MS = 2000, 1500      # the gateway's are 10 s each: the same ring, shorter
_FIELDS = (R.TYPE, R.SEVERITY, R.RULE, R.DATA, R.SNAPSHOT)


def _digest(rec: dict) -> str:
    """A record's content as the scan made it (not its place in the chain nor its clocks)."""
    return hashlib.sha256(encode({k: rec[k] for k in _FIELDS if k in rec})).hexdigest()


def _run_night(tmp_path):
    """-> (journal folder, root record key, {tick: outputs} as the gateway drove them)."""
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])]).start()
    try:
        sim.device("io").set(door_bolt=1)
        sim.device("bms1").set(pack_mv=409600)
        site = _site(tmp_path, sim.bus("rs485").port)
        assert cli(["rules", "compile", "--config", str(site), "-o", str(tmp_path / "rules.table"),
                    "--key", str(tmp_path / "keys" / "installer.key")]) == 0
        driven: dict[int, list[int]] = {}
        gw = build(str(site), on_scan=lambda g: driven.__setitem__(g.evidence.last_tick, list(g.state.outputs))).gateway
        gw.evidence = ring = EvidenceRing(gw.state, BEFORE_MS, AFTER_MS)
        journal, key = Path(gw.settings.journal_dir), load_key(tmp_path / "keys" / "record.key")
        thread = threading.Thread(target=gw.run, daemon=True)
        thread.start()
        try:
            online = [gw.catalog.index[n + ".online"] for n in ("io", "bms1", "relay")]
            assert wait_until(lambda: all(gw.image[i] for i in online), 10)
            assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(5) == "ok"
            assert wait_until(lambda: gw.state.mode == modes.ARMED, 10)
            assert wait_until(lambda: ring.last_tick >= 0 and len(driven) > 60, 10)   # windows of the model scored
            sim.device("bms1").set(pack_mv=358400)         # modules pulled: the model's rule
            assert wait_until(lambda: gw.state.mode == modes.ALARM, 10)
            assert wait_until(lambda: len(_incidents(journal, key)[0]) == 1, 15)   # its evidence is written
            assert gw.submit(CMD_ACK, 0, "console", "ana").outcome.result(5) == "ok"
            assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(5) == "ok"
            assert wait_until(lambda: gw.state.mode == modes.ARMED, 10)
            sim.device("io").set(door_open=1, door_bolt=0)  # forced
            assert wait_until(lambda: gw.state.mode == modes.ALARM, 10)
            assert wait_until(lambda: len(_incidents(journal, key)[0]) >= 2, 15)
        finally:
            stop(gw, thread)
    finally:
        sim.stop()
    return journal, key, driven, gw.rule_names()


def _incidents(journal, key):
    """[(incident record seq, trigger seq)] and the core's event records, in journal order."""
    incidents, events = [], []
    for rec in verified_records(journal, EpochKeys(key)):
        if rec[R.TYPE] == R.INCIDENT:
            incidents.append((rec[R.SEQ], rec[R.DATA][R.INCIDENT_TRIGGER]))
        elif rec[R.TYPE] in EVENT_NAMES:
            events.append(rec)
    return incidents, events


def _replayed(lines, driven=None):
    """Re-run an incident's trace scan by scan, as the gateway ran and journaled it: the
    outputs of every scan must be the ones it drove; -> (the replay, the digests of the
    records its events make, their snapshot being the replay's image after the scan)."""
    replay = replay_lines(lines[:1], lambda catalog, head: rules_from_header(head, catalog))
    ctx = R.Context(0, False, 0, replay.image)
    made = []
    for n, text in enumerate(lines[1:], 2):
        t, changes, commands = parse_scan(text, n, replay.state.catalog)
        seen = len(replay.timeline)
        replay.feed(t, changes, commands)
        if driven is not None:
            assert replay.state.outputs == driven[t], "outputs at tick {}".format(t)
        if len(replay.timeline) > seen:
            made += [_digest(R.from_event(ev, ctx)) for ev in replay.timeline[-1][3] if ev[0] != EV_REFUSED]
    return replay, made


def replays_as_journaled(journal: Path, key, driven: dict[int, list[int]] | None = None) -> list[tuple]:
    """Replay every incident of ``journal`` from its evidence record and check it against
    the journal: the replay's events, made into records as the gateway makes them, are
    the journal's run of event records around the incident's alarm (by digest, and none
    of the journal's from the window's inner scans left out); with ``driven`` ({tick:
    outputs} the gateway drove), the outputs of every scan too.
    -> [(incident seq, trace text, scans, events, digest, the replay)]."""
    incidents, events = _incidents(journal, key)
    seqs = [r[R.SEQ] for r in events]
    journaled = [_digest(r) for r in events]
    done = []
    for incident, trigger in incidents:
        lines = incident_trace(journal, key, incident)
        replay, mine = _replayed(lines, driven)
        first, last = json.loads(lines[1])["t"], json.loads(lines[-1])["t"]
        k = seqs.index(trigger)
        runs = [o for o in range(len(journaled) - len(mine) + 1)
                if journaled[o:o + len(mine)] == mine and o <= k < o + len(mine)]
        assert runs, "incident {}: the replayed records are not the journal's".format(incident)
        inner = [i for i, r in enumerate(events)
                 if ticks.diff(ticks.wrap(r[R.MONO_MS]), first) >= 500
                 and ticks.diff(last, ticks.wrap(r[R.MONO_MS])) >= 500]
        assert inner and all(runs[0] <= i < runs[0] + len(mine) for i in inner), incident
        done.append((incident, "\n".join(lines) + "\n", replay.scans, replay.events, replay.digest(), replay))
    return done


def same_on_micropython(done: list[tuple]) -> None:
    """Each incident's trace gives MicroPython the digest it gave CPython."""
    if not mpy.available():
        return
    code = "from controller.core.trace import replay_lines\n" \
           "from controller.core.modelrules import rules_from_header\n"
    for incident, *_rest in done:
        code += ("r = replay_lines(open('/app/i{}.trace'), lambda c, h: rules_from_header(h, c), "
                 "keep_timeline=False)\nprint(r.scans, r.events, r.digest())\n").format(incident)
    (out,) = mpy.run([code], {"i{}.trace".format(d[0]): d[1] for d in done})
    assert out.split("\n")[:len(done)] == ["{} {} {}".format(*d[2:5]) for d in done]


def test_every_incident_of_a_gateway_run_replays_its_outputs_and_records(tmp_path):
    journal, key, driven, names = _run_night(tmp_path)
    done = replays_as_journaled(journal, key, driven)
    assert len(done) >= 2, done                    # the model's alarm and the forced door
    model_rule = names.index(RULE_NAME)
    assert any(e[0] == EV_RULE and e[1] == model_rule and e[3] == 1
               for d in done for _s, _t, _o, es in d[5].timeline for e in es), "no replay re-decided the model"
    same_on_micropython(done)


def _mode_records(journal, key) -> list[int]:
    """The modes the journal's mode records went to, in order."""
    return [r[R.DATA][R.EVENT_B] for r in verified_records(journal, EpochKeys(key)) if r[R.TYPE] == EV_MODE]


def test_an_incident_of_a_cabguard_run_process_replays_from_the_command_line(tmp_path, capsys):
    """`cabguard run` as a process (the demo's site, rule packs and simulated cabinet, on
    the simulator's pty bus), armed at its console, the door forced: `cabguard replay
    JOURNAL --incident SEQ` re-decides the journaled alarm from the journal alone, ends
    in alarm as the gateway did, and the records its events make are the journal's."""
    sim = load_config(SIM_CONFIG).start()
    proc = None
    try:
        sim.device("io").set(door_bolt=1, door_open=0)
        site = prepare(tmp_path, sim.bus("rs485-1").port, None, tmp_path / "console")
        journal, key = tmp_path / "journal", load_key(tmp_path / "keys" / "record.key")
        proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "run", "--config", str(site)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: (tmp_path / "console").exists(), 60, 0.1)
        console = Console(tmp_path / "console", PeopleStore(tmp_path / "people.toml"))

        def armed() -> bool:
            """Arm (refused until the devices are read; a slow answer is no refusal), and
            let the journal say whether it took: armed once the exit delay is over."""
            console.type("ben", "arm")
            return wait_until(lambda: modes.ARMED in _mode_records(journal, key), 10, 0.2)
        try:
            assert wait_until(armed, 60, 0.5)
        finally:
            console.close()
        sim.device("io").set(door_open=1, vib_rms_mg=900, vib_peak_mg=4200)     # a crowbar on the door
        assert wait_until(lambda: _incidents(journal, key)[0], 40, 0.2)           # its evidence is written
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        sim.stop()
    (incident, trigger), *_later = _incidents(journal, key)[0]
    alarm = next(r for r in verified_records(journal, EpochKeys(key)) if r[R.SEQ] == trigger)
    assert cli(["replay", str(journal), "--incident", str(incident), "--key", str(tmp_path / "keys" / "record.key"),
                "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    events = [e for scan in replayed["timeline"] for e in scan["events"]]
    data = alarm[R.DATA]
    assert event_json((alarm[R.TYPE], data[R.EVENT_A], data[R.EVENT_B], data[R.EVENT_C])) in events   # the alarm
    assert {"event": "rule", "rule": replayed["rules"].index("door_forced.io"), "severity": ALARM, "raised": 1} \
        in events
    assert replayed["final_mode"] == "alarm" and _mode_records(journal, key)[-1] == modes.ALARM
    done = replays_as_journaled(journal, key)      # every record of the window, bit for bit (by digest)
    assert done[0][0] == incident and done[0][4] == replayed["digest"]
