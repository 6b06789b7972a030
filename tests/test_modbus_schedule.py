"""Schedule (drivers/modbus/schedule.py): the bus thread's next action as tables, no pty.

Times are microseconds.  The bus of the examples: an I/O module every 100 ms, a
BMS every second (and a relay every 500 ms where said).
"""

import pytest

from drivers.modbus.schedule import ALIGN_MARGIN_US, COMMAND, JOB, POLL, STEAL_PERIODS, WAIT, Action, Schedule

MS = 1000
IO, BMS, RELAY = 0, 1, 2


def bus(now=0, *periods_ms: int) -> Schedule:
    return Schedule([p * MS for p in periods_ms or (100, 1000)], now)


def test_devices_start_staggered_over_their_periods():
    assert bus(0, 100, 1000, 500).due_us == [0, 333_333, 333_333]
    assert bus(5 * MS, 100).due_us == [5 * MS]


@pytest.mark.parametrize("due, now, commands, jobs, job_turn, reopen_at, action", [
    ([0, 500 * MS], 0, False, False, False, None, Action(POLL, IO)),
    ([10 * MS, 500 * MS], 0, False, False, False, None, Action(WAIT, at_us=10 * MS)),
    ([10 * MS, 5 * MS], 7 * MS, False, False, False, None, Action(POLL, BMS)),
    # a queued command (the siren's write) goes ahead of a due poll: on a busy wire one always is
    ([0, 0], 7 * MS, True, False, False, None, Action(COMMAND)),
    ([10 * MS, 500 * MS], 0, True, True, False, None, Action(COMMAND)),
    # a job steps while no poll is due ...
    ([10 * MS, 500 * MS], 0, False, True, False, None, Action(JOB)),
    # ... and on a busy wire every other transaction: after a poll, not after a step
    ([0, 500 * MS], 0, False, True, True, None, Action(JOB)),
    ([0, 500 * MS], 0, False, True, False, None, Action(POLL, IO)),
    # a lost port: wait for its reopening if it comes before the next poll
    ([10 * MS, 500 * MS], 0, False, False, False, 4 * MS, Action(WAIT, at_us=4 * MS)),
    ([10 * MS, 500 * MS], 0, False, False, False, 40 * MS, Action(WAIT, at_us=10 * MS)),
    ([0, 500 * MS], 0, False, False, False, 4 * MS, Action(POLL, IO)),   # its devices fail at once
])
def test_next_action(due, now, commands, jobs, job_turn, reopen_at, action):
    schedule = bus()
    schedule.due_us = list(due)
    schedule.job_turn = job_turn
    assert schedule.next(now, commands, jobs, reopen_at) == action


# The I/O module's poll takes 80 ms of its 100 ms, a BMS read 80 ms, the relay's 40 ms.
READS = [80 * MS, 80 * MS, 40 * MS]


@pytest.mark.parametrize("due, now, action", [
    # of the devices due, the shortest period first (rate-monotonic), whoever is due first
    ([5 * MS, 0, 0], 5 * MS, Action(POLL, IO)),
    ([100 * MS, 0, 0], 5 * MS, Action(POLL, RELAY)),            # the relay's read fits before the I/O module's
    ([100 * MS, 0, 0], 65 * MS, Action(WAIT, at_us=100 * MS)),  # ... no read does any more
    ([100 * MS, 0, 300 * MS], 19 * MS, Action(POLL, BMS)),      # the BMS's ends at 99 ms: in time
    ([100 * MS, 0, 300 * MS], 20 * MS, Action(WAIT, at_us=100 * MS)),   # at 100 ms: not
    ([500 * MS, 0, 0], 20 * MS, Action(POLL, RELAY)),           # both fit: the shorter period first
    # a device late by a whole period of its own goes ahead of a shorter period's poll that
    # would fall due meanwhile (none starves), but never ahead of one that is due
    ([100 * MS, 0, 0], 1000 * MS, Action(POLL, IO)),
    ([1050 * MS, 100 * MS, 500 * MS], 1000 * MS, Action(POLL, RELAY)),   # late 500 ms: a whole period
    ([1050 * MS, 30 * MS, 500 * MS], 1030 * MS, Action(POLL, BMS)),   # both starve: earliest due first
    ([1050 * MS, 100 * MS, 600 * MS], 1020 * MS, Action(WAIT, at_us=1050 * MS)),   # late 420 and 920 ms: they wait
])
def test_the_shortest_period_keeps_its_polls_on_a_busy_wire(due, now, action):
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = list(due)
    assert schedule.next(now, read_us=READS) == action


