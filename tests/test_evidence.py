import json
import subprocess
import sys

import pytest

from controller.core import events as ev, modes
from controller.core.anomaly import ModelTables
from controller.core.catalog import Catalog
from controller.core.modelrules import ModelRules, rules_from_header
from controller.core.step import CoreConfig, CoreState, step
from controller.core.trace import replay_lines
from controller.devtools import mpy
from controller.devtools.sampletraces import CABINET
from controller.errors import CabguardError
from controller.journal import records as R
from controller.journal.evidence import EvidenceRing, evidence_record, incident_record, incident_trace
from controller.journal.journal import default_clock
from tests.journaling import open_journal, provision
from tests.test_modelrules import MODEL, cabinet

SCAN_MS = 100


def _journaled(tmp_path, state, zones, scans, drive, table=None, model=None):
    """Scans through step(), journaled as the gateway journals them, with an evidence
    ring (2 s before, 1.5 s after) around the first alarm.  ``drive(scan, image)``
    sets the image and returns the scan's commands.  Returns (root key, its file,
    the first alarm's seq, [(tick, outputs, events)] as the gateway saw them)."""
    catalog = state.catalog
    ring = EvidenceRing(state, before_ms=2000, after_ms=1500)
    prov, key_path = provision(tmp_path)
    image = catalog.new_image()
    live = []
    incident = None
    with open_journal(tmp_path, prov) as j:
        c = default_clock()
        j.append(R.catalog(R.Context(c.wall_ms, True, c.mono_ms), catalog.specs(), state.config.as_dict(),
                           zones, catalog.digest(), table, model))
        for scan in range(scans):
            now = 5000 + scan * SCAN_MS
            cmds = drive(scan, image)
            outputs, events = step(state, (image, cmds), now)
            live.append((now, list(outputs), list(events)))
            c = default_clock()
            ctx = R.Context(c.wall_ms, True, c.mono_ms, image)
            for e in events:
                seq = j.append(R.from_event(e, ctx))
                if R.event_severity(e) >= ev.ALARM and incident is None:
                    incident = seq
                    ring.incident(seq, R.event_severity(e), now)
            for window in ring.scan(now, image, cmds):
                ev_seq = j.append(evidence_record(ctx, window))
                j.append(incident_record(ctx, window, ev_seq))
    return prov, key_path, incident, live


def _night(tmp_path):
    """Arm, wait, force the door: the core's events journaled, with an evidence window."""
    catalog = Catalog(CABINET)
    config = CoreConfig({"exit_delay_ms": 1000, "entry_delay_ms": 1000}, (catalog.index["io.door_open"],))

    def drive(scan, image):
        image[catalog.index["io.online"]] = 1
        if scan == 60:
            image[catalog.index["io.door_open"]] = 1
        image[catalog.index["io.vib_rms_mg"]] = scan % 7
        return [(ev.CMD_ARM, 0)] if scan == 10 else []
    return _journaled(tmp_path, CoreState(catalog, config), ["io.door_open"], 120, drive)


def _header_rules(catalog, head):
    return rules_from_header(head, catalog)


def _replays_as_lived(lines, live, rules_factory=_header_rules):
    """Re-run an incident's trace: the events the gateway saw within its window, at the
    same ticks, on CPython and (when set up) MicroPython, from the rules and the model
    in its header."""
    replay = replay_lines(lines, rules_factory)
    first_t, last_t = json.loads(lines[1])["t"], json.loads(lines[-1])["t"]
    expected = [(t, o, e) for t, o, e in live if first_t <= t <= last_t and e]
    got = [(t, outputs, events) for _scan, t, outputs, events in replay.timeline if events]
    assert got == expected
    if mpy.available():
        code = ("from controller.core.trace import replay_lines\n"
                "from controller.core.modelrules import rules_from_header\n"
                "r = replay_lines(open('/app/incident.trace'), lambda c, h: rules_from_header(h, c), "
                "keep_timeline=False)\nprint(r.scans, r.events, r.digest())\n")
        (out,) = mpy.run([code], {"incident.trace": "\n".join(lines) + "\n"})
        assert out.split() == [str(replay.scans), str(replay.events), replay.digest()]
    return got


