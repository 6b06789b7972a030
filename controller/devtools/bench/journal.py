"""Journal figures: sign + append, alarm durable latency, verify, start-up recovery of 1 GB,
and what retention deletes of unsent alarms under a flood with the broker down."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import cbor2

from controller.core import events as ev
from controller.devtools.bench import Figure
from controller.journal import records as R
from controller.journal.journal import SEGMENT_BYTES, Journal, default_clock
from controller.journal.segments import Bad, iter_frames, list_segments, segment_name
from controller.journal.verify import verify_dir
from drivers import cose
from drivers.keys import EpochKeys, generate, role_kid

RECORDS = 100_000
ALARMS = 300
GIGABYTE = 1 << 30
FLOOD_RECORDS = 20_000
SNAPSHOT = list(range(40))   # a cabinet's image is a few dozen signals


Clock = Callable[[], R.Context]


def _frozen_clock() -> Clock:
    """One moment for a batch of records made up front and for the journal's own
    records (genesis, checkpoints) among them, so the journal is one a gateway
    could have written: a checkpoint stamped later than the records after it
    would make verify report, and pay for, a time regression on each of them."""
    c = default_clock()
    ctx = R.Context(c.wall_ms, True, c.mono_ms, SNAPSHOT)
    return lambda: ctx


def _open(tmp: Path, clock: Clock, prov=None) -> Journal:
    return Journal.open(tmp / "journal", "bench-gw", tmp / "epoch.key", prov, clock=clock)


def _records(clock: Clock, n: int) -> list[dict]:
    ctx = clock()
    return [R.from_event((ev.EV_RULE, i % 50, ev.INFO, 1), ctx) for i in range(n)]


class Rates:
    """Records per second of wall time, and of the process's CPU time (every thread):
    on a loaded machine the second says what the code costs, the first what it got."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def of(self, records: int) -> tuple[float, float]:
        return (records / (time.perf_counter() - self._wall), records / (time.process_time() - self._cpu))


def _append_rate(tmp: Path, prov) -> tuple[float, float]:
    clock = _frozen_clock()
    recs = _records(clock, RECORDS)
    with _open(tmp, clock, prov) as j:
        j.flush()
        rates = Rates()
        for rec in recs:
            j.append(rec)
        j.flush()
        return rates.of(RECORDS)


def _alarm_latency(tmp: Path) -> tuple[float, float]:
    lat = []
    clock = _frozen_clock()
    with _open(tmp, clock) as j:
        for rec in _records(clock, ALARMS):
            rec[R.SEVERITY] = ev.ALARM
            t0 = time.perf_counter()
            j.wait_durable(j.append(rec))
            lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


def _verify_rate(tmp: Path, prov) -> tuple[tuple[float, float], str]:
    """Records verified per second (wall, CPU), and what verify made of the journal."""
    rates = Rates()
    report = verify_dir(tmp / "journal", prov)
    return rates.of(report.records), "{} records, {}".format(
        report.records, "every check passed" if report.ok else
        "{} problems: not the journal a gateway writes".format(len(report.problems)))


def _recovery(tmp: Path) -> float:
    """1 GB of copies of a full sealed segment; the tail is a full one too
    (the worst case: 16 MB of frames to scan)."""
    src = tmp / "journal"
    big = tmp / "big"
    big.mkdir()
    full = list_segments(src)[0][1]
    copies = max(1, GIGABYTE // max(1, full.stat().st_size))
    for n in range(copies):
        shutil.copyfile(full, big / segment_name(n))
    shutil.copyfile(tmp / "journal" / "state", big / "state")
    shutil.rmtree(src)
    big.rename(src)
    t0 = time.perf_counter()
    with _open(tmp, _frozen_clock()) as j:
        j.flush()
    return time.perf_counter() - t0


def _unsent_alarms_lost(tmp: Path, prov) -> tuple[int, int]:
    """Alarms appended with the broker down (cursor never moves) among a flood of
    warnings and info over the minimum budget: how many are gone, and how many
    info records the full journal refused."""
    flood = tmp / "flood"
    flood.mkdir()
    c = default_clock()
    ctx = R.Context(c.wall_ms, True, c.mono_ms, SNAPSHOT)
    with Journal.open(flood / "journal", "bench-gw", flood / "epoch.key", prov,
                      segment_bytes=64 << 10, budget_bytes=1 << 20) as j:
        for i in range(FLOOD_RECORDS):
            severity = ev.ALARM if i % 100 == 0 else (ev.WARNING if i % 2 else ev.INFO)
            j.append(R.from_event((ev.EV_RULE, i, severity, 1), ctx))
            if i % 500 == 499:   # a flood over time, not one batch: the writer sees the budget
                j.flush()
        j.flush()
        refused = j.refused_while_full
    kept = sum(1 for r in _payloads(flood, prov) if r[R.TYPE] == ev.EV_RULE and r[R.SEVERITY] == ev.ALARM)
    return FLOOD_RECORDS // 100 - kept, refused


def _payloads(tmp: Path, prov) -> list[dict]:
    keys = EpochKeys(prov)
    out = []
    for _n, path in list_segments(tmp / "journal"):
        for item in iter_frames(path.read_bytes()):
            if not isinstance(item, Bad):
                msg = cose.decode(item[1])
                out.append(cbor2.loads(msg.verify(keys.key_for(msg.kid).k)))
    return out


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="cabguard-bench-") as d:
        tmp = Path(d)
        prov = generate(role_kid("bench-gw", "record"))
        rate = _append_rate(tmp, prov)
        median, p99 = _alarm_latency(tmp)
        verify, verified = _verify_rate(tmp, prov)
        recovery = _recovery(tmp)
        alarms_lost, refused = _unsent_alarms_lost(tmp, prov)
    return [
        Figure("sign + append, batched (AES-MAC)", rate[0], "rec/s", ">= 20000",
               "{} records with a 40-signal snapshot; {:.0f} rec/s of CPU time".format(RECORDS, rate[1])),
        Figure("alarm record durable (append + fsync), median", median, "ms"),
        Figure("alarm record durable (append + fsync), p99", p99, "ms"),
        Figure("verify", verify[0], "rec/s", ">= 50000",
               "{}; {:.0f} rec/s of CPU time".format(verified, verify[1])),
        Figure("start-up recovery with 1 GB of journal", recovery, "s", "<= 2",
               "{} MB segments; only the tail is scanned".format(SEGMENT_BYTES >> 20)),
        Figure("unsent alarms deleted by retention under a flood", alarms_lost, "records", "<= 0",
               "{} records, 1 MB budget, broker down; {} info records refused while full".format(
                   FLOOD_RECORDS, refused)),
    ]
