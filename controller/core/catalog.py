"""The signal catalog: every value on the input image, by name and index.

A catalog is built once from data (device profiles and the site's
schedules) and frozen into parallel lists, so a scan reads ``image[i]``
and never looks a string up.  Every signal is an integer with a declared
unit and a decimal scale: ``("bms1.cell_vmax_mv", "V", -3)`` is a voltage
in millivolts, ``("bms1.temp_max_dc", "C", -1)`` a temperature in tenths of
a degree.  Booleans use unit ``"bool"`` (values 0 and 1).

Every device gets twins that the bus driver fills in, so that a device that
stops answering is a fact on the image rather than an exception:
``<dev>.online`` and the counters ``<dev>.comm_ok``, ``<dev>.comm_timeouts``,
``<dev>.comm_crc``, ``<dev>.comm_exc`` (last Modbus exception code, 0 none).
"""

import hashlib

from .errors import CoreError, UnknownSignal

UNITS = (
    "bool", "count", "code", "bits", "V", "A", "W", "Wh", "Ah", "C", "g",
    "deg", "pct", "s", "ms", "Hz", "ohm", "score", "m",
)

DEVICE_TWINS = (
    ("online", "bool", 0),
    ("comm_ok", "count", 0),
    ("comm_timeouts", "count", 0),
    ("comm_crc", "count", 0),
    ("comm_exc", "code", 0),
)

# Signals the gateway itself provides, whatever the devices are.
SYSTEM_SIGNALS = (
    ("sys.clock_trusted", "bool", 0),
    ("sys.late_scans", "count", 0),
    ("sys.disk_free_pct", "pct", 0),
    ("sys.journal_backlog", "count", 0),
    ("sys.tamper", "bool", 0),
    ("sys.week_hour", "count", 0),   # hour of the week, 0 = Monday 00:00 local; -1 clock untrusted
    # The site's mains, sensed upstream of the cabinet's own feed ([mains]):
    # both 0 while unknown (no mains sense fitted, or not read yet).
    ("sys.mains_up", "bool", 0),
    ("sys.mains_down", "bool", 0),
)

# The anomaly model's outputs (docs/anomaly.md): on every gateway's image,
# so a table compiled for a site stays valid when a model is added.
ANOMALY_SIGNALS = (
    ("anom.score", "score", 0),
    ("anom.top", "code", 0),
)


def device_signals(device, signals):
    """Specs for one device: its own signals, then its communication twins.

    ``signals`` is a sequence of ``(short_name, unit, scale)``.
    """
    specs = []
    for name, unit, scale in signals:
        specs.append((device + "." + name, unit, scale))
    for name, unit, scale in DEVICE_TWINS:
        specs.append((device + "." + name, unit, scale))
    return specs


# What a camera's analytics report (docs/signals.md, "Cameras"), each 0/1;
# ``cam.<name>.online`` is its twin: a report came within the freshness limit.
CAMERA_KINDS = ("person", "vehicle", "loiter", "tamper")
CAMERA_CLASS = "camera"     # cam.<name> is a device of this class for rules (devices = "camera")
GNSS_CLASS = "gnss"         # pos, the GNSS receiver, is a device of this class (devices = "gnss")


# ``zone.<kind>``: 1 while any camera online reports it (a gateway's cameras
# watch its cabinet's zone).  On every gateway's image, 0 without cameras, so
# a table's rules that combine them with the cabinet's sensors compile for
# every site and stay valid when cameras are added.
ZONE_SIGNALS = tuple(("zone." + kind, "bool", 0) for kind in CAMERA_KINDS)


# A GNSS receiver's signals (controller/gateway/position.py), with [gnss].
POSITION_SIGNALS = (
    ("pos.online", "bool", 0), ("pos.fix", "code", 0), ("pos.sats", "count", 0), ("pos.hdop", "count", -2),
    ("pos.surveyed", "bool", 0), ("pos.dist_m", "m", 0), ("pos.err_m", "m", 0),
    ("pos.away", "count", -2),
)


def camera_signals(names):
    """``cam.<name>.<kind>`` and ``cam.<name>.online`` per camera, set by the shell."""
    specs = []
    for n in names:
        for kind in CAMERA_KINDS + ("online",):
            specs.append(("cam." + n + "." + kind, "bool", 0))
    return specs


def schedule_signals(names):
    """One boolean ``sched.<name>`` per named schedule, set by the shell."""
    return [("sched." + n, "bool", 0) for n in sorted(names)]


class Catalog:
    """Frozen index tables over a list of ``(name, unit, scale)`` specs."""

    def __init__(self, specs):
        self.names = []
        self.units = []
        self.scales = []
        self.index = {}
        for spec in specs:
            self._add(spec)
        self.size = len(self.names)
        self.devices = sorted(
            n[: -len(".online")] for n in self.names if n.endswith(".online")
        )

    def _add(self, spec):
        if len(spec) != 3:
            raise CoreError("signal spec {!r} is not (name, unit, scale)".format(spec))
        name, unit, scale = spec
        if name in self.index:
            raise CoreError("signal '{}' is declared twice".format(name))
        if unit not in UNITS:
            raise CoreError(
                "signal '{}' has unknown unit '{}' (known: {})".format(
                    name, unit, ", ".join(UNITS)
                )
            )
        if not isinstance(scale, int) or scale < -9 or scale > 9:
            raise CoreError(
                "signal '{}' has scale {!r}: want an integer power of ten from -9 to 9".format(
                    name, scale
                )
            )
        self.index[name] = len(self.names)
        self.names.append(name)
        self.units.append(unit)
        self.scales.append(scale)

    def lookup(self, name, where=""):
        """The index of ``name``; ``where`` prefixes the error message."""
        i = self.index.get(name)
        if i is None:
            raise UnknownSignal(name, where)
        return i

    def zone(self, name, where=""):
        """An entry zone's code for CoreConfig: the index of a signal that
        opens the zone when it rises (``io.door_open``), or ``~index`` for a
        name written ``!signal``, which opens it when it falls (the bolt
        ``!io.door_bolt``: released)."""
        if name[:1] == "!":
            return ~self.lookup(name[1:], where)
        return self.lookup(name, where)

    def new_image(self):
        """A zeroed input image: every device offline, every input 0."""
        return [0] * self.size

    def specs(self):
        return [(self.names[i], self.units[i], self.scales[i]) for i in range(self.size)]

    def digest(self):
        """SHA-256 over the ordered specs; compiled tables are bound to it."""
        h = hashlib.sha256()
        for i in range(self.size):
            h.update(
                "{}|{}|{}\n".format(self.names[i], self.units[i], self.scales[i]).encode()
            )
        return h.digest()
