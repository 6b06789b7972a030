"""Opening serial ports, with a message an installer can act on when one is missing."""

from __future__ import annotations

import glob
import os

import serial
import serial.tools.list_ports

from drivers.errors import PortError

_PATTERNS = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/ttyS*", "/dev/serial*",
             "/dev/serial/by-id/*", "/dev/pts/[0-9]*")


def existing_ports() -> list[str]:
    """Serial ports that exist here: what pyserial finds plus the usual device names and ptys."""
    found = {p.device for p in serial.tools.list_ports.comports()}
    for pattern in _PATTERNS:
        found.update(p for p in glob.glob(pattern) if not os.path.isdir(p))
    return sorted(found)


def _summary(ports: list[str]) -> str:
    if not ports:
        return "no serial ports exist on this machine"
    shown = ports if len(ports) <= 24 else ports[:24] + ["... ({} more)".format(len(ports) - 24)]
    return "ports that exist: " + ", ".join(shown)


PARITIES = ("N", "E", "O")   # none, even (the Modbus RTU default, spec 2.5.1), odd
STOPBITS = (1, 2)


def open_serial(port: str, baud: int, parity: str = "N", stopbits: int = 1) -> serial.Serial:
    """``port`` opened raw with 8 data bits, ``parity`` and ``stopbits`` at ``baud``,
    non-blocking (the master reads with poll())."""
    if parity not in PARITIES or stopbits not in STOPBITS:
        raise PortError("serial port {}: parity {!r} / stop bits {!r}: want parity one of {} and "
                        "stop bits 1 or 2".format(port, parity, stopbits, ", ".join(PARITIES)))
    if not os.path.exists(port):
        raise PortError("serial port {} does not exist; {}. Check the adapter is plugged in and "
                        "the bus's port in the config".format(port, _summary(existing_ports())))
    try:
        return serial.Serial(port, baud, bytesize=8, parity=parity, stopbits=stopbits, timeout=0,
                             exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        raise PortError("cannot open serial port {} at {} baud: {}. Is another program using it? "
                        "{}".format(port, baud, e, _summary(existing_ports()))) from None
