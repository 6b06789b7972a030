"""Console logins: per-person TOTP codes, duress codes, single use, lockout.

Theory of operation
-------------------
Every technician and installer has their own TOTP secret (RFC 6238, SHA-1,
6 digits, 30 s), enrolled by an installer; the enrolment prints an
``otpauth://`` URI for their authenticator app.  A code is accepted for the
current step and one step either side (clock skew between phone and
gateway), and each step's code is accepted once per person, so a code read
over a shoulder cannot be replayed.

Duress: a person forced to log in adds one to the last digit of their code
(9 becomes 0).  The console then behaves exactly as for a normal login,
while the caller raises a silent duress alarm upstream.  The normal code is
checked first, so a duress code that happens to equal a neighbouring
step's normal code logs in normally (one chance in a few hundred thousand).

Lockout: after ``max_failures`` failed attempts (any person, any code) the
console refuses every login for ``lockout_s``; the caller raises an event.
A failure counts the same for every id, known or not, technician or
installer (an installer refused for want of a grant included), so no
answer and no count tells which ids are installers.  Messages never say
which part of a login was wrong.

The count and the lock survive a restart: each change is written to the
console's lockout file (atomic, fsync'd) before the answer.  The lock runs
on the monotonic clock, which a wall-clock jump cannot shorten; a restart
resumes it with the time left at the last write, less the time since then
only when the wall clock is trusted both then and now.  A restart therefore
never shortens a lockout, and an unreadable lockout file locks the console
for ``lockout_s`` (fail closed).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from controller.errors import CabguardError
from drivers.atomicfile import write_atomic
from drivers.clock import Clock
from drivers.safefile import KIB, InputFileError, parse_json, parse_toml, read_bytes, read_text

STEP_S = 30
DIGITS = 6
TECHNICIAN = 1
INSTALLER = 2
ROLE_LEVELS = {"technician": TECHNICIAN, "installer": INSTALLER}

OK = "ok"
DURESS = "duress"
FAILED = "failed"
LOCKED = "locked"


class AuthError(CabguardError):
    """A technician store that cannot be read or written."""


@dataclass
class Person:
    ident: str
    role: str
    number: int      # small integer for the core's duress event
    secret: bytes

    @property
    def level(self) -> int:
        return ROLE_LEVELS[self.role]


def duress_variant(code: str) -> str:
    """The documented duress transform: last digit + 1, modulo 10."""
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def _totp(secret: bytes) -> TOTP:
    return TOTP(secret, DIGITS, SHA1(), STEP_S, enforce_key_length=False)


def code_at(secret: bytes, wall_s: float) -> str:
    return _totp(secret).generate(int(wall_s)).decode()


def otpauth_uri(person: Person, gateway_id: str) -> str:
    label = quote("cabguard {}:{}".format(gateway_id, person.ident))
    secret = base64.b32encode(person.secret).decode().rstrip("=")
    return "otpauth://totp/{}?secret={}&issuer={}&algorithm=SHA1&digits={}&period={}".format(
        label, secret, quote("cabguard " + gateway_id), DIGITS, STEP_S)


class PeopleStore:
    """The enrolled people, in a TOML file of mode 0600 (secrets in base32)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.people: dict[str, Person] = {}
        self.refused = ""       # why the file could not be read (see ``refusing``)
        if self.path.exists():
            self._load()

    @classmethod
    def refusing(cls, path: str | Path, why: str) -> PeopleStore:
        """A store for a people file that could not be read: nobody can log in,
        and enrolling is refused rather than overwriting the file."""
        store = cls.__new__(cls)
        store.path, store.people, store.refused = Path(path), {}, why
        return store

    def _load(self) -> None:
        try:
            doc = parse_toml(read_text(self.path, "people file"), self.path, "people file")
        except InputFileError as e:
            raise AuthError("{}: cannot read the enrolled people: {}".format(self.path, e.problem)) from None
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise AuthError("{}: cannot read the enrolled people: {}".format(self.path, e)) from None
        people = doc.get("person", {})
        if not isinstance(people, dict):
            raise AuthError("{}: person must be a table of [person.ID] entries; re-enrol".format(self.path))
        for ident, entry in people.items():
            try:
                secret = base64.b32decode(entry["secret"] + "=" * (-len(entry["secret"]) % 8))
                person = Person(ident, entry["role"], int(entry["number"]), secret)
            except (KeyError, ValueError, TypeError) as e:
                raise AuthError("{}: person.{} is malformed ({}); re-enrol them".format(
                    self.path, ident, e)) from None
            if person.role not in ROLE_LEVELS:
                raise AuthError("{}: person.{}.role must be technician or installer".format(self.path, ident))
            self.people[ident] = person

    def enrol(self, ident: str, role: str) -> Person:
        if self.refused:
            raise AuthError("the people file could not be read, so no one is enrolled until it is fixed: "
                            "{}".format(self.refused))
        if role not in ROLE_LEVELS:
            raise AuthError("role must be technician or installer, not {!r}".format(role))
        if not ident.replace("-", "").replace("_", "").isalnum() or len(ident) > 32:
            raise AuthError("a person id is up to 32 letters, digits, '-' or '_'")
        number = self.people[ident].number if ident in self.people else \
            max([p.number for p in self.people.values()] + [0]) + 1
        person = Person(ident, role, number, secrets.token_bytes(20))
        self.people[ident] = person
        self._save()
        return person

    def _save(self) -> None:
        lines = []
        for p in sorted(self.people.values(), key=lambda p: p.number):
            lines += ["[person.{}]".format(p.ident), 'role = "{}"'.format(p.role),
                      "number = {}".format(p.number),
                      'secret = "{}"'.format(base64.b32encode(p.secret).decode()), ""]
        write_atomic(self.path, "\n".join(lines).encode())


