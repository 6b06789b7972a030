"""The one duration grammar (docs/rules.md "Durations"), for console
arguments, rule windows and scenario times alike: a number and a unit
(``ms s m h d``), parts chained -- ``"250ms"``, ``"90s"``, ``"1h30m"``,
``"2.5s"``, ``"2d"``.  Plain numbers are not durations.  What a caller
accepts beyond the grammar (zero, a cap, a leading ``+``) is the caller's.
"""

from __future__ import annotations

import re

# At most 15 digits a part (a million years in ms): a longer number is not a
# duration, and int() refuses numbers of more than 4,300 digits anyway.
_PART = re.compile(r"(\d{1,15}(?:\.\d{1,15})?)(ms|s|m|h|d)")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}


def parse_ms(text: object) -> int | None:
    """Milliseconds for a duration (fractions rounded to the millisecond), or None."""
    if not isinstance(text, str) or not text:
        return None
    pos = 0
    total = 0
    for m in _PART.finditer(text):
        if m.start() != pos:
            return None
        number, unit = m.group(1), m.group(2)
        total += int(number) * UNIT_MS[unit] if "." not in number else int(round(float(number) * UNIT_MS[unit]))
        pos = m.end()
    return total if pos == len(text) else None
