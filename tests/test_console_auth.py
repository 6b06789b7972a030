import os

import pytest

from controller.console.auth import (
    DURESS, FAILED, LOCKED, OK, Authenticator, AuthError, PeopleStore, code_at, duress_variant,
    otpauth_uri,
)
from drivers.clock import Clock

T0 = 1_790_000_000.0


def store(tmp_path):
    s = PeopleStore(tmp_path / "people.toml")
    s.enrol("ana", "technician")
    s.enrol("ivo", "installer")
    return s


def test_enrolment_is_private_and_survives_reload(tmp_path):
    s = store(tmp_path)
    assert os.stat(tmp_path / "people.toml").st_mode & 0o777 == 0o600
    again = PeopleStore(tmp_path / "people.toml")
    assert again.people["ana"].secret == s.people["ana"].secret
    assert again.people["ivo"].level == 2 and again.people["ana"].number == 1
    uri = otpauth_uri(again.people["ana"], "gw-1")
    assert uri.startswith("otpauth://totp/cabguard%20gw-1%3Aana?secret=") and "period=30" in uri


def test_good_code_once_then_replay_refused(tmp_path):
    s = store(tmp_path)
    auth = Authenticator(s)
    code = code_at(s.people["ana"].secret, T0)
    assert auth.check("ana", code, T0) == (OK, s.people["ana"])
    assert auth.check("ana", code, T0 + 1)[0] == FAILED


def test_neighbouring_step_accepted_for_clock_skew(tmp_path):
    s = store(tmp_path)
    code = code_at(s.people["ana"].secret, T0 - 30)
    assert Authenticator(s).check("ana", code, T0)[0] == OK


def test_duress_code_logs_in_and_is_reported(tmp_path):
    s = store(tmp_path)
    code = duress_variant(code_at(s.people["ana"].secret, T0))
    assert duress_variant("123459") == "123450"
    kind, person = Authenticator(s).check("ana", code, T0)
    assert kind == DURESS and person.ident == "ana"


class SetClock(Clock):
    """Time as the test sets it: monotonic and wall seconds, and whether the wall is trusted."""

    def __init__(self, wall_s: float, trusted: bool = True):
        super().__init__()
        self.mono_s, self.wall, self.is_trusted = 1000.0, wall_s, trusted

    def monotonic_ns(self) -> int:
        return int(self.mono_s * 1e9)

    def wall_s(self) -> float:
        return self.wall

    def trusted(self) -> bool:
        return self.is_trusted

    def advance(self, seconds: float) -> None:
        self.mono_s += seconds
        self.wall += seconds


def test_five_failures_lock_for_fifteen_minutes_whoever_tries(tmp_path):
    s = store(tmp_path)
    clock = SetClock(T0)
    auth = Authenticator(s, clock=clock)
    results = [auth.check(who, "000000", T0 + i)[0] for i, who in enumerate(["ana", "ivo", "eve", "ana", "x"])]
    assert results == [FAILED, FAILED, FAILED, FAILED, LOCKED]
    good = code_at(s.people["ana"].secret, T0 + 10)
    assert auth.check("ana", good, T0 + 10)[0] == LOCKED
    clock.wall -= 86_400                   # a wall-clock jump changes nothing: the lock runs on monotonic time
    clock.advance(899)
    assert auth.locked()
    clock.advance(1)
    later = T0 + 4 + 900
    assert auth.check("ana", code_at(s.people["ana"].secret, later), later)[0] == OK


def test_an_installer_refused_for_want_of_a_grant_counts_like_any_failure(tmp_path):
    s = store(tmp_path)
    auth = Authenticator(s, max_failures=2, clock=SetClock(T0))
    right = code_at(s.people["ivo"].secret, T0)
    assert auth.check("ivo", right, T0, allowed=False) == (FAILED, None)
    assert auth.check("ivo", right, T0, allowed=False) == (LOCKED, None)


def _boot(s, path, clock):
    return Authenticator(s, max_failures=5, lockout_s=900, state_path=path, clock=clock)


def test_the_lockout_survives_a_restart_and_a_restart_never_shortens_it(tmp_path):
    s = store(tmp_path)
    path = tmp_path / "console-lockout.json"
    clock = SetClock(T0)
    auth = _boot(s, path, clock)
    for i in range(5):
        kind, _ = auth.check("ana", "000000", T0)
    assert kind == LOCKED
    assert os.stat(path).st_mode & 0o777 == 0o600
    clock.advance(61)
    clock.mono_s = 5.0                       # a reboot: the monotonic clock starts again
    again = _boot(s, path, clock)
    good = code_at(s.people["ana"].secret, clock.wall)
    assert again.check("ana", good, clock.wall)[0] == LOCKED          # 61 s into a 900 s lockout
    clock.advance(838)
    assert _boot(s, path, clock).locked()    # trusted wall clock: 899 s of 900 have passed
    clock.advance(1)
    assert not _boot(s, path, clock).locked()
    clock.is_trusted = False                 # an untrusted clock cannot tell how long it was down ...
    auth = _boot(s, path, clock)
    for i in range(5):
        auth.check("ana", "000000", clock.wall)
    clock.advance(10_000)
    assert _boot(s, path, clock).locked()    # ... so the lock resumes with what was left


def test_four_wrong_codes_per_boot_over_three_boots_lock(tmp_path):
    s = store(tmp_path)
    path = tmp_path / "console-lockout.json"
    clock = SetClock(T0)
    results = []
    for boot in range(3):
        auth = _boot(s, path, clock)
        results += [auth.check(who, "000000", clock.wall)[0] for who in ("ana", "ivo", "nobody", "ivo")]
        clock.advance(30)
    assert results[:4] == [FAILED] * 4 and results[4] == LOCKED and results[-1] == LOCKED


def test_a_damaged_lockout_file_locks_the_console(tmp_path):
    s = store(tmp_path)
    path = tmp_path / "console-lockout.json"
    path.write_bytes(b"\xff{not json")
    assert _boot(s, path, SetClock(T0)).locked()


def test_malformed_store_is_named(tmp_path):
    path = tmp_path / "people.toml"
    path.write_text('[person.ana]\nrole = "boss"\nnumber = 1\nsecret = "AAAA"\n')
    with pytest.raises(AuthError, match="person.ana.role must be technician or installer"):
        PeopleStore(path)
