import os

import pytest

from controller.console.auth import (
    DURESS, FAILED, LOCKED, OK, Authenticator, AuthError, PeopleStore, code_at, duress_variant,
    otpauth_uri,
)

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


def test_five_failures_lock_for_fifteen_minutes_whoever_tries(tmp_path):
    s = store(tmp_path)
    auth = Authenticator(s)
    results = [auth.check(who, "000000", T0 + i)[0] for i, who in enumerate(["ana", "ivo", "eve", "ana", "x"])]
    assert results == [FAILED, FAILED, FAILED, FAILED, LOCKED]
    good = code_at(s.people["ana"].secret, T0 + 10)
    assert auth.check("ana", good, T0 + 10)[0] == LOCKED
    later = T0 + 4 + 900
    assert auth.check("ana", code_at(s.people["ana"].secret, later), later)[0] == OK


def test_malformed_store_is_named(tmp_path):
    path = tmp_path / "people.toml"
    path.write_text('[person.ana]\nrole = "boss"\nnumber = 1\nsecret = "AAAA"\n')
    with pytest.raises(AuthError, match="person.ana.role must be technician or installer"):
        PeopleStore(path)
