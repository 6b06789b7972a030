"""A simulated Modbus slave: a device profile's registers, answers, and faults.

The registers come from ``profile.encode(values)`` (drivers/modbus/profiles),
so the simulator and the gateway share one register map.  ``answer()`` is a
pure function of the request, the registers and the fault setting (with a
seeded random source), which the pty bus (simulator/bus.py) serves.
"""

from __future__ import annotations

import random
import struct
import threading
from typing import NamedTuple

from drivers.modbus import frames
from drivers.modbus.profiles import Profile, load_profile
from simulator.errors import SimConfigError

# A real slave's turnaround (request received to answer started), ms: a uniform draw
# in [low, high] per request.  BMS firmware commonly answers in 10-50 ms.
DEFAULT_TURNAROUND_MS = (5.0, 40.0)
FAULTS = ("silence", "crc", "garbage", "truncate", "slow", "exception")
_TABLE_OF = {frames.READ_COILS: "coil", frames.READ_DISCRETE: "discrete",
             frames.READ_HOLDING: "holding", frames.READ_INPUT: "input"}
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


class Fault(NamedTuple):
    kind: str
    rate: float = 1.0        # share of requests affected
    delay_ms: float = 0.0    # "slow": answer after this long
    code: int = 4            # "exception": the exception code (4 = slave device failure)


class Reply(NamedTuple):
    data: bytes | None       # None: stay silent
    delay_s: float = 0.0


