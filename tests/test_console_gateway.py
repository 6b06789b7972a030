"""The console on a real pty in front of a real gateway: journal, alarms upstream, robustness."""

import json
import threading
import time

import cbor2
import pytest

from controller.console.auth import PeopleStore, code_at, duress_variant
from controller.core import modes
from controller.core.events import ALARM, CRITICAL, EV_DURESS
from controller.gateway.loop import hide_secrets
from controller.gateway.run import build
from controller.journal import records as R
from controller.journal.segments import iter_frames, list_segments
from drivers.cose import decode
from drivers.keys import EpochKeys, load_key
from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice
from tests.journaling import flashed_keys
from tests.test_console_server import Terminal, abuse
from tests.test_runtime import SITE, wait_until

CONSOLE = """
[console]
port = "pty:{d}/console"
people = "{d}/people.toml"
max_failures = 3
lockout_s = 60
"""
PROMPT = b")> "


@pytest.fixture
def visit(tmp_path):
    """A running gateway with its console on a pty, and a terminal on it."""
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])]).start()
    sim.device("io").set(door_bolt=1, supply_mv=24000)
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port=sim.bus("rs485").port) + CONSOLE.format(d=tmp_path))
    people = PeopleStore(tmp_path / "people.toml")
    for ident, role in (("ana", "technician"), ("ben", "technician"), ("ivo", "installer")):
        people.enrol(ident, role)
    services = build(str(site))
    gw = services.gateway
    urgent: list[int] = []
    gw.health.urgent_listeners.append(urgent.append)
    thread = threading.Thread(target=gw.run, daemon=True)
    thread.start()
    v = Visit(services, people, urgent, tmp_path)
    yield v
    v.term.close()
    gw.stop_event.set()
    thread.join(5)
    services.stop("test over")
    sim.stop()


class Visit:
    def __init__(self, services, people, urgent, d):
        self.services, self.gw, self.people, self.urgent, self.d = (
            services, services.gateway, people, urgent, d)
        self.attach()

    def attach(self) -> Terminal:
        """Open the console's pty as picocom would, and get past any banner."""
        self.term = Terminal(self.d / "console")
        self.term.send(b"version\r")
        self.term.expect(b"rules: ")
        self.term.expect(PROMPT)
        return self.term

    def say(self, line: str) -> bytes:
        """Type a line; what came back up to the next prompt, without the echo."""
        self.term.send(line.encode() + b"\r")
        out = self.term.expect(PROMPT, timeout=15)
        echo = line.encode() + b"\r\n"
        assert out.startswith(echo), out
        return out[len(echo):]

    def code(self, who: str, offset_s: float = 0.0) -> str:
        return code_at(self.people.people[who].secret, time.time() + offset_s)

    def records(self) -> list[dict]:
        assert self.gw.journal.flush(5)
        keys = EpochKeys(load_key(self.d / "keys" / "record.key"))
        out = []
        for _n, path in list_segments(self.d / "journal"):
            for item in iter_frames(path.read_bytes()):
                msg = decode(item[1])
                out.append(cbor2.loads(msg.verify(keys.key_for(msg.kid).k)))
        return out


def test_every_login_attempt_and_command_is_journaled_with_the_person(visit):
    assert visit.say("login ana 000000").startswith(b"login failed\r\n")
    good = visit.code("ana")
    assert visit.say("login ana " + good) == b"Logged in as ana (technician).\r\ngw-test (technician ana)> "
    assert b"mode      disarmed" in visit.say("status")
    assert visit.say("maint start 10m").startswith(b"ok\r\n")
    assert b"Did you mean" in visit.say("maint strat 5m")
    assert wait_until(lambda: visit.gw.state.mode == modes.MAINTENANCE)
    recs = visit.records()
    logins = [(r[R.DATA][R.LOGIN_USER], r[R.DATA][R.LOGIN_OK]) for r in recs if r[R.TYPE] == R.LOGIN]
    assert logins == [("ana", False), ("ana", True)]
    commands = [r[R.DATA][R.COMMAND_NAME] for r in recs if r[R.TYPE] == R.COMMAND]
    assert "status by ana" in commands and "maint start 10m by ana" in commands
    assert "maint_start" in commands                      # the core's own record of it
    assert "maint strat 5m by ana" in commands            # even what did not parse
    raw = b"".join(p.read_bytes() for _n, p in list_segments(visit.d / "journal"))
    assert good.encode() not in raw and b"000000" not in raw  # codes are never written


def test_a_failed_login_never_says_which_part_was_wrong(visit):
    stale = code_at(visit.people.people["ana"].secret, time.time() - 300)
    answers = {visit.say("login nobody 123456"),
               visit.say("login ivo " + visit.code("ivo"))}     # the installer lacks a level-2 grant
    visit.say("login ana " + visit.code("ana"))                 # a good login clears the count ...
    visit.say("logout")                                         # ... (a third failure would lock: max_failures 3)
    answers.add(visit.say("login ana " + stale))
    assert answers == {b"login failed\r\ngw-test (anyone)> "}