def test_incident_replays_from_the_journal_as_it_happened(tmp_path):
    prov, _key, incident, live = _night(tmp_path)
    assert incident is not None
    got = _replays_as_lived(incident_trace(tmp_path / "journal", prov, incident), live)
    assert any(e[0] == ev.EV_MODE and e[2] == 5 for _t, _o, es in got for e in es)   # into alarm, again


def test_replay_command_line_reruns_an_incident(tmp_path):
    prov, key_path, incident, _live = _night(tmp_path)
    out = tmp_path / "incident.trace"
    r = subprocess.run([sys.executable, "-m", "controller.cli.main", "replay", str(tmp_path / "journal"),
                        "--incident", str(incident), "--key", str(key_path), "--trace-out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "alarm" in r.stdout and "digest" in r.stdout
    again = subprocess.run([sys.executable, "-m", "controller.cli.main", "replay", str(out)],
                           capture_output=True, text=True)
    assert again.stdout.splitlines()[-1] == r.stdout.splitlines()[-1]   # same digest from the file


def test_unknown_incident_is_a_clear_error(tmp_path):
    prov, _key, _incident, _live = _night(tmp_path)
    with pytest.raises(CabguardError, match="no evidence window for incident 99999"):
        incident_trace(tmp_path / "journal", prov, 99999)


def test_evidence_and_incident_records_match_the_cddl_schema(tmp_path):
    import pathlib

    import pycddl

    from controller.journal.evidence import verified_records
    from drivers.cose import encode
    from drivers.keys import EpochKeys

    schema = pycddl.Schema((pathlib.Path(__file__).parent.parent / "docs" / "records.cddl").read_text())
    for d in ("night", "model"):
        (tmp_path / d).mkdir()
    prov, _key, _incident, _live = _night(tmp_path / "night")
    model_prov = _model_night(tmp_path / "model")[0]
    kinds = set()
    for journal, key in ((tmp_path / "night" / "journal", prov), (tmp_path / "model" / "journal", model_prov)):
        for rec in verified_records(journal, EpochKeys(key)):
            schema.validate_cbor(encode(rec))
            kinds.add(rec[R.TYPE])
            if rec[R.TYPE] == R.EVIDENCE and journal.parent.name == "model":
                assert {"rules", "model"} & set(rec[R.DATA][R.EVIDENCE_START]) == {"model"}
    assert {R.EVIDENCE, R.INCIDENT} <= kinds


RATE_RULE = '[[rule]]\nid = "warming"\nwhen = "rate(bms1.temp_max_dc, \'2m\') > 30"\nseverity = "alarm"\n'


def test_an_incident_of_a_rule_over_two_minutes_replays_from_a_window_of_seconds(tmp_path):
    """The window holds 2 s before the alarm, the rule looks back 2 minutes: the window
    starts with every rule's state (the rate's samples), so the replay raises it again,
    at the same tick (issue 16: it re-ran with no event at all)."""
    from controller.cli.rulescmd import site_catalog
    from controller.core.evaluator import Evaluator
    from controller.core.table import Table
    from controller.devtools.bench.rules import compile_text

    catalog, _site = site_catalog(None)
    compiled = compile_text(RATE_RULE)
    state = CoreState(catalog, CoreConfig({}, ()), Evaluator(Table(compiled.data, catalog.size)))

    def drive(scan, image):                           # 200 s, the pack warming 1 dC every 3 s
        for name in ("io.online", "bms1.online", "bms2.online", "relay.online"):
            image[catalog.index[name]] = 1
        image[catalog.index["bms1.temp_max_dc"]] = 250 + scan // 30
        return []
    prov, _key_path, incident, live = _journaled(tmp_path, state, [], 2000, drive, compiled.encode())
    assert incident is not None
    lines = incident_trace(tmp_path / "journal", prov, incident)
    assert len(lines) <= 2 + 4000 // SCAN_MS          # seconds of scans, not minutes
    got = _replays_as_lived(lines, live, lambda cat, head: Evaluator(Table(compiled.data, cat.size)))
    assert any(e[0] == ev.EV_RULE for _t, _o, es in got for e in es)


def _model_night(tmp_path):
    """Disarmed 40 s with a hum the model adapts to, armed, a stronger hum, modules out:
    the model's rule alarms.  -> (root key, tables, the alarm's seq, live, the ModelRules)."""
    catalog = cabinet()
    tables = ModelTables(dict(MODEL, adapt={"cap": 12, "step_windows": 2, "holdoff_windows": 0}))
    rules = ModelRules(tables, catalog)
    state = CoreState(catalog, CoreConfig({"exit_delay_ms": 1000}, ()), rules)
    idx = catalog.index

    def drive(scan, image):
        for name in ("io.online", "bms1.online", "bms2.online", "sys.clock_trusted", "io.door_bolt"):
            image[idx[name]] = 1
        image[idx["sys.week_hour"]] = 10
        image[idx["io.supply_mv"]] = 24100
        image[idx["io.vib_rms_mg"]] = 8 if scan < 450 else 14      # level 48, then 60 (qlog)
        image[idx["bms1.pack_mv"]] = 409600 if scan < 500 else 358400
        return [(ev.CMD_ARM, 0)] if scan == 400 else []
    prov, _key, incident, live = _journaled(tmp_path, state, [], 560, drive, model=tables.as_doc())
    assert state.mode == modes.ALARM
    return prov, tables, incident, live, rules


def test_a_model_raised_incident_replays_with_the_model_as_it_had_adapted(tmp_path):
    """Disarmed, the cabinet hums a little above the model file's vibration level: the
    baseline adapts up to it.  Armed, the hum rises again (a fresh baseline would score
    it), then modules go: the model raises its rule, an alarm.  The window (2 s) starts
    with the model's adapted baseline, its open window and the last readings, so the
    replay scores as the gateway did (issue 16: the model's state was not in it)."""
    prov, tables, incident, live, rules = _model_night(tmp_path)
    assert incident is not None

    lines = incident_trace(tmp_path / "journal", prov, incident)
    head = json.loads(lines[0])
    assert head["model"] == tables.as_doc()
    vib_hour = 10 * 9 + 0           # hour 10's row, feature "vib"
    assert [vib_hour, 48] in head["start"]["model"]["hi"]       # adapted from 40, as on the gateway
    got = _replays_as_lived(lines, live)
    raised = (ev.EV_RULE, rules.rule_index, ev.ALARM, 1)
    assert raised in [e for _t, _o, es in got for e in es]
    # Without the model's state (a fresh model behind the same header) the replay differs.
    del head["start"]["model"]
    fresh = replay_lines([json.dumps(head)] + lines[1:], _header_rules)
    assert [(t, o, e) for _s, t, o, e in fresh.timeline if e] != got


@pytest.mark.parametrize("incident_at", [5, 37, 100, 123, 250])
def test_a_window_holds_before_ms_to_a_mark_more_and_the_core_is_snapshotted_at_marks_only(incident_at):
    """The ring snapshots the core's state ten times per ``before_ms`` (not after every
    scan: that was most of an idle scan's CPU), so a window starts at a mark: between
    ``before_ms`` and ``before_ms + mark_ms`` before its incident (all of it, early on),
    with the state as it was right after that scan."""
    catalog = Catalog(CABINET)
    state = CoreState(catalog, CoreConfig({"exit_delay_ms": 700}, ()))
    taken = []
    real_snapshot = state.snapshot
    state.snapshot = lambda: taken.append(state.machine.mode) or real_snapshot()
    ring = EvidenceRing(state, before_ms=2000, after_ms=500)
    image = catalog.new_image()
    snapshots_at_start = len(taken)
    windows = []
    for scan in range(300):
        now = 1000 + scan * SCAN_MS
        cmds = [(ev.CMD_ARM, 0)] if scan == 30 else []
        step(state, (image, cmds), now)
        if scan == incident_at:
            ring.incident(scan, ev.ALARM, now)
        windows += ring.scan(now, image, cmds)
    assert len(taken) - snapshots_at_start == 300 // (2000 // 10 // SCAN_MS)     # a mark every 200 ms
    (w,) = windows
    first, incident_tick = w.scans[0][0], 1000 + incident_at * SCAN_MS
    held = incident_tick - first
    if incident_at * SCAN_MS >= 2000:
        assert 2000 <= held < 2000 + 200 + SCAN_MS
    else:
        assert first == 1000
    armed_before = w.scans[0][0] > 1000 + 30 * SCAN_MS
    assert (w.start["mode"] != 0) == armed_before
