"""Rule files: TOML ``[[rule]]`` tables, read and checked key by key (host only).

This module turns rule files into RuleSpec values that know where each key
sits in its file (line and column), so that every later error -- in the
``when`` expression too -- names file, line, column and rule id.  The
expression language itself is compiled by rules/compiler.py.  The language
is documented in docs/rules.md.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path

from controller.core.table import ACTION_BITS, MAX_WINDOW_MS, SEVERITY_NAMES, severity_code
from rules.duration import parse_ms
from rules.errors import Diagnostic
from drivers.safefile import TEXT_LIMIT, InputFileError, decode_utf8, parse_toml, read_bytes

# The default packs (theft, safety, health): the rules when none are given.
PACKS = Path(__file__).resolve().parent / "packs"

KEYS = ("id", "description", "when", "severity", "actions", "for", "clear_when", "latch", "devices",
        "needs_schedule")
REQUIRED = ("id", "when", "severity")
ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# The placeholder for templated rules, and the identifier of the same length
# that stands in for it while parsing (so that columns stay exact).
DEV = "{dev}"
DEV_NAME = "_DEV_"
_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]+)\s*=\s*")


def parse_duration(text: object, allow_zero: bool) -> int:
    """Milliseconds for ``"2s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``; ValueError says why."""
    if not isinstance(text, str):
        raise ValueError("a duration is text like \"30s\", \"5m\" or \"1h\", got {!r}".format(text))
    t = text.strip()
    if t.startswith("-"):
        raise ValueError("negative duration '{}': durations count forward, write e.g. \"{}\"".format(text, t[1:]))
    total = parse_ms(t)
    if total is None:
        raise ValueError("'{}' is not a duration: write a number and a unit (ms, s, m, h, d), "
                         "e.g. \"30s\", \"5m\", \"1h30m\"".format(text))
    if total == 0 and not allow_zero:
        raise ValueError("duration '{}' must be longer than 0".format(text))
    if total > MAX_WINDOW_MS:
        raise ValueError("duration '{}' is longer than the longest window, {} days".format(
            text, MAX_WINDOW_MS // 86400000))
    return total


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x' or 'y'?)`` for the closest names, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean {}?)".format(" or ".join("'{}'".format(c) for c in close))


class RuleSpec:
    """One ``[[rule]]`` table, checked, with where its keys are in the file."""

    def __init__(self, path: str, number: int, header_line: int):
        self.path = path
        self.number = number          # 1-based position among the file's rules
        self.header_line = header_line
        self.id = ""
        self.description = ""
        self.when = ""
        self.clear_when = ""
        self.severity = 0
        self.actions = 0
        self.for_ms = 0
        self.latch = False
        self.devices = ""             # a device class, for a templated rule
        self.needs_schedule = ""      # compiled only for a site that defines this schedule
        self.keys: dict[str, tuple[int, int]] = {}   # key -> (line, column of its value)

    def where(self, key: str) -> tuple[int, int]:
        return self.keys.get(key, (self.header_line, 1))

    def diag(self, key: str, message: str, rule_id: str | None = None) -> Diagnostic:
        line, col = self.where(key)
        return Diagnostic(self.path, line, col, self.id if rule_id is None else rule_id, message)

    def expr_position(self, key: str, lineno: int, col: int) -> tuple[int, int]:
        """File line and column of (lineno, col) inside the text of ``key``."""
        line, col0 = self.where(key)
        if lineno <= 1:
            return line, col0 + col
        return line + lineno - 1, col + 1


def _key_positions(text: str) -> list[tuple[int, dict[str, tuple[int, int]]]]:
    """For each ``[[rule]]`` header: its line and where each key's text starts."""
    rules: list[tuple[int, dict[str, tuple[int, int]]]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines, start=1):
        if _RULE_HEADER.match(line):
            rules.append((i, {}))
            continue
        m = _KEY_LINE.match(line)
        if m and rules and m.group(2) not in rules[-1][1]:
            start = m.end()
            rest = line[start:]
            if rest.startswith('"""') or rest.startswith("'''"):
                # A multi-line string: TOML drops a newline right after the quotes.
                pos = (i + 1, 1) if rest[3:].strip() == "" else (i, start + 4)
            elif rest[:1] in ('"', "'"):
                pos = (i, start + 2)
            else:
                pos = (i, start + 1)
            rules[-1][1][m.group(2)] = pos
    return rules


def load_file(path: str | Path, diags: list[Diagnostic]) -> tuple[list[RuleSpec], bytes]:
    """The rules of one file (and its bytes, for the source hash); problems go to ``diags``."""
    p = Path(path)
    try:
        raw = read_bytes(p, "rule file", TEXT_LIMIT)
    except OSError as e:
        diags.append(Diagnostic(str(path), 0, 0, "", "cannot read rule file: {}".format(e.strerror)))
        return [], b""
    except InputFileError as e:
        diags.append(Diagnostic(str(path), 0, 0, "", e.problem))
        return [], b""
    try:
        text = decode_utf8(raw, path, "rule file")
        doc = parse_toml(text, path, "rule file")
    except InputFileError as e:
        diags.append(Diagnostic(str(path), 0, 0, "", e.problem))
        return [], raw
    except tomllib.TOMLDecodeError as e:
        diags.append(_toml_diag(str(path), str(e)))
        return [], raw
    extra = sorted(k for k in doc if k != "rule")
    if extra:
        diags.append(Diagnostic(str(path), 1, 1, "", "unknown top-level key(s) {}: a rule file holds "
                                "only [[rule]] tables".format(", ".join(extra))))
    tables = doc.get("rule", [])
    if not isinstance(tables, list):
        diags.append(Diagnostic(str(path), 1, 1, "", "'rule' must be an array of tables: write [[rule]]"))
        return [], raw
    positions = _key_positions(text)
    specs = []
    for n, table in enumerate(tables, start=1):
        header, keys = positions[n - 1] if n - 1 < len(positions) else (0, {})
        spec = RuleSpec(str(path), n, header)
        spec.keys = keys
        if _fill(spec, table, diags):
            specs.append(spec)
    return specs, raw


def _toml_diag(path: str, message: str) -> Diagnostic:
    m = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if m:
        return Diagnostic(path, int(m.group(1)), int(m.group(2)), "",
                          "TOML syntax: " + message[: m.start()].strip())
    return Diagnostic(path, 0, 0, "", "TOML syntax: " + message)


def _fill(spec: RuleSpec, table: dict, diags: list[Diagnostic]) -> bool:
    """Check every key of one rule table; False if it has no condition to
    compile (other problems are reported and its expressions still checked)."""
    rid = table.get("id")
    if isinstance(rid, str) and ID_RE.match(rid):
        spec.id = rid
    else:
        spec.id = "#{}".format(spec.number)
        diags.append(spec.diag("id", "every rule needs an id of lower-case letters, digits and _ "
                               "(starting with a letter), got {!r}".format(rid)))
    for key in sorted(table):
        if key not in KEYS:
            diags.append(spec.diag(key, "unknown key '{}'{}".format(key, suggest(key, KEYS))))
    for key in REQUIRED:
        if key not in table and key != "id":
            diags.append(spec.diag("id", "missing key '{}'".format(key)))
    for key in ("description", "when", "clear_when", "devices", "needs_schedule"):
        if key in table:
            if isinstance(table[key], str):
                setattr(spec, key, table[key])
            else:
                diags.append(spec.diag(key, "'{}' must be text".format(key)))
    if spec.needs_schedule and not ID_RE.match(spec.needs_schedule):
        diags.append(spec.diag("needs_schedule", "'needs_schedule' is a schedule name of lower-case letters, "
                               "digits and _ (starting with a letter), got {!r}".format(spec.needs_schedule)))
    if "severity" in table:
        sev = severity_code(table["severity"]) if isinstance(table["severity"], str) else -1
        if sev < 0:
            diags.append(spec.diag("severity", "severity {!r} is not one of {}".format(
                table["severity"], ", ".join(SEVERITY_NAMES))))
        spec.severity = max(sev, 0)
    _fill_actions(spec, table.get("actions", []), diags)
    if "for" in table:
        try:
            spec.for_ms = parse_duration(table["for"], allow_zero=True)
        except ValueError as e:
            diags.append(spec.diag("for", "'for': {}".format(e)))
    if "latch" in table:
        if isinstance(table["latch"], bool):
            spec.latch = table["latch"]
        else:
            diags.append(spec.diag("latch", "'latch' must be true or false"))
    if spec.latch and spec.clear_when:
        diags.append(spec.diag("clear_when", "a latched rule cannot also have clear_when: "
                               "it clears only when the cabinet is disarmed"))
    if DEV in (spec.when + spec.clear_when) and not spec.devices:
        diags.append(spec.diag("when", "'{}' is used but the rule has no 'devices' class to "
                               "repeat over".format(DEV)))
        return False
    if "when" in table and isinstance(table["when"], str) and not table["when"].strip():
        diags.append(spec.diag("when", "'when' is empty: write the condition that raises the rule"))
    return bool(spec.when.strip())


def _fill_actions(spec: RuleSpec, actions: object, diags: list[Diagnostic]) -> None:
    names = dict(ACTION_BITS)
    if not isinstance(actions, list):
        diags.append(spec.diag("actions", "'actions' must be a list like [\"uplink\", \"lock\"]"))
        return
    for a in actions:
        bit = names.get(a) if isinstance(a, str) else None
        if bit is None:
            diags.append(spec.diag("actions", "unknown action {!r} (known: {}){}".format(
                a, ", ".join(names), suggest(str(a), list(names)))))
        else:
            spec.actions |= bit


def parse_source(spec: RuleSpec, key: str) -> str:
    """The text of ``when``/``clear_when`` as the parser sees it: {dev} becomes
    _DEV_ (same length, so columns stay exact) and the whole is wrapped in
    parentheses, so that an expression may span lines."""
    text = getattr(spec, key)
    return "(" + text.replace(DEV, DEV_NAME) + "\n)"


def default_sources(sources: list[str]) -> list[str]:
    """``sources``, or the default packs when none are given."""
    return sources or [str(p) for p in sorted(PACKS.glob("*.toml"))]
