"""Modbus RTU: framing, a lean master, device profiles and the bus poller.

``frames`` (CRC, PDUs) and ``profiles`` (register maps as data) are pure and
shared with the simulator; ``master``, ``ports``, ``poller`` and ``scan`` do
the serial I/O.  See docs/profiles.md.
"""