@pytest.mark.parametrize("due, now, action", [
    # the relay every second, as a battery is: the battery overdue goes first, but its read
    # would end after the I/O module's poll falls due, so the relay's, which ends in time, goes
    ([100 * MS, 0, 10 * MS], 20 * MS, Action(POLL, RELAY)),
    ([100 * MS, 0, 10 * MS], 65 * MS, Action(WAIT, at_us=100 * MS)),    # neither ends in time
    ([100 * MS, 0, 10 * MS], 5 * MS, Action(POLL, BMS)),                # the battery's does: it first
])
def test_a_held_poll_lets_one_that_ends_in_time_go(due, now, action):
    schedule = bus(0, 100, 1000, 1000)
    schedule.due_us = list(due)
    assert schedule.next(now, read_us=READS) == action


def test_a_device_coming_online_is_not_held_back():
    """After a start or a lost port, a battery comes online within its own periods."""
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [100 * MS, 0, 300 * MS]
    assert schedule.next(20 * MS, read_us=READS, online=[True, True, False]) == Action(WAIT, at_us=100 * MS)
    assert schedule.next(20 * MS, read_us=READS, online=[True, False, True]) == Action(POLL, BMS)


def test_a_held_poll_lets_a_job_step():
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [100 * MS, 0, 0]
    assert schedule.next(20 * MS, jobs=True, read_us=[80 * MS, 90 * MS, 90 * MS]) == Action(JOB)


def test_a_job_and_polls_take_turns_on_a_busy_wire():
    schedule = bus()
    schedule.due_us = [0, 0]
    turns = []
    for _ in range(4):
        action = schedule.next(0, jobs=True)
        turns.append(action.kind)
        if action.kind == JOB:
            schedule.job_stepped()
        else:
            schedule.polled(action.device, 0, 0)
            schedule.due_us[action.device] = 0      # still due: the wire is saturated
    assert turns == [POLL, JOB, POLL, JOB]


@pytest.mark.parametrize("due, polled_at, next_due", [
    (0, (0, 30 * MS), 100 * MS),                  # on its period, keeping its phase
    (0, (150 * MS, 180 * MS), 200 * MS),          # an overrun skips the slots it missed
    (0, (230 * MS, 260 * MS), 300 * MS),
    (40 * MS, (40 * MS, 70 * MS), 140 * MS),
])
def test_a_device_keeps_its_phase(due, polled_at, next_due):
    schedule = bus()
    schedule.due_us[IO] = due
    assert schedule.polled(IO, *polled_at) == next_due
    assert schedule.job_turn


def test_an_aligned_device_is_polled_just_before_the_scan():
    """The scan loop starts at 10 s with a 100 ms period: a device polled every scan is
    due its mean poll time, twice its deviation and a margin before each scan; others keep
    their own phase."""
    schedule = bus(10_000 * MS)
    schedule.align(10_000 * MS, 100 * MS)
    schedule.due_us[BMS] = 10_050 * MS
    # a steady 500 us poll: mean 500 us (the EWMA learns it over polls), no deviation
    schedule.poll_us[IO], schedule.poll_dev_us[IO] = 500, 0
    lead = 500 + ALIGN_MARGIN_US
    assert schedule.polled(IO, 10_229_500, 10_230_000) == 10_300 * MS - lead
    late = 10_300 * MS - lead // 2
    assert schedule.polled(IO, late - 500, late) == 10_400 * MS - lead     # too late for this scan
    assert schedule.polled(BMS, 10_060 * MS, 10_060 * MS) == 11_050 * MS


def test_an_aligned_poll_longer_than_its_slot_starts_at_the_scan_instead_of_skipping_one():
    schedule = bus(0)
    schedule.align(0, 100 * MS)
    schedule.poll_us[IO], schedule.poll_dev_us[IO] = 90 * MS, 10 * MS     # lead 106.5 ms > 100 after this poll
    assert schedule.polled(IO, 5 * MS, 95 * MS) == 100 * MS             # not 300 - 106.5: a scan skipped


