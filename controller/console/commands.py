"""One command model for the console and the downlink.

Every command a person or the head end can give is one row of COMMANDS:
its words, who may give it (access level), where it may come from (console,
downlink), its arguments, and — for commands that change what the cabinet
does — the core command it becomes.  The console parses a typed line, the
downlink decodes a signed message; both end as a ``Request`` that goes
through the same path into the scan loop, so a remote arm and a console arm
are journaled and executed identically.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from controller.core import events as ev
from controller.errors import CabguardError
from rules.duration import parse_ms

ANYONE = 0
TECHNICIAN = 1
INSTALLER = 2
LEVEL_NAMES = ("anyone", "technician", "installer")



class CommandError(CabguardError):
    """A command that cannot be parsed or is not allowed."""


def parse_duration(text: str) -> int:
    """'90s', '30m', '2h' or '1h30m' → milliseconds (rules/duration.py)."""
    ms = parse_ms(text)
    if ms is None:
        raise CommandError("{!r} is not a duration: write it like 90s, 30m, 2h or 1h30m".format(text))
    return ms


DAY_MS = 86_400_000
# The largest number a command takes: whatever comes in from outside has a bound.
MAX_INT = 1_000_000


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str              # "duration" | "int" | "word" | "text"
    optional: bool = False
    help: str = ""
    most: int | None = None    # the largest int, or duration in ms (default MAX_INT, DAY_MS)

    def convert(self, text: str) -> int | str:
        if self.kind == "duration":
            most = self.most or DAY_MS
            if len(text) > 16 or parse_duration(text) > most:
                raise CommandError("{} {!r} is too long: at most {} min".format(self.name, text[:16], most // 60_000))
            return parse_duration(text)
        if self.kind == "int":
            most = self.most or MAX_INT
            if not (text.isascii() and text.isdigit()):
                raise CommandError("{} must be a whole number, not {!r}".format(self.name, text[:16]))
            if len(text) > 9 or int(text) > most:
                raise CommandError("{} must be at most {}, not {}".format(self.name, most, text[:16]))
            return int(text)
        if self.kind == "word" and not re.fullmatch(r"[A-Za-z0-9_.\-*]+", text):
            raise CommandError("{} must be one word, not {!r}".format(self.name, text))
        return text


@dataclass(frozen=True)
class CommandSpec:
    name: str
    level: int
    summary: str
    args: tuple[Arg, ...] = ()
    core: int | None = None    # the core command it becomes, if any
    console: bool = True
    downlink: bool = False
    details: str = ""

    @property
    def usage(self) -> str:
        words = [self.name] + [("[{}]" if a.optional else "{}").format(a.name.upper()) for a in self.args]
        return " ".join(words)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("help", ANYONE, "list commands, or explain one", (Arg("command", "text", True),)),
    CommandSpec("status", ANYONE, "mode, alarms, devices online, last event"),
    CommandSpec("version", ANYONE, "program and rule-table versions"),
    CommandSpec("login", ANYONE, "log in with your id and the code from your authenticator",
                (Arg("id", "word"), Arg("code", "word"))),
    CommandSpec("logout", ANYONE, "end the session"),
    CommandSpec("arm", TECHNICIAN, "arm the cabinet (exit delay first)", core=ev.CMD_ARM, downlink=True),
    CommandSpec("disarm", TECHNICIAN, "disarm the cabinet", core=ev.CMD_DISARM, downlink=True),
    CommandSpec("maint start", TECHNICIAN, "start a maintenance visit (alarms suppressed, capped)",
                (Arg("duration", "duration", help="e.g. 30m"),), core=ev.CMD_MAINT_START, downlink=True),
    CommandSpec("maint stop", TECHNICIAN, "end the visit; the cabinet re-arms if it was armed",
                core=ev.CMD_MAINT_STOP, downlink=True),
    CommandSpec("ack", TECHNICIAN, "acknowledge a latched alarm", core=ev.CMD_ACK, downlink=True),
    CommandSpec("silence", TECHNICIAN, "silence the siren (the strobe stays on)", core=ev.CMD_SILENCE,
                downlink=True),
    CommandSpec("test siren", TECHNICIAN, "sound the siren briefly (disarmed or maintenance only)",
                (Arg("seconds", "int", True, most=60),), core=ev.CMD_TEST_SIREN),
    CommandSpec("test strobe", TECHNICIAN, "flash the strobe briefly (disarmed or maintenance only)",
                (Arg("seconds", "int", True, most=60),), core=ev.CMD_TEST_STROBE),
    CommandSpec("lock", TECHNICIAN, "lock the battery output", core=ev.CMD_LOCK, downlink=True),
    CommandSpec("unlock", INSTALLER, "unlock the battery output", core=ev.CMD_UNLOCK, downlink=True),
    CommandSpec("signals", TECHNICIAN, "live view of signals (Enter or Ctrl-C stops it)",
                (Arg("pattern", "word", True, "e.g. io.* or bms1.temp*"),)),
    CommandSpec("events", TECHNICIAN, "the last events", (Arg("count", "int", True, most=10_000),)),
    CommandSpec("devices", TECHNICIAN, "each device: online, counters, last error"),
    CommandSpec("bus scan", TECHNICIAN, "find the slaves answering on a bus (between the gateway's polls)",
                (Arg("bus", "word", help="a [[bus]] name of the site config"),
                 Arg("addresses", "word", True, "A-B or A, e.g. 1-16 (default 1-247)"))),
    CommandSpec("pos survey", INSTALLER, "take the last minute's GNSS fixes as the cabinet's place (commissioning)"),
    CommandSpec("config check", INSTALLER, "check the site config on disk"),
    CommandSpec("config show", INSTALLER, "show the running config"),
    CommandSpec("rules info", INSTALLER, "the running rule table (source hash, rules, MAC kid) and anomaly model"),
    CommandSpec("rules load", INSTALLER, "load and verify a compiled rule table",
                (Arg("path", "text"),), downlink=True),
    CommandSpec("keys rotate", INSTALLER, "start a new record key epoch", downlink=True),
    CommandSpec("tech enrol", INSTALLER, "enrol a person; prints their otpauth:// URI",
                (Arg("id", "word"), Arg("role", "word", True, "technician (default) or installer"))),
    CommandSpec("grant", INSTALLER, "installer grant from the head end (downlink only)",
                (Arg("minutes", "int", most=7 * 24 * 60),), console=False, downlink=True),
)

BY_NAME = {c.name: c for c in COMMANDS}


@dataclass
class Request:
    """A parsed command on its way to the scan loop."""

    spec: CommandSpec
    args: dict[str, int | str] = field(default_factory=dict)
    source: str = "console"    # "console" | "downlink"
    actor: str = ""            # person id, or "headend"

    def core_command(self) -> tuple[int, int] | None:
        if self.spec.core is None:
            return None
        arg = 0
        if "duration" in self.args:
            arg = int(self.args["duration"])
        elif "seconds" in self.args:
            arg = int(self.args["seconds"]) * 1000
        return (self.spec.core, arg)


def suggestions(text: str, source: str = "console") -> list[str]:
    names = [c.name for c in COMMANDS if (c.console if source == "console" else c.downlink)]
    return difflib.get_close_matches(text, names, n=3, cutoff=0.5)


def find(words: list[str], source: str = "console") -> tuple[CommandSpec, list[str]]:
    """The longest command matching the leading words, and the rest."""
    for n in (2, 1):
        name = " ".join(words[:n])
        spec = BY_NAME.get(name)
        if spec and (spec.console if source == "console" else spec.downlink):
            return spec, words[n:]
    typed = " ".join(words[:2])
    close = suggestions(typed, source) or suggestions(words[0], source)
    hint = " Did you mean: {}?".format(", ".join(close)) if close else " Type 'help' for the list."
    raise CommandError("unknown command '{}'.{}".format(typed, hint))


def bind(spec: CommandSpec, values: list[str]) -> dict[str, int | str]:
    """Match argument words to the spec; CommandError shows the usage."""
    args: dict[str, int | str] = {}
    if spec.args and spec.args[-1].kind == "text" and len(values) > len(spec.args):
        values = values[:len(spec.args) - 1] + [" ".join(values[len(spec.args) - 1:])]
    if len(values) > len(spec.args):
        raise CommandError("too many arguments; usage: {}".format(spec.usage))
    for i, arg in enumerate(spec.args):
        if i < len(values):
            args[arg.name] = arg.convert(values[i])
        elif not arg.optional:
            raise CommandError("missing {}; usage: {}".format(arg.name.upper(), spec.usage))
    return args


def parse(line: str, source: str = "console", actor: str = "") -> Request:
    words = line.split()
    if not words:
        raise CommandError("empty command")
    spec, rest = find([w.lower() if i < 2 else w for i, w in enumerate(words)], source)
    return Request(spec, bind(spec, rest), source, actor)
