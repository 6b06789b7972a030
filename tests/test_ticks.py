from hypothesis import given, strategies as st

from controller.core import ticks

tick = st.integers(min_value=0, max_value=ticks.MASK)
span = st.integers(min_value=-ticks.MAX_SPAN, max_value=ticks.MAX_SPAN)


@given(tick, span)
def test_diff_undoes_add_across_the_wrap(t, d):
    assert ticks.diff(ticks.add(t, d), t) == d


@given(tick, st.integers(min_value=0, max_value=ticks.MAX_SPAN))
def test_reached_only_at_or_after_the_deadline(t, d):
    deadline = ticks.add(t, d)
    assert ticks.reached(deadline, deadline)
    assert ticks.reached(t, deadline) == (d == 0)


def test_wrap_at_two_to_the_thirty():
    assert ticks.add(ticks.MASK, 1) == 0
    assert ticks.diff(5, ticks.MASK - 4) == 10