def test_an_aligned_poll_leads_by_its_mean_and_twice_its_deviation():
    schedule = bus(0)
    schedule.align(0, 100 * MS)
    for took_ms in (40, 40, 40, 80):
        due = schedule.polled(IO, 0, took_ms * MS)
    mean, dev = schedule.poll_us[IO], schedule.poll_dev_us[IO]
    assert 0 < mean < 80 * MS and dev > 0      # the EWMAs of 1/8 and 1/4, from nothing known
    lead = mean + 2 * dev + ALIGN_MARGIN_US
    assert 80 * MS > 100 * MS - lead            # the poll ended too late for the 100 ms scan's slot
    assert due == 200 * MS - lead


def test_a_starving_device_goes_ahead_of_a_shorter_period_once_in_so_many_of_its_periods():
    """The demo bus is busier than its wire (107 %): the I/O module's polls leave gaps no
    battery read fits in.  A battery late by a whole period goes ahead of the I/O module's
    next poll (the door then waits a scan more) at most once every STEAL_PERIODS of the
    I/O module's periods; else it waits, and the I/O module keeps its polls."""
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [1050 * MS, 0, 2000 * MS]
    assert schedule.next(1000 * MS, read_us=READS) == Action(POLL, BMS)      # goes, though it ends at 1080
    schedule.polled(BMS, 1000 * MS, 1080 * MS)
    gap = STEAL_PERIODS * 100 * MS
    t = 1000 * MS + gap
    schedule.due_us = [t + 50 * MS, 0, 5000 * MS]
    assert schedule.next(t - 1, read_us=READS) == Action(WAIT, at_us=t + 50 * MS)
    assert schedule.next(t, read_us=READS) == Action(POLL, BMS)
    # a read that fits before the I/O module's poll is no steal and does not count
    schedule.due_us = [t + 500 * MS, 0, 0]
    assert schedule.next(t + 100 * MS, read_us=READS) == Action(POLL, RELAY)
    assert schedule.stolen_us == t


def test_a_long_poll_is_read_a_piece_at_a_time_with_shorter_periods_between():
    """A battery's 111 registers are three reads at 19200 baud: after each, the I/O module
    goes first when it is due, and the next piece only if it ends before the I/O module's
    next poll; nothing of a longer period goes between the I/O module's own two reads."""
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [100 * MS, 0, 900 * MS]
    assert schedule.next(10 * MS, read_us=[30 * MS, 75 * MS, 40 * MS]) == Action(POLL, BMS)
    schedule.reading(BMS)                       # a piece read; two to go, due at once
    assert schedule.next(85 * MS, read_us=[30 * MS, 75 * MS, 40 * MS]) == Action(WAIT, at_us=100 * MS)
    assert schedule.next(100 * MS, read_us=[30 * MS, 75 * MS, 40 * MS]) == Action(POLL, IO)
    schedule.reading(IO)                        # the I/O module between its two reads
    schedule.due_us[RELAY] = 0
    assert schedule.next(120 * MS, read_us=[30 * MS, 75 * MS, 40 * MS]) == Action(POLL, IO)
    schedule.polled(IO, 100 * MS, 140 * MS)
    assert not schedule.active[IO] and schedule.due_us[IO] == 200 * MS
    assert schedule.next(140 * MS, read_us=[30 * MS, 75 * MS, 40 * MS]) == Action(POLL, RELAY)   # the shorter first
    schedule.polled(RELAY, 140 * MS, 180 * MS)
    assert schedule.next(180 * MS, read_us=[30 * MS, 75 * MS, 40 * MS]) == Action(WAIT, at_us=200 * MS)
    assert schedule.next(200 * MS, read_us=[30 * MS, 75 * MS, 40 * MS]) == Action(POLL, IO)


def test_a_device_gone_offline_is_not_coming_online_and_waits_its_turn():
    """A battery that stopped answering (offline, failing each poll) would take the I/O
    module's scans every period if it went first as a device coming online does."""
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [100 * MS, 0, 300 * MS]
    schedule.polled(BMS, 0, 0, failed=True, online=False)
    schedule.due_us[BMS] = 0
    assert schedule.next(20 * MS, read_us=READS, online=[True, False, True]) == Action(WAIT, at_us=100 * MS)
    schedule.port_reopened(20 * MS)            # a port back: everyone comes online at once
    schedule.due_us = [100 * MS, 0, 300 * MS]
    assert schedule.next(20 * MS, read_us=READS, online=[True, False, True]) == Action(POLL, BMS)


