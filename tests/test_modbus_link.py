"""DeviceLink and PortLink (drivers/modbus/link.py): the poller's decisions as tables, no pty."""

import pytest

from drivers.modbus.events import EXCEPTION, MISMATCH, OFFLINE, ONLINE
from drivers.modbus.link import (GARBLED, MARGIN_US, PORT_GONE, PORT_LOST, REFUSED, REOPEN_FIRST_US, REOPEN_HELD_US,
                                 REOPEN_MAX_US, TIMEOUT, DeviceLink, PortLink, wire_us)
from drivers.modbus.options import BusOptions

OPTS = BusOptions(baud=19200, timeout_floor_ms=20, timeout_ceiling_ms=200, retries=1, offline_after=2, online_after=2)


def link(**changes) -> DeviceLink:
    return DeviceLink("io", 1, OPTS._replace(**changes))


def drive(dev: DeviceLink, steps: str) -> list[tuple[int, list[str]]]:
    """``steps``: one letter per poll, ``+`` good, ``-`` failed, ``p`` port gone, ``s`` not SunSpec;
    returns (online, event kinds) after each."""
    out = []
    for step in steps:
        events = {"+": dev.poll_ok, "-": dev.poll_failed, "p": lambda: dev.port_gone("port gone"),
                  "s": lambda: dev.not_sunspec("model 1 missing")}[step]()
        out.append((dev.online, [e.kind for e in events]))
    return out


@pytest.mark.parametrize("steps, online, kinds", [
    ("+", [0], [[]]),
    ("++", [0, 1], [[], [ONLINE]]),
    ("+-+", [0, 0, 0], [[], [], []]),                        # a good run is broken by a failure
    ("++-", [0, 1, 1], [[], [ONLINE], []]),                  # one failed poll is ridden out
    ("++--", [0, 1, 1, 0], [[], [ONLINE], [], [OFFLINE]]),
    ("++-+-", [0, 1, 1, 1, 1], [[], [ONLINE], [], [], []]),  # failures must be in a row
    ("++---", [0, 1, 1, 0, 0], [[], [ONLINE], [], [OFFLINE], []]),   # offline is said once
    ("++p", [0, 1, 0], [[], [ONLINE], [OFFLINE]]),           # a lost port: offline at once
    ("p++", [0, 0, 1], [[], [], [ONLINE]]),                  # ... and back through the hysteresis
    ("++ss", [0, 1, 1, 0], [[], [ONLINE], [MISMATCH], [OFFLINE]]),   # mismatch said once per episode
    ("ss+s", [0, 0, 0, 0], [[MISMATCH], [], [], [MISMATCH]]),
])
def test_online_offline_hysteresis(steps, online, kinds):
    result = drive(link(), steps)
    assert [o for o, _k in result] == online
    assert [k for _o, k in result] == kinds


@pytest.mark.parametrize("offline_after, online_after, steps, online", [
    (1, 1, "+-+", [1, 0, 1]),
    (3, 1, "+---", [1, 1, 1, 0]),
    (2, 3, "+++--", [0, 0, 1, 1, 0]),
    (1, 1, "p", [0]),
])
def test_hysteresis_follows_the_options(offline_after, online_after, steps, online):
    dev = link(offline_after=offline_after, online_after=online_after)
    assert [o for o, _k in drive(dev, steps)] == online


def test_the_offline_event_says_why_and_carries_the_exception_code():
    dev = link()
    drive(dev, "++")
    dev.failed(REFUSED, "slave 1 answered exception code 4", 4)
    dev.poll_failed()
    (event,) = dev.poll_failed()
    assert (event.kind, event.code, event.detail) == (OFFLINE, 4, "2 failed polls; last: slave 1 answered exception code 4")
    dev = link()
    drive(dev, "++")
    (lost,) = dev.port_gone("port gone")
    assert (lost.kind, lost.code, lost.detail) == (OFFLINE, PORT_LOST, "2 failed polls; last: port gone")


@pytest.mark.parametrize("outcome, counters", [
    # (ok, timeouts, crc, exc, exc_count) after one transaction
    (TIMEOUT, (0, 1, 0, 0, 0)),
    (PORT_GONE, (0, 1, 0, 0, 0)),
    (GARBLED, (0, 0, 1, 0, 0)),
    (REFUSED, (0, 0, 0, 6, 1)),
])
def test_each_failed_transaction_counts_on_its_twin(outcome, counters):
    dev = link()
    dev.failed(outcome, "why", 6)
    assert (dev.ok, dev.timeouts, dev.crc, dev.exc, dev.exc_count) == counters
    assert dev.reason == "why"
    assert dev.answered == (outcome == REFUSED)   # an exception is an answer


