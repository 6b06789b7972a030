"""Figures the HIL cases measure (the siren latency), handed to `cabguard bench --only flash`.

With HIL_FIGURES=FILE in the environment each figure is appended to FILE as a
JSON line; without it they are only printed (pytest -s shows them).
"""

from __future__ import annotations

import json
import os


def record(name: str, value: float, unit: str, target: str = "") -> None:
    line = {"name": name, "value": round(value, 3), "unit": unit, "target": target}
    print("figure: {}".format(json.dumps(line)))
    path = os.environ.get("HIL_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
