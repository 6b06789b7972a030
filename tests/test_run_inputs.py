"""`cabguard run` never crashes on its inputs (issue 23, finding 5): a config
or profile nested too deep falls back to the last good config; a junk
people file, a rule table that is /dev/zero, an installer key that is a
FIFO leave the gateway running in its documented safe state, with the
reason journaled."""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Callable

import pytest

from controller.console.auth import AuthError, PeopleStore
from controller.core import modes
from controller.gateway.config import ConfigError
from controller.gateway.run import build
from controller.journal import records as R
from controller.journal.evidence import verified_records
from drivers.keys import EpochKeys, load_key
from tests.hostile import DEEP, deep_toml
from tests.test_runtime import cabinet  # noqa: F401  (the fixture: simulator, keys, site config)
from tests.waiting import wait_until

DEEP_TOML = "a = " + "[" * DEEP + "]" * DEEP + "\n"
CONSOLE = '\n[console]\nport = "pty:{d}/console"\npeople = "{people}"\n'
RULES = '\n[rules]\ntable = "{table}"\nkey = "{d}/keys/installer.key"\n'


def _start(site):
    # --state-dir, as for a config that cannot be read (docs/runtime.md)
    services = build(str(site), str(site.parent / "state"))
    thread = threading.Thread(target=services.gateway.run, daemon=True)
    thread.start()
    return services, thread


def _stop(services, thread):
    services.gateway.stop_event.set()
    thread.join(5)
    services.stop("test over")


def _health(d) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for rec in verified_records(d / "journal", EpochKeys(load_key(d / "keys" / "record.key"))):
        if rec[R.TYPE] == R.HEALTH:
            found.setdefault(rec[R.DATA][R.HEALTH_CODE], []).append(rec[R.DATA][R.HEALTH_DETAIL])
    return found


def _run_once(site):
    services, thread = _start(site)
    assert wait_until(lambda: services.gateway.state.scans > 3)
    _stop(services, thread)


@pytest.mark.parametrize("damage,problem", [("deep", "nested too deep"), ("address", "device[0].address")])
def test_a_bad_new_config_falls_back_to_the_last_good_one(cabinet, damage, problem):  # noqa: F811
    _sim, site, d = cabinet
    _run_once(site)                                    # a clean start: kept as last good
    good = site.read_text()
    site.write_text(DEEP_TOML + good if damage == "deep" else re.sub(r"(?m)^address = 1\b", "address = 0", good, count=1))
    services, thread = _start(site)
    try:
        assert services.gateway.site.config.path.endswith("last-good.toml")
    finally:
        _stop(services, thread)
    refusals = _health(d)[R.HEALTH_CONFIG_FALLBACK]
    assert any(problem in why and str(site) in why for why in refusals), refusals


def test_a_bad_config_without_a_last_good_one_is_refused(cabinet):  # noqa: F811
    _sim, site, _d = cabinet
    site.write_text(DEEP_TOML + site.read_text())
    with pytest.raises(ConfigError, match="nested too deep"):
        build(str(site), str(site.parent / "state"))


def test_a_profile_nested_too_deep_falls_back_to_the_last_good_config(cabinet, tmp_path):  # noqa: F811
    _sim, site, d = cabinet
    _run_once(site)
    profile = tmp_path / "deep-profile.toml"
    profile.write_text(DEEP_TOML)
    site.write_text(site.read_text().replace('profile = "relay4"', 'profile = "{}"'.format(profile)))
    services, thread = _start(site)
    try:
        assert services.gateway.site.config.path.endswith("last-good.toml")
    finally:
        _stop(services, thread)
    assert any(str(profile) in why for why in _health(d)[R.HEALTH_CONFIG_FALLBACK])


