"""Flood control (controller/gateway/floodgate.py): a token bucket per source, one summary per interval."""

import hashlib
import random
import time
import tty

import pytest

from controller.core import modes
from controller.devtools.bench.console import type_draining
from controller.gateway.floodgate import LIMITS as GATEWAY_LIMITS, Floodgate, Limit
from controller.journal import records as R
from controller.link.downlink import DownlinkVerifier, SeqStore, command_handler
from controller.link.wire import make_command
from drivers.keys import generate
from tests.test_console_gateway import PROMPT, visit  # noqa: F401 (the fixture)
from tests.waiting import wait_until

LIMITS = {"console": Limit(1.0, 3), "bus": Limit(1 / 60, 1)}


def feed(gate, steps):
    """``steps``: (source, mono_ms, protected); returns which were admitted."""
    return [gate.admit(source, b"x", ms, 1_000_000 + ms, protected) for source, ms, protected in steps]


@pytest.mark.parametrize("name, steps, admitted", [
    ("a burst passes, the rest is counted",
     [("console", 0, False)] * 5, [True, True, True, False, False]),
    ("the bucket refills at its rate",
     [("console", 0, False)] * 4 + [("console", 1000, False), ("console", 1500, False)],
     [True, True, True, False, True, False]),
    ("refilling stops at the burst",
     [("console", 0, False), ("console", 60_000, False)] + [("console", 60_000, False)] * 3,
     [True, True, True, True, False]),
    ("a protected record always passes and still spends a token",
     [("console", 0, True)] * 4 + [("console", 0, False)], [True, True, True, True, False]),
    ("sources have buckets of their own",
     [("console", 0, False)] * 4 + [("bus:pump:timeout", 0, False), ("bus:pump:crc", 0, False),
                                    ("bus:pump:timeout", 0, False)],
     [True, True, True, False, True, True, False]),
    ("a bus kind: once a minute",
     [("bus:pump:timeout", 0, False), ("bus:pump:timeout", 59_000, False), ("bus:pump:timeout", 60_000, False)],
     [True, False, True]),
    ("an unknown class gets the default limit (20 at once)",
     [("shell", 0, False)] * 21, [True] * 20 + [False]),
    ("time going back refills nothing",
     [("console", 5000, False)] * 3 + [("console", 0, False), ("console", 4000, False)],
     [True, True, True, False, False]),
])
def test_admit(name, steps, admitted):
    assert feed(Floodgate(LIMITS), steps) == admitted, name


def test_what_is_over_becomes_one_summary_per_interval():
    gate = Floodgate(LIMITS, interval_ms=10_000)
    dropped = []
    for i in range(10):
        content = "junk {}".format(i).encode()
        if not gate.admit("console", content, 100 * i, 5_000 + 100 * i):
            dropped.append((content, 5_000 + 100 * i))
    assert len(dropped) == 7
    assert gate.summaries(9_999) == []                 # the interval is not over yet
    (summary,) = gate.summaries(10_300)
    expected = hashlib.sha256(b"".join(len(c).to_bytes(4, "big") + c for c, _ in dropped)).digest()
    assert summary == ("console", 7, dropped[0][1], dropped[-1][1], expected)
    assert gate.summaries(30_000) == []                # counted once, then afresh


def test_a_final_summary_does_not_wait_and_quiet_sources_make_none():
    gate = Floodgate(LIMITS, interval_ms=60_000)
    feed(gate, [("console", 0, False)] * 5 + [("bus:pump:timeout", 0, False)])
    summaries = gate.summaries(1, final=True)
    assert [(s.source, s.count) for s in summaries] == [("console", 2)]


def test_the_digest_tells_different_floods_apart():
    digests = []
    for junk in (b"a", b"b"):
        gate = Floodgate(LIMITS)
        for _ in range(5):
            gate.admit("console", junk, 0, 0)
        digests.append(gate.summaries(0, final=True)[0].digest)
    assert digests[0] != digests[1]


# ---- through a real gateway: the console on a pty, the downlink's handler ------------------

def _records_from(visit, first_seq):
    visit.gw.health.floods(final=True)
    return [r for r in visit.records() if r[R.SEQ] >= first_seq]


def _floods(records, source):
    """The flood records of ``source`` (one a minute: a slow machine may make two)."""
    return [r[R.DATA] for r in records if r[R.TYPE] == R.FLOOD and r[R.DATA][R.FLOOD_SOURCE] == source]


def test_console_junk_is_summarised_and_a_login_still_counts(visit):
    """Finding 3: 1 MB of random bytes made 7,749 records, 20,000 `status` lines 20,021."""
    term, first = visit.term, visit.gw.journal.next_seq
    tty.setraw(term.fd)     # as picocom does (an echoed ^S would stop our side)
    junk = random.Random(5).randbytes(1 << 17) + b"\rstatus\r" * 2000
    t0 = time.monotonic()
    type_draining(term.fd, junk)
    term.seen = b""
    term.send(b"\x03\rversion\r")
    term.expect(b"rules: ", timeout=60)
    term.expect(PROMPT)
    assert visit.say("login ana " + visit.code("ana")).startswith(b"Logged in as ana")
    elapsed_s = time.monotonic() - t0
    records = _records_from(visit, first)
    console = [r for r in records if r[R.TYPE] == R.LOGIN or (
        r[R.TYPE] == R.COMMAND and r[R.DATA][R.COMMAND_SOURCE] == "console")]
    # The bucket's burst, what it refilled while a slow machine chewed on the junk, and the
    # login (protected): about 20 records on a quiet machine instead of thousands.
    limit = GATEWAY_LIMITS["console"]
    assert len(console) <= limit.burst + limit.rate_per_s * elapsed_s + 1, (len(console), elapsed_s)
    assert (R.LOGIN, "ana", True) in [(r[R.TYPE], r[R.DATA].get(R.LOGIN_USER), r[R.DATA].get(R.LOGIN_OK))
                                       for r in console]                    # a real event is never dropped
    floods = _floods(records, "console")
    assert sum(f[R.FLOOD_COUNT] for f in floods) >= 2000
    assert all(f[R.FLOOD_FIRST_MS] <= f[R.FLOOD_LAST_MS] and len(f[R.FLOOD_DIGEST]) == 32 for f in floods)


def test_ten_thousand_junk_commands_make_a_few_records_and_a_good_one_still_runs(visit):
    """Finding 3: 10,000 junk messages on the command topic made 10,000 refusal records."""
    gw, path = visit.gw, visit.services.path
    key = generate("gw-test.headend")
    handle = command_handler(DownlinkVerifier("gw-test", key, SeqStore(visit.d / "cmdseq")),
                             path.execute, path.refused)
    first = gw.journal.next_seq
    rng = random.Random(6)
    for _ in range(10_000):
        handle(rng.randbytes(rng.randrange(1, 300)))
    handle(make_command(key, "gw-test", 1, int(time.time()) + 60, "maint start", {"duration": "10m"}))
    assert wait_until(lambda: gw.state.mode == modes.MAINTENANCE)
    records = _records_from(visit, first)
    downlink = [r for r in records if r[R.TYPE] == R.COMMAND and r[R.DATA][R.COMMAND_SOURCE] == "downlink"]
    assert len(downlink) <= 25, len(downlink)
    assert any(r[R.DATA][R.COMMAND_ACCEPTED] and r[R.DATA][R.COMMAND_NAME] == "maint_start" for r in downlink)
    dropped = sum(f[R.FLOOD_COUNT] for f in _floods(records, "downlink"))
    assert dropped + len(downlink) - 1 == 10_000      # every refusal is journaled or counted
