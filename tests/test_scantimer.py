from controller.gateway.scantimer import ScanTimer


class FakeTime:
    """Virtual monotonic time: sleeping advances it, work is injected."""

    def __init__(self):
        self.ns = 1_000_000_000

    def now(self):
        return self.ns

    def sleep(self, s):
        self.ns += int(s * 1e9)


def test_deadlines_do_not_drift_with_work_time():
    t = FakeTime()
    timer = ScanTimer(100, t.now, t.sleep)
    start = timer.start()
    for _ in range(50):
        t.ns += 3_000_000  # 3 ms of work every scan
        assert timer.wait() == 0
    assert t.ns == start + 50 * 100_000_000 and timer.late_scans == 0


def test_overrun_skips_missed_deadlines_and_counts_them_late():
    t = FakeTime()
    timer = ScanTimer(100, t.now, t.sleep)
    start = timer.start()
    t.ns += 350_000_000  # a 350 ms stall
    lateness = timer.wait()
    assert timer.late_scans == 3  # deadlines at 100 and 200 ms skipped, 300 ms started 50 ms late
    assert lateness == 50_000_000 and timer.deadline_ns == start + 300_000_000
    assert timer.wait() == 0
