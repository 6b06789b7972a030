"""The head end's receiver against hostile records: one anonymous MQTT message
must neither crash nor stall it (issue: crafted kids and odd field types)."""

import cbor2
import pytest

from controller.headend.collect import Collector
from controller.journal import records as R
from drivers.cose import Sealer
from drivers.keys import EpochKeys, epoch_kid
from tests.journaling import provision


def sealed(key, kid: bytes, rec: dict) -> bytes:
    return Sealer(key.alg, kid, key.k).seal(cbor2.dumps(rec), rec.get(R.SEQ) if isinstance(rec.get(R.SEQ), int)
                                            and 0 <= rec[R.SEQ] < 2**63 else None)[0]


def good(seq: int, fields: dict | None = None) -> dict:
    rec = {R.SEQ: seq, R.BOOT: 0, R.WALL_MS: 1, R.TIME_QUALITY: 1, R.GATEWAY: "gw-7", R.TYPE: 39,
           R.SEVERITY: 0, R.PREV: b""}
    rec.update(fields or {})
    return rec


@pytest.mark.parametrize("suffix", [b"5" * 5000, b"50000000", b"1025", b"x1", b"-1"])
def test_a_kid_far_past_the_known_epochs_is_refused_before_any_derivation(tmp_path, suffix):
    prov, _ = provision(tmp_path)
    collector = Collector(tmp_path / "rx.db", [prov])
    epoch0 = EpochKeys(prov).epoch(0)
    assert not collector.record(sealed(epoch0, prov.kid + b"/" + suffix, good(1)))
    assert collector.rejected == 1
    assert len(collector.keys[prov.kid]._epochs) == 1          # nothing derived
    assert collector.db.execute("SELECT kind FROM problems").fetchall() == [("unknown_kid",)]


@pytest.mark.parametrize("fields", [{R.SEQ: 2**64}, {R.SEQ: -1}, {R.BOOT: [1, 2]}, {R.WALL_MS: {1: 2}},
                                    {R.SEVERITY: 2**70}, {R.TYPE: "alarm"}, {R.PREV: 5}, {R.GATEWAY: 7}])
def test_a_record_with_a_valid_mac_and_odd_field_types_is_refused_not_a_crash(tmp_path, fields):
    prov, _ = provision(tmp_path)
    collector = Collector(tmp_path / "rx.db", [prov])
    epoch0 = EpochKeys(prov).epoch(0)
    assert not collector.record(sealed(epoch0, epoch0.kid, good(1, fields)))
    assert collector.db.execute("SELECT kind FROM problems").fetchall() == [("payload",)]
    assert collector.record(sealed(epoch0, epoch0.kid, good(2)))   # and it goes on


def test_epochs_ahead_of_a_verified_one_are_derived(tmp_path):
    prov, _ = provision(tmp_path)
    collector = Collector(tmp_path / "rx.db", [prov])
    keys = EpochKeys(prov)
    assert collector.record(sealed(keys.epoch(30), epoch_kid(prov.kid, 30), good(1)))
    assert collector.record(sealed(keys.epoch(1054), epoch_kid(prov.kid, 1054), good(2)))


def test_a_restarted_collector_remembers_the_epochs_it_verified(tmp_path):
    prov, _ = provision(tmp_path)
    keys = EpochKeys(prov)
    first = Collector(tmp_path / "rx.db", [prov])
    assert first.record(sealed(keys.epoch(1000), epoch_kid(prov.kid, 1000), good(1)))
    again = Collector(tmp_path / "rx.db", [prov])
    assert again.record(sealed(keys.epoch(2000), epoch_kid(prov.kid, 2000), good(2)))


def test_two_different_records_for_one_gateway_and_seq_are_an_equivocation_alarm(tmp_path):
    prov, _ = provision(tmp_path)
    collector = Collector(tmp_path / "rx.db", [prov])
    epoch0 = EpochKeys(prov).epoch(0)
    first = sealed(epoch0, epoch0.kid, good(5))
    assert collector.record(first)
    assert not collector.record(first)                                   # the same bytes again: a duplicate
    assert not collector.record(sealed(epoch0, epoch0.kid, good(5, {R.SEVERITY: 2})))
    rep = collector.report()
    assert (rep["duplicates"], rep["equivocations"]) == (1, 1)
    assert collector.db.execute("SELECT COUNT(*) FROM equivocations").fetchone() == (1,)
    assert collector.db.execute("SELECT kind FROM problems").fetchall() == [("equivocation",)]