class SimDevice:
    """One slave.  Change values while it runs with ``set()``; inject faults with
    ``set_fault()``; ``swap()`` puts in a different pack (new serial number).

    On a bus with the wire on (simulator/bus.py) it answers ``turnaround_ms`` after
    the request (a number, or ``(low, high)`` for a uniform draw per request), and
    leaves a share ``no_answer`` (0..1) of requests unanswered, as noise on a real
    line does.

    >>> dev = SimDevice("bms1", "bms16-vendor", 2, {"pack_mv": 51200})
    >>> dev.set(soc_pct=80)
    >>> dev.values["soc_pct"]
    80
    """

    def __init__(self, name: str, profile: Profile | str, address: int,
                 values: dict[str, int] | None = None, seed: int = 0,
                 turnaround_ms: float | tuple[float, float] = DEFAULT_TURNAROUND_MS,
                 no_answer: float = 0.0) -> None:
        if not 1 <= address <= 247:
            raise SimConfigError("device {}: address {} is not 1..247".format(name, address))
        low, high = turnaround_ms if isinstance(turnaround_ms, (tuple, list)) else (turnaround_ms,) * 2
        if not 0 <= low <= high or not 0.0 <= no_answer <= 1.0:
            raise SimConfigError("device {}: want turnaround_ms >= 0 (a number or [low, high] with low <= high) "
                                 "and 0 <= no_answer <= 1, got {!r} and {!r}".format(
                                     name, turnaround_ms, no_answer))
        self.turnaround_ms = (float(low), float(high))
        self.no_answer = no_answer
        self.name = name
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.address = address
        self.values = {n: 0 for n, _u, _s in self.profile.signal_specs()}
        self.values.update(self.profile.constants)   # stated by the profile: no register serves them
        self.fault: Fault | None = None
        self.requests = 0
        self._rng = random.Random(seed)
        self._wire_rng = random.Random("wire-{}".format(seed))  # apart, so faults draw as before
        self._lock = threading.Lock()
        self._regmap = self.profile.bind(self.profile.sim_layout() if self.profile.sunspec else None)
        self.tables = self.profile.encode(self.values)
        self.set(**(values or {}))

    def set(self, **values: int) -> None:
        """Change signal values (in the class's units and scales); re-encodes the registers."""
        unknown = [k for k in values if k not in self.values]
        if unknown:
            raise SimConfigError("device {} ({}) has no signal {} (its signals: {})".format(
                self.name, self.profile.name, ", ".join(unknown), ", ".join(self.values)))
        stated = [k for k, v in values.items() if k in self.profile.constants and int(v) != self.profile.constants[k]]
        if stated:
            raise SimConfigError("device {}: profile {} states {} = {} (no register serves another value): "
                                 "use a profile that reads it from the device".format(
                                     self.name, self.profile.name, stated[0], self.profile.constants[stated[0]]))
        with self._lock:
            self.values.update({k: int(v) for k, v in values.items()})
            self.tables = self.profile.encode(self.values)

    def swap(self, serial: int) -> None:
        """A different pack in the same place: a new serial number."""
        if "serial" not in self.values:
            raise SimConfigError("device {} ({}) has no serial number to swap".format(
                self.name, self.profile.device_class))
        self.set(serial=serial)

    def set_fault(self, kind: str | None, rate: float = 1.0, delay_ms: float = 0.0,
                  code: int = 4) -> None:
        """``kind`` one of FAULTS, or None to clear."""
        if kind is not None and kind not in FAULTS:
            raise SimConfigError("device {}: unknown fault {!r} (known: {})".format(
                self.name, kind, ", ".join(FAULTS)))
        if not 0.0 <= rate <= 1.0 or not 1 <= code <= 255 or delay_ms < 0:
            raise SimConfigError("device {}: fault needs 0 <= rate <= 1, code 1..255, delay_ms >= 0".format(
                self.name))
        self.fault = None if kind is None else Fault(kind, rate, delay_ms, code)

    def turnaround_s(self) -> float:
        """This request's turnaround on the wire, seconds."""
        low, high = self.turnaround_ms
        return (low if low == high else self._wire_rng.uniform(low, high)) / 1000

    def reply(self, request: bytes) -> Reply:
        """The answer to a CRC-checked request for this address, after any fault."""
        self.requests += 1
        answer = self.answer(request)
        if self.no_answer and self._wire_rng.random() < self.no_answer:
            return Reply(None)
        fault = self.fault
        if fault is None or self._rng.random() >= fault.rate:
            return Reply(answer)
        if fault.kind == "silence":
            return Reply(None)
        if fault.kind == "slow":
            return Reply(answer, fault.delay_ms / 1000)
        if fault.kind == "exception":
            return Reply(frames.exception_answer(self.address, request[1], fault.code))
        if fault.kind == "crc":
            return Reply(answer[:-1] + bytes((answer[-1] ^ 0x5A,)))
        if fault.kind == "truncate":
            return Reply(answer[: self._rng.randrange(1, len(answer))])
        return Reply(bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(1, 24))))

    def answer(self, request: bytes) -> bytes:
        """The correct answer (a normal or an exception frame) to ``request``."""
        function = request[1]
        with self._lock:
            if function in _TABLE_OF:
                return self._read(request, _TABLE_OF[function])
            if function in (frames.WRITE_COIL, frames.WRITE_REGISTER):
                return self._write_single(request)
            if function in (frames.WRITE_COILS, frames.WRITE_REGISTERS):
                return self._write_multiple(request)
        return frames.exception_answer(self.address, function, ILLEGAL_FUNCTION)

    def _read(self, request: bytes, table: str) -> bytes:
        function = request[1]
        start, count = struct.unpack(">HH", request[2:6])
        limit = frames.MAX_BITS if function in frames.BIT_FUNCTIONS else frames.MAX_REGISTERS
        if not 1 <= count <= limit:
            return frames.exception_answer(self.address, function, ILLEGAL_VALUE)
        regs = self.tables[table]
        try:
            values = [regs[a] for a in range(start, start + count)]
        except KeyError:
            return frames.exception_answer(self.address, function, ILLEGAL_ADDRESS)
        return frames.read_answer(self.address, function, values)

    def _write_single(self, request: bytes) -> bytes:
        function = request[1]
        address, value = struct.unpack(">HH", request[2:6])
        table = "coil" if function == frames.WRITE_COIL else "holding"
        if address not in self.tables[table] or self._read_only(table):
            return frames.exception_answer(self.address, function, ILLEGAL_ADDRESS)
        if table == "coil":
            if value not in (0, 0xFF00):
                return frames.exception_answer(self.address, function, ILLEGAL_VALUE)
            value = 1 if value else 0
        self.tables[table][address] = value
        self._decode_back()
        return frames.with_crc(request[:6])

    def _write_multiple(self, request: bytes) -> bytes:
        function = request[1]
        start, count = struct.unpack(">HH", request[2:6])
        data = request[7:-2]
        if function == frames.WRITE_COILS:
            table, values = "coil", [(data[i >> 3] >> (i & 7)) & 1 for i in range(min(count, 8 * len(data)))]
        else:
            table, values = "holding", list(struct.unpack(">%dH" % (len(data) // 2), data))
        if len(values) != count:
            return frames.exception_answer(self.address, function, ILLEGAL_VALUE)
        regs = self.tables[table]
        if any(a not in regs for a in range(start, start + count)) or self._read_only(table):
            return frames.exception_answer(self.address, function, ILLEGAL_ADDRESS)
        for i, v in enumerate(values):
            regs[start + i] = v
        self._decode_back()
        return frames.with_crc(request[:6])

    def _read_only(self, table: str) -> bool:
        """A SunSpec device's registers are read-only here (its profiles map measurements and
        the model frame, no controls): a write is an illegal address, as on a real unit."""
        return table == "holding" and self.profile.sunspec

    def _decode_back(self) -> None:
        """After a write by the master, the signal values follow the registers."""
        values, _missing = self._regmap.decode(self._regmap.blocks_from(self.tables))
        self.values.update(values)
