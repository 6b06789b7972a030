from controller.console.auth import Authenticator, PeopleStore, code_at, duress_variant
from controller.console.session import LOGIN_FAILED, Session

T0 = 1_790_000_000.0


class View:
    """A gateway view that records what the session asked of it."""

    gateway_id = "gw-1"

    def __init__(self):
        self.submitted, self.actions, self.audits, self.alerts = [], [], [], []
        self.grant = False

    def status_text(self):
        return "mode armed"

    def version_text(self):
        return "cabguard 0.1.0"

    def signal_rows(self):
        return [("io.door_open", 0, "bool"), ("bms1.pack_mv", 409600, "mV")]

    def events_tail(self, count):
        return ["event {}".format(i) for i in range(count)]

    def devices_text(self):
        return "io online"

    def submit(self, request):
        self.submitted.append((request.spec.name, request.core_command(), request.actor))
        return "ok"

    def host_action(self, request):
        self.actions.append(request.spec.name)
        return "done"

    def audit(self, actor, what, outcome):
        self.audits.append((actor, what, outcome))

    def alert(self, kind, person):
        self.alerts.append((kind, person.ident if person else None))

    def grant_active(self, wall_s):
        return self.grant


def make(tmp_path):
    store = PeopleStore(tmp_path / "people.toml")
    store.enrol("ana", "technician")
    store.enrol("ivo", "installer")
    view = View()
    return store, view, Session(view, Authenticator(store), idle_s=300)


def login(session, store, who, t, duress=False):
    code = code_at(store.people[who].secret, t)
    return session.handle("login {} {}".format(who, duress_variant(code) if duress else code), t)


def test_anyone_sees_status_but_not_maintenance(tmp_path):
    store, view, s = make(tmp_path)
    assert s.prompt() == "gw-1 (anyone)> "
    assert s.handle("status", T0) == "mode armed"
    assert "needs technician access" in s.handle("maint start 30m", T0)
    assert view.submitted == []


def test_technician_maintenance_goes_through_the_command_path(tmp_path):
    store, view, s = make(tmp_path)
    assert login(s, store, "ana", T0) == "Logged in as ana (technician)."
    assert s.prompt() == "gw-1 (technician ana)> "
    s.handle("maint start 45m", T0 + 1)
    assert view.submitted == [("maint start", (3, 2700000), "ana")]
    assert ("ana", "maint start 45m", "ok") in view.audits


def test_failed_login_is_generic_and_code_never_audited(tmp_path):
    store, view, s = make(tmp_path)
    assert s.handle("login ana 123456", T0) == LOGIN_FAILED
    assert s.handle("login nobody 123456", T0) == LOGIN_FAILED
    assert all("123456" not in what for _, what, _ in view.audits)


def test_duress_looks_normal_and_alerts_silently(tmp_path):
    store, view, s = make(tmp_path)
    assert login(s, store, "ana", T0, duress=True) == "Logged in as ana (technician)."
    assert view.alerts == [("duress", "ana")]


def test_installer_needs_a_level_two_grant(tmp_path):
    store, view, s = make(tmp_path)
    assert login(s, store, "ivo", T0) == LOGIN_FAILED
    login(s, store, "ana", T0 + 30)
    assert login(s, store, "ivo", T0 + 30) == "Logged in as ivo (installer)."
    assert s.handle("keys rotate", T0 + 31) == "done"


def test_installer_with_head_end_grant(tmp_path):
    store, view, s = make(tmp_path)
    view.grant = True
    assert login(s, store, "ivo", T0) == "Logged in as ivo (installer)."


def test_lockout_raises_an_alert(tmp_path):
    store, view, s = make(tmp_path)
    for i in range(5):
        out = s.handle("login ana 00000{}".format(i), T0 + i)
    assert "locked" in out and view.alerts == [("console_lockout", None)]
    assert "locked" in login(s, store, "ana", T0 + 10)
    assert view.alerts == [("console_lockout", None)]   # one alarm per lockout
    assert view.audits[-1] == ("ana", "login", "locked out")


def test_installer_failures_count_like_anyone_s_and_raise_the_lockout(tmp_path):
    store, view, s = make(tmp_path)
    answers = {login(s, store, "ivo", T0 + 30 * i) for i in range(4)}    # right codes, no grant
    answers.add(s.handle("login ivo 123456", T0 + 150))
    assert answers == {LOGIN_FAILED, "Console locked after repeated failures; try again later."}
    assert view.alerts == [("console_lockout", None)]
    assert "locked" in login(s, store, "ana", T0 + 180)


def test_a_lockout_that_cannot_be_written_refuses_the_login(tmp_path):
    store, view, _s = make(tmp_path)
    s = Session(view, Authenticator(store, state_path=tmp_path / "no-such-folder" / "lockout.json"))
    assert s.handle("login ana 000000", T0) == LOGIN_FAILED
    assert "cannot write the console lockout" in view.audits[-1][2]
    assert login(s, store, "ana", T0) == LOGIN_FAILED       # a good code, but the count cannot be cleared


def test_idle_timeout_logs_out(tmp_path):
    store, view, s = make(tmp_path)
    login(s, store, "ana", T0)
    assert s.idle_check(T0 + 100) is None
    assert "timed out" in s.idle_check(T0 + 301)
    assert s.prompt() == "gw-1 (anyone)> "


def test_unknown_command_suggests_and_live_view_filters(tmp_path):
    store, view, s = make(tmp_path)
    assert "Did you mean: status" in s.handle("statsu", T0)
    login(s, store, "ana", T0)
    assert s.handle("signals io.*", T0 + 1).startswith("io.door_open")
    assert "bms1" not in s.handle("signals io.*", T0 + 1)
    assert "maint start" in s.handle("help", T0 + 1)


def test_a_unit_of_scale_0_shows_without_an_exponent():
    """Finding 10: the console showed alarm_bits' unit as "bitse0"."""
    from controller.console.view import unit_text

    assert unit_text("bits", 0) == "bits" and unit_text("V", -3) == "mV" and unit_text("W", 2) == "We2"
