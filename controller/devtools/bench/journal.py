"""Journal figures: sign + append, alarm durable latency, verify, start-up recovery of 1 GB."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from controller.core import events as ev
from controller.devtools.bench import Figure
from controller.journal import records as R
from controller.journal.journal import SEGMENT_BYTES, Journal, default_clock
from controller.journal.segments import list_segments, segment_name
from controller.journal.verify import verify_dir
from drivers.keys import generate, role_kid

RECORDS = 100_000
ALARMS = 300
GIGABYTE = 1 << 30
SNAPSHOT = list(range(40))   # a cabinet's image is a few dozen signals


def _open(tmp: Path, prov=None) -> Journal:
    return Journal.open(tmp / "journal", "bench-gw", tmp / "epoch.key", prov)


def _records(n: int) -> list[dict]:
    c = default_clock()
    ctx = R.Context(c.wall_ms, True, c.mono_ms, SNAPSHOT)
    return [R.from_event((ev.EV_RULE, i % 50, ev.INFO, 1), ctx) for i in range(n)]


def _append_rate(tmp: Path, prov) -> float:
    recs = _records(RECORDS)
    with _open(tmp, prov) as j:
        j.flush()
        t0 = time.perf_counter()
        for rec in recs:
            j.append(rec)
        j.flush()
        return RECORDS / (time.perf_counter() - t0)


def _alarm_latency(tmp: Path) -> tuple[float, float]:
    lat = []
    with _open(tmp) as j:
        for rec in _records(ALARMS):
            rec[R.SEVERITY] = ev.ALARM
            t0 = time.perf_counter()
            j.wait_durable(j.append(rec))
            lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


def _verify_rate(tmp: Path, prov) -> float:
    t0 = time.perf_counter()
    report = verify_dir(tmp / "journal", prov)
    return report.records / (time.perf_counter() - t0)


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
    with _open(tmp) as j:
        j.flush()
    return time.perf_counter() - t0


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="cabguard-bench-") as d:
        tmp = Path(d)
        prov = generate(role_kid("bench-gw", "record"))
        rate = _append_rate(tmp, prov)
        median, p99 = _alarm_latency(tmp)
        verify = _verify_rate(tmp, prov)
        recovery = _recovery(tmp)
    return [
        Figure("sign + append, batched (AES-MAC)", rate, "rec/s", ">= 20000",
               "{} records with a 40-signal snapshot".format(RECORDS)),
        Figure("alarm record durable (append + fsync), median", median, "ms"),
        Figure("alarm record durable (append + fsync), p99", p99, "ms"),
        Figure("verify", verify, "rec/s", ">= 50000"),
        Figure("start-up recovery with 1 GB of journal", recovery, "s", "<= 2",
               "{} MB segments; only the tail is scanned".format(SEGMENT_BYTES >> 20)),
    ]