def _tomllib_calls(read: Callable[[], object]) -> list[str]:
    """The functions of tomllib that run while ``read()`` does (profiled, not replaced)."""
    calls: list[str] = []

    def profile(frame, event, _arg):
        if event == "call" and "tomllib" in frame.f_code.co_filename:
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        read()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("name", ["toml-deep-array", "toml-deep-inline", "toml-deep-unclosed"])
def test_a_deep_people_file_is_refused_before_tomllib_parses_it(tmp_path, name):
    """tomllib recurses once a level: a deep file read in this process once made
    its RecursionError's unwinding drop "Exception ignored" noise that failed
    pytest's unraisable hook (CI).  drivers/safefile.py counts the brackets
    first, so tomllib never sees such a file and nothing recurses."""
    path = tmp_path / "people.toml"
    path.write_text('[person.ana]\nrole = "technician"\nnumber = 1\nsecret = "GEZDGNBVGY3TQOJQ"\n')
    assert "loads" in _tomllib_calls(lambda: PeopleStore(path))       # a good file is tomllib's to read
    path.write_bytes(deep_toml()[name])

    def refused() -> None:
        with pytest.raises(AuthError, match="people.toml: cannot read the enrolled people: nested too deep to read"):
            PeopleStore(path)
    assert _tomllib_calls(refused) == []


# Only junk here: the hostile suite (test_hostile.py) gives deep files to
# `cabguard run` as a real process, and the test above reads a deep people file.
@pytest.mark.parametrize("people", [b"\xff\xfe junk \x00\x81" * 40], ids=["junk"])
def test_an_unreadable_people_file_leaves_a_console_nobody_can_log_in_to(cabinet, people):  # noqa: F811
    _sim, site, d = cabinet
    path = d / "people.toml"
    path.write_bytes(people)
    site.write_text(site.read_text() + CONSOLE.format(d=d, people=path))
    services, thread = _start(site)
    try:
        assert services.path.people.people == {}
        with pytest.raises(Exception, match="could not be read"):
            services.path.people.enrol("ana", "technician")     # the junk is kept for a person to see
    finally:
        _stop(services, thread)
    assert path.read_bytes() == people
    assert any(str(path) in why for why in _health(d)[R.HEALTH_INPUT_REFUSED])


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "deep-cbor"])
def test_an_unreadable_rule_table_runs_on_the_entry_delay_with_the_fault_raised(cabinet, kind):  # noqa: F811
    _sim, site, d = cabinet
    table = {"dev-zero": "/dev/zero", "fifo": str(d / "table.fifo"), "deep-cbor": str(d / "deep.cbor")}[kind]
    if kind == "fifo":
        os.mkfifo(table)
    elif kind == "deep-cbor":
        (d / "deep.cbor").write_bytes(b"\x81" * DEEP + b"\x00")
    site.write_text(site.read_text() + RULES.format(d=d, table=table))
    services, thread = _start(site)
    try:
        gw = services.gateway
        assert wait_until(lambda: gw.state.mode == modes.FAULT)
    finally:
        _stop(services, thread)
    assert any(table in why for why in _health(d)[R.HEALTH_TABLE_REFUSED])


def test_an_installer_key_that_cannot_be_read_is_a_refused_table_not_a_crash(cabinet):  # noqa: F811
    _sim, site, d = cabinet
    key = d / "keys" / "installer.key"
    key.unlink()
    os.mkfifo(key, 0o600)
    site.write_text(site.read_text() + RULES.format(d=d, table=d / "none.cbor"))
    services, thread = _start(site)
    try:
        assert wait_until(lambda: services.gateway.state.mode == modes.FAULT)
    finally:
        _stop(services, thread)
    assert any(str(key) in why for why in _health(d)[R.HEALTH_TABLE_REFUSED])


def test_a_head_end_key_that_cannot_be_read_leaves_the_uplink_without_commands(cabinet):  # noqa: F811
    _sim, site, d = cabinet
    key = d / "keys" / "command.key"
    key.unlink()
    os.mkfifo(key, 0o600)
    text = site.read_text().replace("[keys]\n", '[keys]\nheadend = "{}"\n'.format(key))
    site.write_text(text + '\n[uplink]\nbroker = "127.0.0.1:9"\n')
    services, thread = _start(site)
    try:
        assert services.uplink is not None and services.gateway.state.mode == modes.DISARMED
    finally:
        _stop(services, thread)
    assert any(str(key) in why for why in _health(d)[R.HEALTH_INPUT_REFUSED])
