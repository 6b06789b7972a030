"""Schedule (drivers/modbus/schedule.py): the bus thread's next action as tables, no pty.

Times are microseconds.  The bus of the examples: an I/O module every 100 ms, a
BMS every second (and a relay every 500 ms where said).
"""

import pytest

from drivers.modbus.schedule import ALIGN_MARGIN_US, COMMAND, JOB, POLL, WAIT, Action, Schedule

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
    # a device late by a whole period of its own goes anyway: none starves
    ([100 * MS, 0, 0], 1000 * MS, Action(POLL, BMS)),
    ([1050 * MS, 100 * MS, 500 * MS], 1000 * MS, Action(POLL, RELAY)),   # late 500 ms: a whole period
    ([1050 * MS, 30 * MS, 500 * MS], 1030 * MS, Action(POLL, BMS)),   # both starve: earliest due first
    ([1050 * MS, 100 * MS, 600 * MS], 1020 * MS, Action(WAIT, at_us=1050 * MS)),   # late 420 and 920 ms: they wait
])
def test_the_shortest_period_keeps_its_polls_on_a_busy_wire(due, now, action):
    schedule = bus(0, 100, 1000, 500)
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


@pytest.mark.parametrize("device, now, piece, due, ahead", [
    (BMS, 0, 80 * MS, [50 * MS, 0, 300 * MS], (50 * MS, [IO])),      # the I/O module falls due meanwhile:
    (BMS, 0, 40 * MS, [50 * MS, 0, 300 * MS], (0, [])),              # wait for it ... or not
    (BMS, 0, 80 * MS, [60 * MS, 0, 50 * MS], (50 * MS, [RELAY, IO])),   # every shorter period, earliest first
    (RELAY, 0, 80 * MS, [50 * MS, 0, 0], (50 * MS, [IO])),           # not the longer BMS
    (BMS, 70 * MS, 80 * MS, [50 * MS, 0, 300 * MS], (50 * MS, [IO])),   # already due: at once
    (IO, 0, 80 * MS, [0, 0, 0], (0, [])),                            # nothing preempts the shortest
])
def test_shorter_periods_go_ahead_of_a_piece_of_a_long_read_on_their_time(device, now, piece, due, ahead):
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = list(due)
    assert schedule.ahead_of(device, now, piece) == ahead


def test_a_device_coming_online_polls_the_shorter_periods_at_once():
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [50 * MS, 0, 300 * MS]
    assert schedule.ahead_of(BMS, 0, 80 * MS, online=False) == (0, [IO])


def test_a_reopened_port_polls_everyone_now():
    schedule = bus(0, 100, 1000, 500)
    schedule.due_us = [50 * MS, 900 * MS, 20 * MS]
    schedule.port_reopened(30 * MS)
    assert schedule.due_us == [30 * MS, 30 * MS, 20 * MS]
    assert schedule.next(30 * MS) == Action(POLL, IO)
