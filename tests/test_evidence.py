import json
import subprocess
import sys

import pytest

from controller.core import events as ev
from controller.core.catalog import Catalog
from controller.core.step import CoreConfig, CoreState, step
from controller.core.trace import replay_lines
from controller.devtools.sampletraces import CABINET
from controller.errors import CabguardError
from controller.journal import records as R
from controller.journal.evidence import EvidenceRing, evidence_record, incident_record, incident_trace
from controller.journal.journal import default_clock
from tests.journaling import open_journal, provision

SCAN_MS = 100


def _night(tmp_path):
    """Arm, wait, force the door: the core's events journaled, with an evidence window."""
    catalog = Catalog(CABINET)
    config = CoreConfig({"exit_delay_ms": 1000, "entry_delay_ms": 1000}, (catalog.index["io.door_open"],))
    state = CoreState(catalog, config)
    ring = EvidenceRing(state, before_ms=2000, after_ms=1500)
    prov, key_path = provision(tmp_path)
    image = catalog.new_image()
    image[catalog.index["io.online"]] = 1
    live = []       # (tick, outputs, events) as the gateway saw them
    incident = None
    with open_journal(tmp_path, prov) as j:
        c = default_clock()
        j.append(R.catalog(R.Context(c.wall_ms, True, c.mono_ms), catalog.specs(), config.as_dict(),
                           ["io.door_open"], catalog.digest()))
        for scan in range(120):
            now = 5000 + scan * SCAN_MS
            cmds = [(ev.CMD_ARM, 0)] if scan == 10 else []
            if scan == 60:
                image[catalog.index["io.door_open"]] = 1
            image[catalog.index["io.vib_rms_mg"]] = scan % 7
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


def test_incident_replays_from_the_journal_as_it_happened(tmp_path):
    prov, _key, incident, live = _night(tmp_path)
    assert incident is not None
    lines = incident_trace(tmp_path / "journal", prov, incident)
    replay = replay_lines(lines)
    first_t = json.loads(lines[1])["t"]
    expected = [(t, o, e) for t, o, e in live if t >= first_t and e]
    got = [(t, outputs, events) for _scan, t, outputs, events in replay.timeline if events]
    assert got == expected          # the alarm raised again, same tick, same events
    assert any(e[0] == ev.EV_MODE and e[2] == 5 for _t, _o, es in got for e in es)   # into alarm


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
    prov, _key, _incident, _live = _night(tmp_path)
    kinds = set()
    for rec in verified_records(tmp_path / "journal", EpochKeys(prov)):
        schema.validate_cbor(encode(rec))
        kinds.add(rec[R.TYPE])
    assert {R.EVIDENCE, R.INCIDENT} <= kinds
