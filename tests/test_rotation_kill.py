"""SIGKILL during key rotation: the journal recovers, verifies, moves one epoch at a time
and loses no record it reported durable.

The writer rotates the record key after every few records, so most kills land
somewhere in a rotation: its record sealed with the old key, the fsync, the new
key file (temp file, fsync, rename, folder fsync), the first records under the
new key.  Each writer is a fork of this process (the journal code is imported
once), killed at a random moment.  ``make test`` runs CABGUARD_ROTATION_KILLS
(default 200) kills.
"""

import os
import random
import select
import signal
import time
from pathlib import Path

from controller.journal.verify import verify_dir
from drivers.keys import epoch_number, load_key
from tests.journaling import event_record, kill_rounds, open_journal

KILLS = int(os.environ.get("CABGUARD_ROTATION_KILLS", "200"))
KILLS_PER_JOURNAL = 25


def _writer(tmp: Path, first: bool, out: int) -> None:
    """The child: open the journal, then records and rotations until killed."""
    try:
        prov = load_key(tmp / "record.key") if first else None
        journal = open_journal(tmp, prov, segment_bytes=16 * 1024,
                               on_durable=lambda seq: os.write(out, b"%d\n" % seq))
        os.write(out, b"ready\n")
        i = 0
        while True:
            for _ in range(3):
                journal.append(event_record(i))
                i += 1
            journal.rotate_key()
    finally:
        os._exit(1)    # never return into pytest


def _run_and_kill(tmp: Path, first: bool, rng: random.Random) -> int:
    """One writer killed with SIGKILL at a random moment; the highest seq it reported durable."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _writer(tmp, first, wfd)
    os.close(wfd)
    got = b""
    deadline = time.monotonic() + 30
    while b"ready\n" not in got:
        assert time.monotonic() < deadline, "the writer did not start: {!r}".format(got)
        if select.select([rfd], [], [], 1.0)[0]:
            got += os.read(rfd, 65536)
    time.sleep(rng.uniform(0.0, 0.08))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(rfd, 65536):
        got += chunk
    os.close(rfd)
    return max((int(line) for line in got.split() if line.isdigit()), default=-1)


def test_sigkill_during_rotation_never_jumps_an_epoch_nor_loses_a_durable_record(tmp_path):
    rng = random.Random(16)
    rotations = key_ahead = 0
    best = -1
    for kill, tmp, prov, fresh in kill_rounds(tmp_path, KILLS, KILLS_PER_JOURNAL):
        best = max(-1 if fresh else best, _run_and_kill(tmp, fresh, rng))
        report = verify_dir(tmp / "journal", prov)
        assert report.ok, (kill, report.problems[:5])            # no jump, no rotation out of order
        last = -1 if report.last_seq is None else report.last_seq  # killed before the genesis was durable
        assert last >= best, (kill, last, best)
        assert report.records == last + 1, kill                 # 0..last, each once
        key_epoch = epoch_number(load_key(tmp / "epoch.key").kid)
        last_epoch = epoch_number(report.kids[-1].encode()) if report.kids else 0
        assert key_epoch in (last_epoch, last_epoch + 1), (kill, key_epoch, last_epoch)
        key_ahead += key_epoch == last_epoch + 1                 # killed between a new key and its first record
        if kill % KILLS_PER_JOURNAL == KILLS_PER_JOURNAL - 1 or kill == KILLS - 1:
            rotations += len(report.kids) - 1
    print("{} kills: {} rotations, {} kills with the new key ahead of the journal, 0 jumps, 0 durable "
          "records lost".format(KILLS, rotations, key_ahead))
    assert rotations > KILLS // 2 and key_ahead > 0                # the kills really landed in rotations
