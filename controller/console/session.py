"""One console session: who is logged in, what they may do, what to answer.

Sans-I/O: ``handle(line, wall_s)`` returns the text to print; everything
the session needs from the gateway goes through ``GatewayView`` (status,
signals, the command path into the scan loop, the audit trail), so the same
session runs on a serial port, a pty or the local terminal.

Access follows EN 50131's levels: anyone may look (status, version,
help); a technician logs in with their own TOTP code; an installer needs,
besides their own code, a level-2 grant in force: a technician logged in
earlier in the same session, or a signed head-end grant that has not
expired.  Every line typed and every login attempt is audited with the
person's id.  A failed login never says which part was wrong.
"""

from __future__ import annotations

import fnmatch
from typing import Protocol

from controller.console import commands as cm
from controller.console.auth import DURESS, LOCKED, OK, AuthError, Authenticator, Person
from controller.errors import CabguardError

LOGIN_FAILED = "login failed"


class GatewayView(Protocol):
    gateway_id: str

    def status_text(self) -> str: ...
    def version_text(self) -> str: ...
    def signal_rows(self) -> list[tuple[str, int, str]]: ...
    def events_tail(self, count: int) -> list[str]: ...
    def devices_text(self) -> str: ...
    def submit(self, request: cm.Request) -> str: ...
    def host_action(self, request: cm.Request) -> str: ...
    def audit(self, actor: str, what: str, outcome: str) -> None: ...
    def alert(self, kind: str, person: Person | None) -> None: ...
    def grant_active(self, wall_s: float) -> bool: ...


class Session:
    def __init__(self, view: GatewayView, auth: Authenticator, idle_s: int = 300):
        self.view = view
        self.auth = auth
        self.idle_s = idle_s
        self.person: Person | None = None
        self.level = cm.ANYONE
        self.technician_seen = False  # a level-2 login happened in this session
        self.last_input = 0.0
        self.live_pattern: str | None = None

    @property
    def actor(self) -> str:
        return self.person.ident if self.person else "-"

    def prompt(self) -> str:
        who = cm.LEVEL_NAMES[self.level] + (" " + self.person.ident if self.person else "")
        return "{} ({})> ".format(self.view.gateway_id, who)

    def idle_check(self, wall_s: float) -> str | None:
        """Log out an idle session; returns the message to print, if any."""
        if self.person and wall_s - self.last_input > self.idle_s:
            self.view.audit(self.actor, "session", "idle timeout")
            self._logout()
            return "Session timed out; logged out."
        return None

    def _logout(self) -> None:
        self.person = None
        self.level = cm.ANYONE
        self.technician_seen = False
        self.live_pattern = None

    def handle(self, line: str, wall_s: float) -> str:
        self.last_input = wall_s
        line = line.strip()
        if not line:
            return ""
        try:
            req = cm.parse(line, "console", self.actor)
        except cm.CommandError as e:
            self.view.audit(self.actor, _redact(line), "error: {}".format(e))
            return str(e)
        if req.spec.name == "login":
            return self._login(str(req.args["id"]), str(req.args["code"]), wall_s)
        if req.spec.level > self.level:
            self.view.audit(self.actor, line, "refused: needs {}".format(cm.LEVEL_NAMES[req.spec.level]))
            return "'{}' needs {} access; log in first (help login).".format(
                req.spec.name, cm.LEVEL_NAMES[req.spec.level])
        try:
            answer = self._run(req, wall_s)
        except CabguardError as e:
            answer = "failed: {}".format(e)
        self.view.audit(self.actor, line, answer.splitlines()[0] if answer else "ok")
        return answer

    def _login(self, ident: str, code: str, wall_s: float) -> str:
        person = self.auth.store.people.get(ident)
        # An installer without a grant is refused like a wrong code, and counts
        # as one: the answer and the lockout must not tell installers apart.
        allowed = not (person and person.level == cm.INSTALLER and not (
            self.technician_seen or self.view.grant_active(wall_s)))
        try:
            was_locked = self.auth.locked()
            kind, person = self.auth.check(ident, code, wall_s, allowed)
        except AuthError as e:   # the count cannot be kept: no login (fail closed)
            self.view.audit(ident, "login", "refused: {}".format(e))
            return LOGIN_FAILED
        if kind == LOCKED:
            self.view.audit(ident, "login", "locked out")
            if not was_locked:  # one alarm per lockout, however often they try during it
                self.view.alert("console_lockout", None)
            return "Console locked after repeated failures; try again later."
        if person is None:
            self.view.audit(ident, "login", "failed" if allowed else "refused: installer without a level-2 grant")
            return LOGIN_FAILED
        if kind == DURESS:
            self.view.alert("duress", person)  # silent: the answer below is the normal one
        self.person = person
        self.level = person.level
        self.technician_seen = self.technician_seen or person.level >= cm.TECHNICIAN
        self.view.audit(ident, "login", "ok" if kind == OK else "ok (duress)")
        return "Logged in as {} ({}).".format(ident, person.role)

    def _run(self, req: cm.Request, wall_s: float) -> str:
        name = req.spec.name
        if name == "help":
            return help_text(str(req.args.get("command", "")), self.level)
        if name == "logout":
            self._logout()
            return "Logged out."
        if name == "status":
            return self.view.status_text()
        if name == "version":
            return self.view.version_text()
        if name == "events":
            return "\n".join(self.view.events_tail(int(req.args.get("count", 20)))) or "(no events yet)"
        if name == "devices":
            return self.view.devices_text()
        if name == "signals":
            self.live_pattern = str(req.args.get("pattern", "*"))
            return self.live_view()
        if req.spec.core is not None:
            return self.view.submit(req)
        return self.view.host_action(req)

    def live_view(self) -> str:
        pattern = self.live_pattern or "*"
        rows = [r for r in self.view.signal_rows() if fnmatch.fnmatchcase(r[0], pattern)]
        if not rows:
            return "no signal matches {!r}".format(pattern)
        return "\n".join("{:<28} {:>10} {}".format(n, v, u) for n, v, u in rows)

    def stop_live(self) -> None:
        self.live_pattern = None


def _redact(line: str) -> str:
    """Never write a typed code into the audit trail."""
    words = line.split()
    if words and words[0].lower() == "login":
        return " ".join(words[:2] + ["******"] * (len(words) > 2))
    return line


def help_text(topic: str, level: int) -> str:
    if topic:
        try:
            spec, _ = cm.find(topic.split())
        except cm.CommandError as e:
            return str(e)
        lines = ["{}  ({} access)".format(spec.usage, cm.LEVEL_NAMES[spec.level]), "  " + spec.summary]
        lines += ["  {}: {}".format(a.name.upper(), a.help) for a in spec.args if a.help]
        if spec.name == "login":
            lines.append("  Installers need a technician login in this session first, or a head-end grant.")
        return "\n".join(lines)
    rows = ["{:<22} {}".format(c.usage, c.summary) for c in cm.COMMANDS if c.console and c.level <= level]
    hidden = sum(1 for c in cm.COMMANDS if c.console and c.level > level)
    if hidden:
        rows.append("({} more after login; 'help CMD' explains one)".format(hidden))
    return "\n".join(rows)
