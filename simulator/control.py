"""Commands that change a running simulator, one per line (``cabguard sim --commands``).

    set bms1 soc_pct=40 temp_max_dc=450
    fault io silence            # or: fault bms1 slow delay_ms=300 rate=0.5
    fault io none
    swap bms1 99001234
    get relay k1 k2             # what the device holds now, coils the master wrote included
    get bms1                    # every signal
"""

from __future__ import annotations

from simulator.bus import Simulator
from simulator.errors import SimConfigError

USAGE = ("commands: set DEV SIG=VALUE...; fault DEV KIND|none [rate=R delay_ms=MS code=C]; swap DEV SERIAL; "
         "get DEV [SIG...]")


def _pairs(words: list[str]) -> dict[str, str]:
    out = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            raise SimConfigError("'{}' is not NAME=VALUE; {}".format(w, USAGE))
        out[key] = value
    return out


def apply_command(sim: Simulator, line: str) -> str:
    """Carry out one command line; returns what was done (SimConfigError if it cannot be)."""
    words = line.split("#")[0].split()
    if not words:
        return ""
    if words[0] == "get" and len(words) >= 2:
        return _get(sim, words[1], words[2:])
    if len(words) < 3:
        raise SimConfigError("'{}': {}".format(line.strip(), USAGE))
    verb, dev = words[0], sim.device(words[1])
    try:
        if verb == "set":
            dev.set(**{k: int(v) for k, v in _pairs(words[2:]).items()})
        elif verb == "fault":
            kind = None if words[2] == "none" else words[2]
            opts = _pairs(words[3:])
            dev.set_fault(kind, float(opts.get("rate", 1.0)), float(opts.get("delay_ms", 0)),
                          int(opts.get("code", 4)))
        elif verb == "swap":
            dev.swap(int(words[2]))
        else:
            raise SimConfigError("unknown command '{}'; {}".format(verb, USAGE))
    except ValueError as e:
        raise SimConfigError("'{}': {}".format(line.strip(), e)) from None
    return "ok " + " ".join(words)


def _get(sim: Simulator, name: str, signals: list[str]) -> str:
    """``ok DEV SIG=VALUE ...``: the device's values now (a coil the master wrote reads back)."""
    dev = sim.device(name)
    unknown = [s for s in signals if s not in dev.values]
    if unknown:
        raise SimConfigError("device {} has no signal {} (its signals: {})".format(
            name, ", ".join(unknown), ", ".join(dev.values)))
    return "ok {} {}".format(name, " ".join("{}={}".format(s, dev.values[s]) for s in signals or dev.values))
