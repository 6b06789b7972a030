"""Opening serial ports, with a message an installer can act on when one is missing,
and the RS-485 direction control the bus asks for (drivers/modbus/options.py)."""

from __future__ import annotations

import glob
import os

import serial
import serial.rs485
import serial.tools.list_ports

from drivers.errors import PortError
from drivers.modbus.options import PARITIES, RS485_MODES, STOPBITS, Rs485

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


def open_serial(port: str, baud: int, parity: str = "N", stopbits: int = 1, rs485: Rs485 = Rs485()) -> serial.Serial:
    """``port`` opened raw with 8 data bits, ``parity`` and ``stopbits`` at ``baud``,
    non-blocking (the master reads with poll()), its transceiver in receive mode when
    ``rs485`` asks for RTS or kernel direction control."""
    if parity not in PARITIES or stopbits not in STOPBITS or rs485.mode not in RS485_MODES:
        raise PortError("serial port {}: parity {!r} / stop bits {!r} / rs485 {!r}: want parity one of {}, "
                        "stop bits 1 or 2 and rs485 one of {}".format(port, parity, stopbits, rs485.mode,
                                                                     ", ".join(PARITIES), ", ".join(RS485_MODES)))
    if not os.path.exists(port):
        raise PortError("serial port {} does not exist; {}. Check the adapter is plugged in and "
                        "the bus's port in the config".format(port, _summary(existing_ports())))
    try:
        opened = serial.Serial(port, baud, bytesize=8, parity=parity, stopbits=stopbits, timeout=0,
                               exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        raise PortError("cannot open serial port {} at {} baud: {}. Is another program using it? "
                        "{}".format(port, baud, e, _summary(existing_ports()))) from None
    try:
        _direction(opened, rs485)
    except (serial.SerialException, OSError, ValueError) as e:
        opened.close()
        other = "rts" if rs485.mode == "kernel" else "kernel"
        raise PortError("serial port {}: rs485 = \"{}\": {}: its driver cannot {}. Use rs485 = \"{}\" or, for an "
                        "adapter that switches direction itself, \"auto\" (docs/config.md, RS-485 direction)".format(
                            port, rs485.mode, e, "switch the transceiver (TIOCSRS485)" if rs485.mode == "kernel"
                            else "drive RTS", other)) from None
    return opened


def _direction(port: serial.Serial, rs485: Rs485) -> None:
    """Hand direction control to the kernel, or park RTS at the receive level."""
    if rs485.mode == "kernel":
        port.rs485_mode = serial.rs485.RS485Settings(
            rts_level_for_tx=rs485.rts_tx_high, rts_level_for_rx=not rs485.rts_tx_high,
            delay_before_tx=rs485.delay_before_ms / 1000, delay_before_rx=rs485.delay_after_ms / 1000)
    elif rs485.mode == "rts":
        port.rts = not rs485.rts_tx_high
