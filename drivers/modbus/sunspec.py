"""SunSpec discovery: the "SunS" marker at 40000, 0 or 50000, then the model chain."""

from __future__ import annotations

from typing import Callable

from drivers.errors import ModbusException, ModbusFrameError
from drivers.modbus.profiles import SUNS, SUNSPEC_BASES, SUNSPEC_END, Profile

# read(start, count) -> holding registers; raises ModbusError
ReadHolding = Callable[[int, int], list[int]]
MAX_MODELS = 64
LAST_REGISTER = 0xFFFF


class NotSunSpec(ModbusFrameError):
    """The device has no SunSpec marker, or lacks a model the profile needs."""


def find_base(read: ReadHolding) -> int:
    """The marker's address; a Modbus exception at one base means try the next."""
    for base in SUNSPEC_BASES:
        try:
            if tuple(read(base, 2)) == SUNS:
                return base
        except ModbusException:
            continue
    raise NotSunSpec("no SunSpec marker at {}".format(", ".join(map(str, SUNSPEC_BASES))))


def model_chain(read: ReadHolding, base: int) -> list[tuple[int, int, int]]:
    """``(model id, address of its ID register, length)`` for each model up to the end mark."""
    chain = []
    address = base + 2
    for _ in range(MAX_MODELS):
        mid, length = read(address, 2)
        if mid == SUNSPEC_END:
            return chain
        if address + 2 + length > LAST_REGISTER:   # a garbled or hostile length: no model is that long
            raise NotSunSpec("SunSpec model {} at {} claims {} registers, past the end of the register "
                             "space".format(mid, address, length))
        chain.append((mid, address, length))
        address += 2 + length
    raise NotSunSpec("SunSpec model chain from {} has no end mark".format(base))


def discover(read: ReadHolding, profile: Profile) -> dict[int, int]:
    """The layout (model id -> address) for ``profile`` on this device."""
    chain = model_chain(read, find_base(read))
    layout = {mid: address for mid, address, _length in chain}
    lengths = {mid: length for mid, _address, length in chain}
    for m in profile.models:
        if m.id not in layout:
            raise NotSunSpec("SunSpec model {} missing (device has {})".format(
                m.id, ", ".join(str(c[0]) for c in chain)))
        if lengths[m.id] < m.length:
            raise NotSunSpec("SunSpec model {} has length {}, profile needs {}".format(
                m.id, lengths[m.id], m.length))
    return layout


def read_facts(read: ReadHolding, profile: Profile, layout: dict[int, int]) -> dict[str, int]:
    """The points read once, at discovery (``once = true``: facts of the unit's build,
    such as 805.NCell), decoded; a not-implemented one gives its ``missing`` value."""
    regmap = profile.once_map(layout)
    values, _missing = regmap.decode([read(b.start, b.count) for b in regmap.blocks])
    return values
