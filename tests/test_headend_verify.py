"""`cabguard verify --headend DB`: the checkpoint a gateway's heartbeat anchored at the
head end catches a journal whose tail was cut after it was sent."""

import json
import subprocess
import sys
from pathlib import Path

from controller.headend.collect import Collector
from drivers import cose
from tests.journaling import frames, provision, write_records


CABGUARD = str(Path(sys.executable).parent / "cabguard")


def cli(words: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([CABGUARD, *words], capture_output=True, text=True, timeout=120)


def collect_journal(folder, prov, db):
    """Every record of the journal into the head end, and a heartbeat anchoring the last one."""
    collector = Collector(db, [prov])
    records = [rec for _, _, rec in frames(folder)]
    for rec in records:
        assert collector.record(rec)
    last = cose.decode(records[-1])
    collector.heartbeat("gw-7", json.dumps({"gateway": "gw-7", "site": "s", "last_seq": last.seq, "wall_ms": 1,
                                            "checkpoint": {"seq": last.seq, "tag": last.tag.hex()}}).encode(), "s")
    return last.seq


def test_verify_takes_the_anchor_from_the_head_end_and_finds_a_cut_tail(tmp_path, db):
    prov, key_path = provision(tmp_path)
    (tmp_path / "sent").mkdir()
    write_records(tmp_path / "sent", prov, 30)
    assert collect_journal(tmp_path / "sent", prov, db) == 30      # record 0 is the genesis record
    journal = ["verify", str(tmp_path / "sent" / "journal"), "--key", str(key_path)]
    done = cli(journal + ["--headend", db])
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    assert "a head-end checkpoint anchors seq 30" in done.stdout
    # the same gateway's journal, rewritten shorter after its heartbeat anchored record 30
    (tmp_path / "cut").mkdir()
    write_records(tmp_path / "cut", prov, 20)
    done = cli(["verify", str(tmp_path / "cut" / "journal"), "--key", str(key_path), "--headend", db,
                "--gateway", "gw-7"])
    assert done.returncode == 1
    assert "a head-end checkpoint names record 30 but the journal ends at 20" in done.stdout
    done = cli(journal + ["--headend", db, "--gateway", "gw-other"])
    assert done.returncode == 1 and "holds no checkpoint of gateway 'gw-other'" in done.stderr