class Authenticator:
    """Checks codes against the store; holds the failure count and lockout,
    persisted in ``state_path`` when one is given (the module's theory)."""

    def __init__(self, store: PeopleStore, max_failures: int = 5, lockout_s: int = 900,
                 state_path: str | Path | None = None, clock: Clock | None = None):
        self.store = store
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.state_path = Path(state_path) if state_path is not None else None
        self.clock = clock or Clock()
        self.failures = 0
        self._lock_ends_ns: int | None = None   # on the monotonic clock
        self.last_step: dict[str, int] = {}
        self._load()

    def locked(self) -> bool:
        if self._lock_ends_ns is None:
            return False
        if self.clock.monotonic_ns() < self._lock_ends_ns:
            return True
        self._lock_ends_ns = None
        self._save()   # over: a restart must not serve it again
        return False

    def check(self, ident: str, code: str, wall_s: float, allowed: bool = True) -> tuple[str, Person | None]:
        """(OK | DURESS | FAILED | LOCKED, the person on success).  ``allowed``
        False refuses even a right code, counted as any failure (an installer
        without a grant); the code is checked all the same, so it takes as long."""
        if self.locked():
            return LOCKED, None
        person = self.store.people.get(ident)
        found = self._match(person, code.strip(), wall_s) if person else None
        if found is None or not allowed:
            return self._failed()
        kind, step = found
        assert person is not None
        self.last_step[person.ident] = step
        if self.failures:
            self.failures = 0
            self._save()
        return kind, person

    def _failed(self) -> tuple[str, None]:
        self.failures += 1
        if self.failures < self.max_failures:
            self._save()
            return FAILED, None
        self.failures = 0
        self._lock_ends_ns = self.clock.monotonic_ns() + self.lockout_s * 1_000_000_000
        self._save()
        return LOCKED, None

    def _save(self) -> None:
        if self.state_path is None:
            return
        left_ns = 0 if self._lock_ends_ns is None else max(0, self._lock_ends_ns - self.clock.monotonic_ns())
        doc = {"failures": self.failures, "lock_left_s": -(-left_ns // 1_000_000_000),
               "written_wall_s": int(self.clock.wall_s()) if self.clock.trusted() else None}
        try:
            write_atomic(self.state_path, json.dumps(doc).encode())
        except OSError as e:
            raise AuthError("cannot write the console lockout {}: {}; check the state folder's disk "
                            "and permissions".format(self.state_path, e.strerror)) from None

    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            doc = parse_json(read_bytes(self.state_path, "console lockout file", 4 * KIB),
                             self.state_path, "console lockout file")
            failures, left, written = int(doc["failures"]), int(doc["lock_left_s"]), doc["written_wall_s"]
            if written is not None and not isinstance(written, int):
                raise TypeError("written_wall_s must be an integer or null")
        except (OSError, ValueError, KeyError, TypeError, InputFileError):
            failures, left, written = 0, self.lockout_s, None   # fail closed
        if written is not None and self.clock.trusted():
            elapsed = int(self.clock.wall_s()) - written
            left -= max(0, elapsed)
        self.failures = max(0, failures)
        if left > 0:
            self._lock_ends_ns = self.clock.monotonic_ns() + min(left, self.lockout_s) * 1_000_000_000

    def _match(self, person: Person, code: str, wall_s: float) -> tuple[str, int] | None:
        if len(code) != DIGITS or not code.isdigit():
            return None
        now_step = int(wall_s) // STEP_S
        used = self.last_step.get(person.ident, -1)
        for kind, transform in ((OK, lambda c: c), (DURESS, duress_variant)):
            for step in (now_step, now_step - 1, now_step + 1):
                if step <= used:
                    continue
                expected = transform(code_at(person.secret, step * STEP_S))
                if hmac.compare_digest(expected.encode(), code.encode()):
                    return kind, step
        return None
