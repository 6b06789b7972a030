"""Scenario parts for the cameras and the GNSS receiver (docs/scenarios.md,
"Cameras and position"), kept apart from the rest of the format.

Processes (a cabinet's equipment, for the whole scenario):

- ``cameras``: the cameras at the cabinet (``names``), reporting from the
  start: ``cam.<name>.online`` is 1 unless an action takes one offline;
- ``gnss``: a GNSS receiver with the port model of simulator/gnss.py
  (jitter, HDOP 1-4, multipath, outages), surveyed during two minutes
  before the scenario starts; the ``pos.*`` values are those of the
  gateway's own position track (drivers/gnss.py) on those fixes.

The ``[escalation]`` section is the site config's (docs/config.md,
"Escalation"): the plans the evaluated core runs, so the scenario's
report says when the lights, the camera preset and the lock came.

Actions:

- ``camera_event``: camera ``camera`` reports ``event`` (person, vehicle,
  loiter, tamper) for ``duration``; ``zone.<event>`` follows the union of
  the cameras' reports;
- ``camera_offline``: camera ``camera`` stops reporting for ``duration``
  (empty: for good): its ``online`` and every event read 0, and what it
  would have seen meanwhile is not in ``zone.<event>``;
- ``carry``: the cabinet is carried ``distance_m`` metres away at up to
  ``speed_mps`` (needs the ``gnss`` process).

The world values are what the gateway's image shows (after its camera feed
and position track), as for the other devices after their profile decode.
"""

from __future__ import annotations

import random
from typing import Any

from controller.core.catalog import CAMERA_KINDS, POSITION_SIGNALS, camera_signals
from controller.core.escalation import Plans
from drivers.gnss import Fix, PositionTrack, TrackSettings
from simulator.gnss import PortGnss
from simulator.sensors import SET

SENSE_PROCESS_PARAMS: dict[str, dict[str, Any]] = {
    "cameras": {"names": ["gate"]},
    "gnss": {"max_hdop": 5},
}
SENSE_ACTION_PARAMS: dict[str, dict[str, Any]] = {
    "camera_event": {"camera": "gate", "event": "person", "duration": "20s"},
    "camera_offline": {"camera": "gate", "duration": ""},
    "carry": {"distance_m": 50.0, "speed_mps": 3.0},
    "gnss_jam": {"duration": ""},
}
# Text parameters of these kinds that are names, not durations.
SENSE_TEXT_PARAMS = ("camera", "event")
SURVEY_S = 120
# The outputs whose first rise in each incident the evaluation reports.
REPORTED_OUTPUTS = ("lights", "camera", "lock")


def escalation_plans(doc: object) -> dict[str, list]:
    """The core's plans from a scenario's ``[escalation]``; ValueError names what is wrong."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("[escalation]: want tables [escalation.alarm] and [escalation.critical]")
    plans = {}
    for severity, groups in doc.items():
        if not isinstance(groups, dict):
            raise ValueError("[escalation.{}]: want a table of plans (armed = [...])".format(severity))
        for group, steps in groups.items():
            key = "{}.{}".format(severity, group)
            if not isinstance(steps, list) or not all(isinstance(s, dict) and set(s) <= {"do", "after_s"} for s in steps):
                raise ValueError("[escalation] {}: want a list of {{ do = STEP, after_s = SECONDS }}".format(key))
            after = [s.get("after_s", 0) for s in steps]
            if not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 3600 for a in after):
                raise ValueError("[escalation] {}: after_s must be whole seconds from 0 to 3600".format(key))
            plans[key] = [[s.get("do"), a * 1000] for s, a in zip(steps, after)]
    Plans(plans)                    # the core's own checks: steps, severities, groups, repeats
    return plans


def camera_names(scn, cab) -> list[str]:
    names: list[str] = []
    for item in scn.processes:
        if item.kind == "cameras" and cab.id in item.cabinets:
            names += [n for n in item.params["names"] if n not in names]
    return names


def has_gnss(scn, cab) -> bool:
    return any(item.kind == "gnss" and cab.id in item.cabinets for item in scn.processes)


def sense_signals(scn, cab) -> list[tuple[str, str, int]]:
    """The cabinet's camera and position signals, as its gateway would have them."""
    return camera_signals(camera_names(scn, cab)) + (list(POSITION_SIGNALS) if has_gnss(scn, cab) else [])


