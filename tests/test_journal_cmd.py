"""`cabguard journal`: a technician reads the journal (list, filters, show, export, incidents)."""

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

from controller.errors import CabguardError
from controller.journal.evidence import incident_trace
from tests.test_evidence import _night

CLI = [sys.executable, "-m", "controller.cli.main"]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    d = tmp_path_factory.mktemp("night")
    prov, key_path, alarm_seq, _live = _night(d)
    return d / "journal", key_path, alarm_seq, prov


def journal(*args):
    return subprocess.run(CLI + ["journal", *map(str, args)], capture_output=True, text=True)


def records(j, key, *filters):
    done = journal("list", j, "--key", key, "--format", "jsonl", *filters)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_incidents_name_their_alarm_window_and_the_seq_replay_takes(night):
    j, key, alarm_seq, prov = night
    done = journal("incidents", j, "--key", key, "--json")
    assert done.returncode == 0, done.stderr
    [incident] = json.loads(done.stdout)
    assert incident["trigger"]["seq"] == alarm_seq and incident["severity"] == "alarm"
    assert incident["scans"] > 0 and incident["window_ms"] >= 3000     # 2 s before + 1.5 s after
    assert incident_trace(j, prov, incident["seq"])      # the seq it prints is the one replay takes
    text = journal("incidents", j, "--key", key).stdout
    assert "replay --incident {}".format(incident["seq"]) in text


def test_filters_by_severity_type_device_and_time(night):
    j, key, alarm_seq, _prov = night
    every = records(j, key)
    assert [r["seq"] for r in every] == sorted(r["seq"] for r in every) and len(every) > 5
    alarms = records(j, key, "--severity", "alarm")
    assert alarm_seq in [r["seq"] for r in alarms]
    assert alarms and all(r["severity"] in ("alarm", "critical") for r in alarms)
    modes = records(j, key, "--type", "mode")
    assert modes and all(r["type"] == "mode" for r in modes) and len(modes) < len(every)
    assert any("-> alarm" in r["text"] for r in modes)
    assert records(j, key, "--since", "2999-01-01T00:00") == []
    assert len(records(j, key, "--until", "2999-01-01T00:00+01:00")) == len(every)
    assert records(j, key, "--device", "nosuch") == []
    bad = journal("list", j, "--key", key, "--since", "yesterday")
    assert bad.returncode == 1 and "--since 'yesterday': want an ISO 8601 time" in bad.stderr


def test_csv_export_has_every_record_and_a_header(night):
    j, key, _alarm, _prov = night
    done = journal("list", j, "--key", key, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in records(j, key)]
    assert set(rows[0]) >= {"seq", "time", "severity", "type", "rule", "devices", "text"}


def test_show_one_record_and_a_wrong_seq_says_where_to_look(night):
    j, key, alarm_seq, _prov = night
    shown = journal("show", j, str(alarm_seq), "--key", key, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["seq"] == alarm_seq
    missing = journal("show", j, "99999", "--key", key)
    assert missing.returncode == 1 and "no verified record with seq 99999" in missing.stderr


def test_a_copy_of_the_journal_reads_the_same(night, tmp_path):
    j, key, _alarm, _prov = night
    shutil.copytree(j, tmp_path / "copy")
    assert records(tmp_path / "copy", key) == records(j, key)


def test_a_wrong_replay_incident_seq_lists_the_real_ones(night):
    j, key, alarm_seq, prov = night
    [incident] = json.loads(journal("incidents", j, "--key", key, "--json").stdout)
    with pytest.raises(CabguardError, match=r"this journal's incidents: {} \(alarm {}\)".format(
            incident["seq"], alarm_seq)):
        incident_trace(j, prov, 99999)
