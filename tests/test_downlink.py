import pytest

from controller.core.events import CMD_ARM, CMD_MAINT_START
from controller.link.downlink import DownlinkVerifier, Refused, SeqStore
from controller.link.wire import AAD, make_command
from drivers.cose import encode, mac0_create
from drivers.keys import generate

NOW = 1_790_000_000


@pytest.fixture
def setup(tmp_path):
    key = generate("gw-1.headend")
    return key, DownlinkVerifier("gw-1", key, SeqStore(tmp_path / "cmdseq"))


def test_good_command_runs_once(setup, tmp_path):
    key, ver = setup
    cmd = make_command(key, "gw-1", 5, NOW + 60, "maint start", {"duration": "30m"})
    req = ver.verify(cmd, NOW)
    assert req.core_command() == (CMD_MAINT_START, 1800000) and req.source == "downlink"
    with pytest.raises(Refused, match=r"\(replayed\)"):
        ver.verify(cmd, NOW)
    assert SeqStore(tmp_path / "cmdseq").value == 5  # survives a reboot


@pytest.mark.parametrize("mutate, reason", [
    (lambda key: make_command(generate("gw-1.headend"), "gw-1", 9, NOW + 60, "arm"), "bad-mac"),
    (lambda key: make_command(generate("thief"), "gw-1", 9, NOW + 60, "arm"), "bad-mac"),
    (lambda key: make_command(key, "gw-2", 9, NOW + 60, "arm"), "wrong-gateway"),
    (lambda key: make_command(key, "gw-1", 9, NOW - 1, "arm"), "expired"),
    (lambda key: b"\x00" * 5000, "oversized"),
    (lambda key: b"\xff\x00garbage", "malformed"),
    (lambda key: mac0_create(encode({1: 1, 2: "gw-1"}), key.alg, key.kid, key.k, AAD), "malformed"),
    (lambda key: mac0_create(encode({1: 1, 2: "gw-1", 3: 9, 4: NOW + 60, 5: "signals", 6: {}}),
                             key.alg, key.kid, key.k, AAD), "unknown-command"),
    (lambda key: mac0_create(encode({1: 1, 2: "gw-1", 3: 9, 4: NOW + 60, 5: "maint start",
                                     6: {"duration": "soon"}}), key.alg, key.kid, key.k, AAD), "bad-arguments"),
    # Signed, but claiming numbers that would lock the gateway out or keep a command alive for years.
    (lambda key: make_command(key, "gw-1", 2**62, NOW + 60, "arm"), "bad-sequence"),
    (lambda key: make_command(key, "gw-1", 9, 32_503_680_000, "arm"), "bad-expiry"),     # year 3000
    (lambda key: make_command(key, "gw-1", 9, NOW + 60, "grant", {"minutes": 10**30}), "bad-arguments"),
    (lambda key: make_command(key, "gw-1", 9, NOW + 60, "maint start", {"duration": "99999999h"}),
     "bad-arguments"),
])
def test_refusals(setup, mutate, reason):
    key, ver = setup
    with pytest.raises(Refused, match=r"\({}\)".format(reason)):
        ver.verify(mutate(key), NOW)
    assert ver.seqs.value == 0


def test_old_sequence_after_newer_is_refused(setup):
    key, ver = setup
    ver.verify(make_command(key, "gw-1", 10, NOW + 60, "arm"), NOW)
    with pytest.raises(Refused, match="replayed"):
        ver.verify(make_command(key, "gw-1", 7, NOW + 60, "disarm"), NOW)
    assert ver.verify(make_command(key, "gw-1", 11, NOW + 60, "arm"), NOW).core_command() == (CMD_ARM, 0)


def test_millisecond_sequences_and_counters_both_pass_the_bound(setup):
    key, ver = setup
    assert ver.verify(make_command(key, "gw-1", 3, NOW + 60, "arm"), NOW)                   # a counter
    assert ver.verify(make_command(key, "gw-1", NOW * 1000, NOW + 60, "disarm"), NOW)       # cabguard cmd's default