def test_exception_events_only_when_the_code_changes_and_a_good_poll_clears_it():
    dev = link()
    kinds = [[(e.kind, e.code) for e in dev.failed(REFUSED, "x", code)] for code in (4, 4, 6)]
    assert kinds == [[(EXCEPTION, 4)], [], [(EXCEPTION, 6)]]
    assert dev.exc_count == 3
    dev.poll_ok()
    assert dev.exc == 0 and dev.failed(REFUSED, "x", 6)[0].code == 6


def test_counters_wrap_inside_31_bits():
    dev = link()
    dev.timeouts = 0x7FFFFFFF
    dev.failed(TIMEOUT, "x")
    assert dev.timeouts == 0


@pytest.mark.parametrize("turnarounds_us, latency_us", [
    ([10_000], 10_000),                         # the first answer is the estimate
    ([10_000, 18_000], 11_000),                 # later ones average in by 1/8
    ([40_000] + [8_000] * 100, 8_000),          # converges
    ([-500], 0),                                # a host that measured less than the wire: 0
])
def test_latency_is_learned_from_every_answer(turnarounds_us, latency_us):
    dev = link()
    for t in turnarounds_us:
        assert dev.answered_in(t + wire_us(30, OPTS.baud), 30) == []
    assert dev.latency_us == latency_us and dev.ok == len(turnarounds_us)


def test_a_late_answer_teaches_the_turnaround_too():
    dev = link()
    dev.late(45_000)
    assert dev.answered and dev.latency_us == 45_000 and dev.ok == 0


@pytest.mark.parametrize("turnarounds_us, count, timeout_us", [
    ([], 30, 200_000),                                              # first contact: the ceiling
    ([1_000], 0, 20_000),                                           # the floor
    # wire + mean + 4 x deviation + margin; the first answer's deviation is a quarter of it
    ([10_000], 30, wire_us(30, 19200) + 10_000 + 4 * 2_500 + MARGIN_US),
    ([10_000] * 40, 30, wire_us(30, 19200) + 10_000 + 4 * 0 + MARGIN_US),    # steady: tight
    ([100_000], 30, 200_000),                                       # the ceiling
])
def test_timeout(turnarounds_us, count, timeout_us):
    """RFC 6298's retransmission timer, over the turnaround instead of a round trip."""
    dev = link()
    for t in turnarounds_us:
        dev.late(t)
    assert dev.timeout_us(count) == timeout_us


def test_a_wandering_turnaround_gets_room_and_a_steady_one_a_tight_timeout():
    """A silent device is found sooner when its answers are steady (bench: 'silent device
    detected after'); one that answers in 5..40 ms keeps a timeout above its slowest answer."""
    wandering, steady = link(), link()
    for t in [5_000, 40_000, 12_000, 33_000] * 10:
        wandering.late(t)
        steady.late(10_000)
    assert wandering.timeout_us(0) > wire_us(0, 19200) + 40_000 + MARGIN_US
    assert steady.timeout_us(7) < wire_us(7, 19200) + 2 * 10_000     # was wire + 4 x 10 ms


@pytest.mark.parametrize("history, attempts", [
    ("", 1),          # first contact waits the ceiling once
    ("a", 2),         # an answering device gets its retry
    ("a-", 2),
])
def test_attempts(history, attempts):
    dev = link()
    for h in history:
        if h == "a":
            dev.late(5_000)
        else:
            dev.poll_failed()
    assert dev.attempts() == attempts
    assert dev.attempts(write=True) == 2     # a write always gets its retry, first contact or not


def test_unpolled_devices_go_offline_once():
    dev = link()
    drive(dev, "++")
    assert [e.kind for e in dev.unpolled("thread died")] == [OFFLINE]
    assert dev.unpolled("thread died") == [] and dev.good_run == 0


@pytest.mark.parametrize("script, delays", [
    # (action, at µs) -> the delay before the next try
    ([("lost", 60_000_000)], [REOPEN_FIRST_US]),                        # held long: start afresh
    ([("lost", 60_000_000), ("fail", 60_100_000), ("fail", 60_300_000), ("fail", 60_700_000)],
     [100_000, 200_000, 400_000, REOPEN_MAX_US]),                       # doubling up to the max
    ([("lost", 60_000_000), ("open", 60_100_000), ("lost", 60_200_000)],
     [100_000, None, 200_000]),                                         # a flapping plug keeps backing off
    ([("lost", 60_000_000), ("open", 60_100_000), ("lost", 60_100_000 + REOPEN_HELD_US + 1)],
     [100_000, None, 100_000]),                                         # one that held starts afresh
])
def test_port_backoff(script, delays):
    port = PortLink()
    got = []
    for action, now in script:
        if action == "open":
            port.opened(now)
            got.append(None)
            continue
        at = port.lost(now) if action == "lost" else port.open_failed(now)
        got.append(at - now)
    assert got == delays


def test_port_reports_how_long_it_was_gone():
    port = PortLink()
    port.lost(5_000_000)
    assert port.opened(6_250_000) == 1_250_000