def sense_problem(scn) -> tuple[int, str] | None:
    """(line, what) a sense action of ``scn`` names that its cabinets lack, or None."""
    for item in scn.actions:
        for cab in scn.cabinets:
            if cab.id not in item.cabinets:
                continue
            if item.kind in ("camera_event", "camera_offline") and item.params["camera"] not in camera_names(scn, cab):
                return item.line, "[[action]] {}: cabinet {} has no camera {!r} (give it a [[process]] kind = " \
                                  "\"cameras\" naming it)".format(item.kind, cab.id, item.params["camera"])
            if item.kind == "camera_event" and item.params["event"] not in CAMERA_KINDS:
                return item.line, "[[action]] camera_event: event {!r}: want one of {}".format(
                    item.params["event"], ", ".join(CAMERA_KINDS))
            if item.kind in ("carry", "gnss_jam") and not has_gnss(scn, cab):
                return item.line, "[[action]] {}: cabinet {} has no GNSS receiver (give it a [[process]] " \
                                  "kind = \"gnss\")".format(item.kind, cab.id)
    return None


class SensesWorld:
    """CabinetWorld's part for cameras and position (mixed in; uses its ``_at``/``_force``)."""

    def _process_cameras(self, p: dict, rng: random.Random) -> None:
        for name in p["names"]:
            self._at(0, SET, "cam.{}.online".format(name), 1)

    def _process_gnss(self, p: dict, rng: random.Random) -> None:
        self._gnss = (p, rng.randrange(1 << 30))

    def _action_camera_event(self, t: int, p: dict, item) -> None:
        name, kind = p["camera"], p["event"]
        # "": it stays -- its end a scan past the scenario's end, which is never played
        end = t + p["duration"] if p["duration"] >= 0 else self.scn.duration_ms + self.scan
        self._at(t, SET, "cam.{}.{}".format(name, kind), 1)
        self._at(end, SET, "cam.{}.{}".format(name, kind), 0)
        self.__dict__.setdefault("_zone", {}).setdefault(kind, []).append((name, t, end))

    def _action_camera_offline(self, t: int, p: dict, item) -> None:
        for signal in ["online"] + list(CAMERA_KINDS):
            self._force(t, "cam.{}.{}".format(p["camera"], signal), 0, p["duration"])
        end = t + p["duration"] if p["duration"] else self.scn.duration_ms + 1
        self.__dict__.setdefault("_cam_off", {}).setdefault(p["camera"], []).append((t, end))

    def _reported(self, name: str, a: int, b: int) -> list[tuple[int, int]]:
        """The parts of an event on camera ``name`` from ``a`` to ``b`` while it is online."""
        parts = [(a, b)]
        for x, y in getattr(self, "_cam_off", {}).get(name, ()):
            parts = [q for lo, hi in parts for q in ((lo, min(hi, x)), (max(lo, y), hi)) if q[0] < q[1]]
        return parts

    def _action_carry(self, t: int, p: dict, item) -> None:
        self.__dict__.setdefault("_carries", []).append((t, p["speed_mps"], p["distance_m"]))

    def _action_gnss_jam(self, t: int, p: dict, item) -> None:
        end = t + p["duration"] if p["duration"] else self.scn.duration_ms + 1
        self.__dict__.setdefault("_jams", []).append((t, end))

    def _senses_planned(self) -> None:
        """After every process and action: the zone signals (what the cameras
        online report), and the GNSS receiver's values."""
        for kind, events in getattr(self, "_zone", {}).items():
            spans = [part for name, a, b in events for part in self._reported(name, a, b)]
            level = 0
            for at, step in sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda x: (x[0], -x[1])):
                was, level = level, level + step
                if (was == 0) != (level == 0):
                    self._at(at, SET, "zone." + kind, 1 if level else 0)
        if getattr(self, "_gnss", None) is not None:
            self._gnss_values()

    def _gnss_values(self) -> None:
        p, seed = self._gnss
        gnss = PortGnss(seed)
        for t, speed, dist in getattr(self, "_carries", []):
            gnss.carry(SURVEY_S + t // 1000, speed, dist)
        track = PositionTrack(TrackSettings(max_hdop_x100=p["max_hdop"] * 100))
        for s in range(SURVEY_S):
            track.feed(gnss.fix_at(s, (s - SURVEY_S) * 1000))
        track.survey(0)
        last: dict[str, int] = {}
        jams = getattr(self, "_jams", [])
        for s in range(self.scn.duration_ms // 1000 + 1):
            fix = gnss.fix_at(SURVEY_S + s, s * 1000)    # drawn even when jammed: the port's noise goes on
            if jams and any(a <= s * 1000 < b for a, b in jams):
                fix = Fix(0, 0, 9999, 0.0, 0.0, s * 1000)     # jammed: no satellite tracked, no fix
            track.feed(fix)
            for short, v in track.values(s * 1000).items():
                if last.get(short) != v:
                    last[short] = v
                    self._at(s * 1000, SET, "pos." + short, v)
