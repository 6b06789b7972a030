"""The real gateway against the real simulator, for longer than a demo: a quiet,
living cabinet, the shipped packs and model, restarts past the two-minute mark
and every harmless field fault (docs/runtime.md).  Nothing may alarm.

The full figures (10 minutes, disarmed and armed) are in `make bench`; this is
the short run that keeps the start-up false alarm from coming back."""

import io

import pytest

from simulator.soak import FIRST_RESTARTS_S, field_faults, run_soak


@pytest.mark.long
def test_a_quiet_cabinet_stays_quiet_through_restarts_and_field_faults(tmp_path):
    out = io.StringIO()
    report = run_soak(3.2, workdir=tmp_path / "soak", out=out)
    report.print(out)
    text = out.getvalue()
    assert report.restarts == len(FIRST_RESTARTS_S) and min(FIRST_RESTARTS_S) > 120, text
    kinds = {f.name.split(" (")[0] for f in field_faults(__import__("random").Random(0))}
    assert all(any(k in f for f in report.faults) for k in kinds), text
    assert report.records > 20, text          # the journal is there and was read
    assert report.alarms == [], text
    assert report.journal_problems == [], text    # wall times sane through the clock step