def test_a_device_coming_online_goes_first_but_not_between_a_shorter_periods_reads():
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [0, 0, 300 * MS]
    schedule.reading(IO)
    assert schedule.next(20 * MS, read_us=READS, online=[True, False, True]) == Action(POLL, IO)
    schedule.polled(IO, 0, 40 * MS)
    assert schedule.next(40 * MS, read_us=READS, online=[True, False, True]) == Action(POLL, BMS)


def test_a_failed_poll_of_an_online_device_is_confirmed_at_once():
    """A silent I/O module is offline after its two failed polls back to back, not one
    period apart: the first failure's timeouts overran the period and skipped a slot
    (3.7 to 4.2 periods to offline, the target is 3)."""
    schedule = bus(0)
    schedule.align(0, 100 * MS)
    schedule.poll_us[IO], schedule.poll_dev_us[IO] = 30 * MS, 0
    schedule.due_us[BMS] = 0                    # a battery due (and starving) meanwhile
    assert schedule.polled(IO, 60 * MS, 150 * MS, failed=True) == 150 * MS
    assert schedule.poll_us[IO] == 30 * MS      # a failed poll's timeouts teach the lead nothing
    assert schedule.next(150 * MS, read_us=[30 * MS, 75 * MS]) == Action(POLL, IO)
    assert schedule.next(150 * MS, jobs=True) == Action(POLL, IO)   # ahead of a job's turn too
    assert schedule.polled(IO, 150 * MS, 240 * MS) > 240 * MS and not schedule.confirm[IO]   # answered: its period


def test_an_aligned_poll_that_missed_its_scan_is_followed_at_once_by_the_next_scans():
    """An I/O poll that ends after the scan it was for does not skip the next scan's:
    the door's next reading is one scan away, not two."""
    schedule = bus(0)
    schedule.align(0, 100 * MS)
    schedule.poll_us[IO], schedule.poll_dev_us[IO] = 90 * MS, 0      # a steady 90 ms: lead 91.5 ms
    assert schedule.polled(IO, 8_500, 98_500) == 200 * MS - 91_500       # in time for the scan at 100
    due = schedule.polled(IO, 108_500, 205 * MS)       # 96.5 ms: it missed the scan at 200
    assert due <= 205 * MS and schedule.scan_us[IO] == 300 * MS          # at once, for the scan at 300


def test_a_reopened_port_ends_the_polls_in_progress():
    schedule = bus(0, 100, 1000)
    schedule.reading(BMS)
    schedule.port_reopened(30 * MS)
    assert schedule.active == [False, False]


def test_a_reopened_port_polls_everyone_now():
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [50 * MS, 900 * MS, 20 * MS]
    schedule.port_reopened(30 * MS)
    assert schedule.due_us == [30 * MS, 30 * MS, 20 * MS]
    assert schedule.next(30 * MS) == Action(POLL, IO)



def polls_every(schedule: Schedule, device: int, gap_ms: int, count: int, start_ms: int = 0) -> list[bool]:
    """Poll ``device`` ``count`` times, ``gap_ms`` apart (each poll 50 ms); its stretched flag after each."""
    flags = []
    for k in range(count):
        end = (start_ms + k * gap_ms) * MS
        schedule.polled(device, end - 50 * MS, end)
        flags.append(schedule.stretched[device])
    return flags


def test_a_battery_polled_far_less_often_than_its_period_is_stretched_then_on_pace_again():
    s = bus(0, 100, 1000)
    assert polls_every(s, BMS, 1000, 20) == [False] * 20          # on its period: never news
    flags = polls_every(s, BMS, 6000, 6, start_ms=20_000)       # an overloaded bus: 6 s apart
    assert flags[0] is False and flags[-1] is True                # not one late poll, but an average
    assert polls_every(s, BMS, 1000, 2, start_ms=60_000)[-1] is True     # hysteresis: still stretched
    assert polls_every(s, BMS, 1000, 20, start_ms=70_000)[-1] is False   # then on pace again


def test_one_late_poll_is_not_stretched_and_a_port_outage_is_no_gap():
    s = bus(0, 100, 1000)
    polls_every(s, BMS, 1000, 5)
    assert polls_every(s, BMS, 3500, 1, start_ms=8_500) == [False]   # one poll 3.5 periods late
    s.port_reopened(400_000 * MS)                                      # the port was away for minutes
    assert polls_every(s, BMS, 1000, 3, start_ms=400_000) == [False] * 3
