"""How `make test` spreads the suite over its two pytest-xdist workers.

pyproject.toml runs xdist with ``--dist loadgroup --no-loadscope-reorder``:
each worker starts with two units of work (a test, or a whole group), and
takes the next unit in collection order whenever it runs short.  The order
this module gives:

- ``OPENING``: the soak (3.2 minutes of a real gateway, mostly waiting) on one
  worker; beside it, on the other, the wire-timing tests (WIRE_GROUP: real
  Modbus timing on ptys, tens of milliseconds) while the soak leaves a core
  mostly idle, then the flash group.  The demo queues behind the soak.
- then the other long tests (``@pytest.mark.long``: a minute or so of real
  time), so no worker is left alone with one at the end;
- then everything else, in collection order.

Tests that share something fixed, or must not compete, run in one group, one
after another on one worker: ``@pytest.mark.xdist_group(NAME)``.  Without
``-n`` nothing changes but the order.

xdist tells the scheduler an item's group by a ``@NAME`` suffix on its node
id.  With pytest 9.2 that suffix silently goes missing and groups are spread
like any test (pytest-xdist issue 1386), hence ``pytest<9.2`` in
pyproject.toml and ``check_group``, which fails a grouped test that lost its group.
"""

from __future__ import annotations

import pytest

# Everything that runs flash.sh for real: the HIL rig (flashed once per worker
# that runs a HIL case, so one worker runs them all) and docs/flashing.md's
# walkthrough.  A flash fills and reads the checkout's one wheel cache
# (.cache/wheels), which a clean clone fills from the package index on its first flash.
FLASH_GROUP = "flash"
# Tests that judge real Modbus timing on ptys (timeouts, late answers, turnarounds
# at 2400-9600 baud): run one after another, beside the quiet soak.
WIRE_GROUP = "wire"

OPENING = (
    "tests/test_soak.py::",
    WIRE_GROUP,
    "tests/test_cli.py::test_demo_plays_the_night_and_the_journal_verifies",
    FLASH_GROUP,
)


def _rank(item: pytest.Item) -> int:
    group = item.get_closest_marker("xdist_group")
    for rank, entry in enumerate(OPENING):
        if item.nodeid.startswith(entry) or (group is not None and group.args[0] == entry):
            return rank
    return len(OPENING) + (item.get_closest_marker("long") is None)


def schedule(items: list[pytest.Item]) -> None:
    """Stable: the opening, the long tests, the rest, each part in its collection order."""
    items.sort(key=_rank)


def check_group(item: pytest.Item) -> None:
    """On an xdist worker with --dist loadgroup, a grouped test whose node id lost its group fails."""
    if (item.config.getoption("loadgroup", default=False) and item.get_closest_marker("xdist_group")
            and "@" not in item.nodeid):
        pytest.fail("pytest-xdist lost this test's xdist_group, so it may run beside its group (pytest {}: "
                    "see tests/scheduling.py); install the pins of pyproject.toml (make setup) or run with -n 0"
                    .format(pytest.__version__), pytrace=False)
