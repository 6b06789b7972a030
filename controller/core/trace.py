"""Traces: what ``step()`` consumed, scan by scan, and their replay digest.

A trace is JSON Lines (docs/trace.md).  The first line is the header::

    {"cabguard_trace": 1,
     "signals": [["io.door_open", "bool", 0], ...],
     "core": {"exit_delay_ms": 30000, ...},
     "entry_zones": ["io.door_open"]}

and every further line is one scan, with only what changed::

    {"t": 123400, "set": {"io.door_open": 1}, "cmd": [["maint_start", 600000]]}

``t`` is the tick (ms, wrapping at 2**30) that the scan was given; ``set``
and ``cmd`` may be left out.  A command is ``[name]`` or ``[name, arg]``.

The digest is SHA-256 over one line per scan in which the outputs changed
or an event happened, so equal digests mean equal behaviour, bit for bit.
"""

import hashlib
import json

from . import ticks
from .catalog import Catalog
from .errors import CoreError, TraceError, UnknownSignal
from .events import COMMAND_CODES
from .step import CoreConfig, CoreState, step

FORMAT = 1


def header_line(catalog, config, entry_zone_names, extra=None):
    """The first line of a trace, as text without the newline."""
    head = {
        "cabguard_trace": FORMAT,
        "signals": [list(s) for s in catalog.specs()],
        "core": config.as_dict(),
        "entry_zones": list(entry_zone_names),
    }
    if extra:
        for k in extra:
            head[k] = extra[k]
    return json.dumps(head)


def scan_line(t, changes, commands):
    """One scan line: ``changes`` maps signal name to value, ``commands`` is
    a list of ``(name, arg)``."""
    rec = {"t": t}
    if changes:
        rec["set"] = changes
    if commands:
        rec["cmd"] = [[name, arg] if arg else [name] for name, arg in commands]
    return json.dumps(rec)


def _parse_json(text, lineno):
    try:
        return json.loads(text)
    except ValueError as e:
        raise TraceError("trace line {}: not valid JSON ({})".format(lineno, e))


def parse_header(text, lineno=1):
    """A ``(catalog, config, entry_zone_names, header dict)`` from line 1."""
    head = _parse_json(text, lineno)
    if not isinstance(head, dict) or head.get("cabguard_trace") != FORMAT:
        raise TraceError(
            "trace line {}: not a cabguard trace header (want {{\"cabguard_trace\": {}, ...}})".format(
                lineno, FORMAT
            )
        )
    try:
        catalog = Catalog([tuple(s) for s in head.get("signals", [])])
        zones = head.get("entry_zones", [])
        zone_idx = [catalog.zone(z, "trace line {}: entry_zones: ".format(lineno)) for z in zones]
        config = CoreConfig(head.get("core", {}), zone_idx)
    except (CoreError, ValueError, TypeError) as e:
        raise TraceError("trace line {}: {}".format(lineno, e))
    return catalog, config, zones, head


def parse_scan(text, lineno, catalog):
    """A scan line as ``(t, [(index, value)], [(command code, arg)])``."""
    rec = _parse_json(text, lineno)
    if not isinstance(rec, dict):
        raise TraceError("trace line {}: a scan must be a JSON object".format(lineno))
    t = rec.get("t")
    if not isinstance(t, int) or isinstance(t, bool) or t < 0 or t > ticks.MASK:
        raise TraceError(
            "trace line {}: 't' must be a tick from 0 to {}, got {!r}".format(lineno, ticks.MASK, t)
        )
    changes = []
    sets = rec.get("set", {})
    if not isinstance(sets, dict):
        raise TraceError("trace line {}: 'set' must map signal names to integers".format(lineno))
    for name in sorted(sets):
        try:
            i = catalog.lookup(name, "trace line {}: ".format(lineno))
        except UnknownSignal as e:
            raise TraceError(str(e))
        v = sets[name]
        if not isinstance(v, int) or isinstance(v, bool):
            raise TraceError(
                "trace line {}: signal '{}' must be an integer, got {!r}".format(lineno, name, v)
            )
        changes.append((i, v))
    commands = []
    for c in rec.get("cmd", []):
        commands.append(_parse_command(c, lineno))
    return t, changes, commands


def _parse_command(c, lineno):
    if not isinstance(c, list) or not c or len(c) > 2:
        raise TraceError("trace line {}: a command is [name] or [name, arg], got {!r}".format(lineno, c))
    name = c[0]
    code = COMMAND_CODES.get(name) if isinstance(name, str) else None
    if code is None:
        raise TraceError(
            "trace line {}: unknown command {!r} (known: {})".format(
                lineno, name, ", ".join(sorted(COMMAND_CODES))
            )
        )
    arg = c[1] if len(c) == 2 else 0
    if not isinstance(arg, int) or isinstance(arg, bool) or arg < 0 or arg > ticks.MAX_SPAN:
        raise TraceError("trace line {}: command '{}' needs a whole-number argument, got {!r}".format(lineno, name, arg))
    return (code, arg)


def digest_line(scan, t, outputs, events):
    return "{} {} {} {}\n".format(
        scan, t, ",".join([str(o) for o in outputs]),
        ";".join([",".join([str(x) for x in ev]) for ev in events]),
    )


class Replay:
    """Feeds scans to ``step()`` and keeps the digest and the timeline."""

    def __init__(self, catalog, config, rules=None, keep_timeline=True):
        self.state = CoreState(catalog, config, rules)
        self.image = catalog.new_image()
        self.hash = hashlib.sha256()
        self.prev_out = None
        self.timeline = [] if keep_timeline else None
        self.scans = 0
        self.events = 0

    def feed(self, t, changes, commands):
        image = self.image
        for i, v in changes:
            image[i] = v
        outputs, events = step(self.state, (image, commands), t)
        if events or outputs != self.prev_out:
            self.prev_out = list(outputs)
            self.hash.update(digest_line(self.scans, t, outputs, events).encode())
            self.events += len(events)
            if self.timeline is not None:
                self.timeline.append((self.scans, t, list(outputs), list(events)))
        self.scans += 1

    def digest(self):
        return "".join(["{:02x}".format(b) for b in self.hash.digest()])


def replay_lines(lines, rules_factory=None, keep_timeline=True):
    """Replay an iterable of trace lines; returns the finished Replay.

    ``rules_factory(catalog, header)`` may supply a rules evaluator.
    """
    replay = None
    catalog = None
    lineno = 0
    for text in lines:
        lineno += 1
        text = text.strip()
        if not text:
            continue
        if replay is None:
            catalog, config, _zones, head = parse_header(text, lineno)
            rules = rules_factory(catalog, head) if rules_factory else None
            replay = Replay(catalog, config, rules, keep_timeline)
            if "start" in head:
                try:
                    replay.state.restore(head["start"])
                except CoreError as e:
                    raise TraceError("trace line {}: {}".format(lineno, e))
            continue
        t, changes, commands = parse_scan(text, lineno, catalog)
        replay.feed(t, changes, commands)
    if replay is None:
        raise TraceError("trace is empty: the first line must be the header")
    return replay
