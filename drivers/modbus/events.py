"""What a bus poller reports to the scan loop: ``BusEvent`` and its kinds, defined once.

The kinds are the words the journal shows (``bus io offline: ...``), so they
stay strings; every producer and consumer names them through these
constants, never as literals.
"""

from __future__ import annotations

from typing import NamedTuple

# A device's news (``BusEvent.device`` is the device's instance name).
ONLINE = "online"                  # answering again, after the online hysteresis
OFFLINE = "offline"                # silent or failing, after the offline hysteresis; detail says why
EXCEPTION = "exception"            # a new Modbus exception code (``code``)
STRETCHED = "stretched"            # polled much less often than its period (an overloaded bus); detail says how often
ON_PACE = "on_pace"                # ... polled on its period again
MISMATCH = "mismatch"              # a SunSpec device that is not what its profile says
WRITE_OK = "write_ok"              # a coil write read back as written (``code`` is its token)
WRITE_MISMATCH = "write_mismatch"  # ... read back otherwise
WRITE_FAILED = "write_failed"      # ... not done, or not read back
# A port's news (``BusEvent.device`` is the port).
PORT_LOST = "port_lost"            # the serial port failed under a transaction
PORT_REOPENED = "port_reopened"    # ... and is open again

PORT_KINDS = (PORT_LOST, PORT_REOPENED)
WRITE_KINDS = (WRITE_OK, WRITE_MISMATCH, WRITE_FAILED)


class BusEvent(NamedTuple):
    device: str    # the device's instance name, or the port for PORT_KINDS
    kind: str      # one of the constants above
    code: int      # Modbus exception code, or a write's token
    detail: str
