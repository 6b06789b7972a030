"""A bus's settings: serial framing, RS-485 direction control, timeouts and hysteresis.

Plain values (no I/O): the site config's ``[[bus]]`` table becomes a
``BusOptions`` (controller/gateway/site.py), which the port opener
(drivers/modbus/ports.py), the master and each device's link read.
"""

from __future__ import annotations

from typing import NamedTuple

PARITIES = ("N", "E", "O")   # none, even (the Modbus RTU default, spec 2.5.1), odd
STOPBITS = (1, 2)
# Who switches the RS-485 transceiver between sending and receiving:
#   auto    the adapter itself (most USB adapters, auto-direction HATs);
#   rts     this program: RTS to the send level before each request, back once it is sent;
#   kernel  the serial driver (TIOCSRS485: pyserial's rs485_mode), on UARTs whose driver has it.
RS485_MODES = ("auto", "rts", "kernel")


class Rs485(NamedTuple):
    mode: str = "auto"
    rts_tx_high: bool = True       # rts / kernel: RTS high drives the bus (low on inverted HATs)
    delay_before_ms: int = 0       # rts / kernel: RTS at the send level this long before the request
    delay_after_ms: int = 0        # ... and kept there this long after its last byte


class BusOptions(NamedTuple):
    """A bus's settings."""
    baud: int = 115200
    parity: str = "N"          # N E O: must match the devices' framing
    stopbits: int = 1
    timeout_floor_ms: float = 20.0
    timeout_ceiling_ms: float = 500.0
    retries: int = 1
    offline_after: int = 2
    online_after: int = 2
    rs485: Rs485 = Rs485()