def test_lockout_is_journaled_and_pushed_upstream_at_once(visit):
    for _ in range(2):
        visit.say("login ana 000000")
    assert visit.say("login ana 000000").startswith(b"Console locked")
    assert visit.say("login ana " + visit.code("ana")).startswith(b"Console locked")  # even the right code
    recs = {r[R.SEQ]: r for r in visit.records()}
    lockouts = [s for s, r in recs.items() if r[R.TYPE] == R.HEALTH
                and r[R.DATA][R.HEALTH_CODE] == R.HEALTH_CONSOLE_LOCKOUT]
    assert len(lockouts) == 1 and recs[lockouts[0]][R.SEVERITY] == ALARM
    assert lockouts[0] in visit.urgent
    saved = json.loads((visit.d / "state" / "console-lockout.json").read_text())
    assert saved["lock_left_s"] == 60                     # a restart keeps it (tests/test_console_auth.py)


def test_duress_looks_exactly_like_a_normal_login_and_alarms_silently_upstream(visit):
    visit.say("logout")
    normal = visit.say("login ana " + visit.code("ana"))
    visit.say("logout")
    duress = visit.say("login ana " + duress_variant(visit.code("ana", 30)))   # the next step's code
    assert duress == normal == b"Logged in as ana (technician).\r\ngw-test (technician ana)> "
    assert wait_until(lambda: any(r[R.TYPE] == EV_DURESS for r in visit.records()))
    record = next(r for r in visit.records() if r[R.TYPE] == EV_DURESS)
    assert record[R.SEVERITY] == CRITICAL and record[R.DATA][R.EVENT_A] == visit.people.people["ana"].number
    assert record[R.SEQ] in visit.urgent
    gw = visit.gw
    assert gw.state.mode == modes.DISARMED and gw.state.outputs[0] == 0 and gw.state.outputs[1] == 0
    assert gw.bank.outputs[0].device.pin.state == 0     # no local siren, ever
    assert b"duress" not in visit.say("events").lower()  # nor on the screen
    assert b"duress" not in visit.say("status").lower()


def test_installer_needs_a_technician_first_then_enrols_and_rotates_keys(visit):
    visit.say("login ana " + visit.code("ana"))
    assert visit.say("login ivo " + visit.code("ivo")).startswith(b"Logged in as ivo (installer).")
    out = visit.say("tech enrol cleo").decode()
    assert "otpauth://totp/cabguard%20gw-test%3Acleo?secret=" in out
    assert "cleo" in PeopleStore(visit.d / "people.toml").people
    assert visit.say("config check").decode().endswith(": OK\r\ngw-test (installer ivo)> ")
    shown = visit.say("config show").decode()
    assert 'id = "gw-test"' in shown and "[console]" in shown
    assert visit.say("rules info").startswith(b"no rule table")
    assert visit.say("keys rotate").startswith(b"record key rotated")
    recs = visit.records()
    assert [r[R.DATA][R.ROTATION_REASON] for r in recs if r[R.TYPE] == R.KEY_ROTATION] == [R.ROTATE_COMMAND]
    assert "tech enrol cleo by ivo" in [r[R.DATA][R.COMMAND_NAME] for r in recs if r[R.TYPE] == R.COMMAND]


def test_technician_tools_bus_scan_devices_and_events(visit):
    gw = visit.gw
    assert wait_until(lambda: gw.image[gw.catalog.index["io.online"]] == 1)
    visit.say("login ana " + visit.code("ana"))
    ok_before = gw.image[gw.catalog.index["io.comm_ok"]]
    scan = visit.say("bus scan rs485 1-8").decode()
    assert "addresses 1-8: 3 slave(s) answer" in scan
    assert [line.split()[1] for line in scan.splitlines() if line.startswith("  address")] == ["1", "2", "4"]
    assert gw.image[gw.catalog.index["io.comm_ok"]] > ok_before   # polls went on during the scan
    assert gw.image[gw.catalog.index["io.online"]] == 1
    assert b"no bus 'rs999'" in visit.say("bus scan rs999")
    devices = visit.say("devices").decode()
    assert "io         online" in devices and "bus rs485 address 1 profile io-dvt poll 100 ms" in devices
    assert b"started in mode disarmed" in visit.say("events 5")


def test_garbage_long_lines_ctrl_c_floods_and_pulled_cables_leave_it_usable(visit):
    gw, term = visit.gw, visit.term
    lateness_before = len(gw.lateness_ns)
    late_before = gw.timer.late_scans
    abuse(term, b"gw-test (anyone)> ", b"mode      disarmed", 200)
    visit.say("login ana " + visit.code("ana"))
    term.send(b"maint st")
    term.expect(b"maint st")
    term.close()                                   # the cable is pulled mid-command
    assert wait_until(lambda: any(r[R.TYPE] == R.COMMAND and r[R.DATA][R.COMMAND_NAME].startswith("session by ana")
                                  for r in visit.records()))
    visit.attach()
    assert visit.say("") == b"gw-test (anyone)> "   # logged out, the half line gone
    assert visit.say("maint start 5m").startswith(b"'maint start' needs technician access")
    assert gw.state.mode == modes.DISARMED
    # The loop kept its period all along (a late scan starts > 1/4 period late).
    assert len(gw.lateness_ns) > lateness_before
    assert gw.timer.late_scans - late_before <= 2


def test_config_show_hides_passwords_secrets_and_tokens():
    text = 'broker = "10.0.0.1:8883"\npassword = "hunter2"\n  api_token="t0k3n"  # from the portal\n' \
           'ca_file = "/etc/ca.pem"\nSecret_Key = 42'
    shown = hide_secrets(text)
    assert shown.splitlines() == ['broker = "10.0.0.1:8883"', 'password = "(hidden)"', '  api_token="(hidden)"',
                                  'ca_file = "/etc/ca.pem"', 'Secret_Key = "(hidden)"']
