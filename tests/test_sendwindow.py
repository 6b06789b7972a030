import random

from hypothesis import given, settings, strategies as st

from controller.link.sendwindow import SendWindow


def test_window_bounds_in_flight_and_cursor_needs_contiguous_acks():
    w = SendWindow(cursor=10, size=4)
    assert w.take(100) == [11, 12, 13, 14] and w.take(100) == []
    assert not w.ack(12) and w.cursor == 10
    assert w.ack(11) and w.cursor == 12
    assert w.take(100) == [15, 16]


def test_alarm_goes_ahead_of_older_telemetry():
    w = SendWindow(cursor=0, size=2)
    w.add_urgent(900)
    assert w.take(1000) == [900, 1]
    w.ack(900)
    w.ack(1)
    assert w.cursor == 1 and w.take(1000) == [2, 3]


def test_disconnect_resends_what_was_in_flight():
    w = SendWindow(cursor=0, size=3)
    assert w.take(10) == [1, 2, 3]
    w.ack(2)
    w.disconnected()
    assert w.take(10) == [1, 3, 4]


@settings(max_examples=200)
@given(st.integers(1, 300), st.integers(1, 16), st.integers(0, 2**32), st.lists(st.integers(1, 300), max_size=20))
def test_every_record_is_delivered_and_cursor_reaches_the_end(n, size, seed, urgent):
    rng = random.Random(seed)
    w = SendWindow(0, size)
    for u in urgent:
        w.add_urgent(min(u, n))
    delivered: set[int] = set()
    for _ in range(20 * n + 100):
        sent = w.take(n)
        assert len(w.in_flight) <= size
        for seq in sent:
            if rng.random() < 0.1:
                continue  # lost: only a disconnect brings it back
            delivered.add(seq)
            w.ack(seq)
        if rng.random() < 0.05 or not sent:
            w.disconnected()
        if w.cursor == n:
            break
    assert w.cursor == n and delivered == set(range(1, n + 1)) and w.backlog(n) == 0
