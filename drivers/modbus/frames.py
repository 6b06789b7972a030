"""Modbus RTU frames: CRC-16 and the PDUs of functions 1-6, 15 and 16.

Pure functions over bytes, shared by the master (drivers) and the simulated
slaves (simulator).  An RTU frame is ``address, function, data..., crc_lo,
crc_hi``; an exception answer is exactly 5 bytes with ``function | 0x80``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from drivers.errors import ModbusCrcError, ModbusException, ModbusFrameError

READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT = 1, 2, 3, 4
WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS = 5, 6, 15, 16

# Which read function serves which table of a profile.
READ_FUNCTION = {"coil": READ_COILS, "discrete": READ_DISCRETE,
                 "holding": READ_HOLDING, "input": READ_INPUT}
BIT_FUNCTIONS = (READ_COILS, READ_DISCRETE)
WRITE_FUNCTIONS = (WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS)
MAX_REGISTERS = 125
MAX_BITS = 2000
EXCEPTION_LENGTH = 5
WRITE_ANSWER_LENGTH = 8   # a single write's answer echoes its request
MAX_FRAME = 256          # the longest RTU frame, bytes
SLOWEST_TURNAROUND_S = 0.05   # field devices answer within 10-50 ms (BMS firmware the slowest)


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF)."""
    crc = 0xFFFF
    table = _TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame: bytes) -> bool:
    """The CRC over a whole frame, its own CRC (low byte first) included, is 0 when it matches."""
    return len(frame) >= 4 and not crc16(frame)


def t35_seconds(baud: int) -> float:
    """The inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
    return 0.00175 if baud > 19200 else 3.5 * 11 / baud


def wire_seconds(nbytes: int, baud: int) -> float:
    """Time on the wire for ``nbytes`` 11-bit characters."""
    return nbytes * 11 / baud


def split_reads(function: int, start: int, count: int, baud: int, ceiling_s: float) -> list[tuple[int, int]]:
    """A block as (start, count) reads short enough that request and answer ((13 + 2N)
    characters) and the slowest turnaround fit in ``ceiling_s`` at ``baud`` (a 111-register
    SunSpec read takes 260 ms at 9600 baud).  Bit reads are short: one read."""
    if function in BIT_FUNCTIONS:
        return [(start, count)]
    budget = (ceiling_s - SLOWEST_TURNAROUND_S) * baud / 11
    step = max(1, min(MAX_REGISTERS, int((budget - 13) // 2)))
    return [(first, min(step, start + count - first)) for first in range(start, start + count, step)]


# ---- requests (master side) ------------------------------------------------

class Read(NamedTuple):
    """One read built once and sent at every poll: the request frame, CRC included,
    and the length of its normal answer."""
    function: int
    start: int
    count: int
    request: bytes
    expected: int


def read(address: int, function: int, start: int, count: int) -> Read:
    return Read(function, start, count, read_request(address, function, start, count),
                expected_length(function, count))


def read_request(address: int, function: int, start: int, count: int) -> bytes:
    if not (0 <= start <= 0xFFFF and 1 <= count and start + count <= 0x10000):
        # Only a garbled answer upstream (a SunSpec chain, say) leads here: a failed read, not a dead thread.
        raise ModbusFrameError("no registers {}..{} to read (0..65535)".format(start, start + count - 1))
    return with_crc(struct.pack(">BBHH", address, function, start, count))


def write_coil_request(address: int, coil: int, on: bool) -> bytes:
    return with_crc(struct.pack(">BBHH", address, WRITE_COIL, coil, 0xFF00 if on else 0))


def write_register_request(address: int, register: int, value: int) -> bytes:
    return with_crc(struct.pack(">BBHH", address, WRITE_REGISTER, register, value & 0xFFFF))


def expected_length(function: int, count: int) -> int:
    """Length of the normal answer to a request of ``function`` for ``count`` items."""
    if function in BIT_FUNCTIONS:
        return 5 + (count + 7) // 8
    if function in (READ_HOLDING, READ_INPUT):
        return 5 + 2 * count
    return WRITE_ANSWER_LENGTH  # the write functions echo address and value/quantity


def check_reply(request: bytes, reply: bytes) -> bytes:
    """The data part of ``reply`` to ``request``, or a ModbusError saying what is wrong.

    Checks, in order: CRC, address, exception, function, length.  Pure and
    total: any byte string gives a value or a ModbusError, never anything else.
    """
    if len(reply) < EXCEPTION_LENGTH:
        raise ModbusFrameError("answer of {} bytes is too short".format(len(reply)))
    if not crc_ok(reply):
        raise ModbusCrcError("answer CRC mismatch")
    if reply[0] != request[0]:
        raise ModbusFrameError("answer from address {} to a request for {}".format(reply[0], request[0]))
    function = request[1]
    if reply[1] == function | 0x80 and len(reply) == EXCEPTION_LENGTH:
        raise ModbusException(request[0], function, reply[2])
    if reply[1] != function:
        raise ModbusFrameError("answer has function {} to a request for {}".format(reply[1], function))
    if function in (READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT):
        count = (request[4] << 8) | request[5]
        if len(reply) != expected_length(function, count) or reply[2] != len(reply) - 5:
            raise ModbusFrameError("answer of {} bytes to a read of {}".format(len(reply), count))
        return reply[3:-2]
    if reply[:6] != request[:6]:
        raise ModbusFrameError("write answer does not echo the request")
    return reply[2:6]


_WORDS: dict[int, struct.Struct] = {}   # big-endian words by byte length (at most 125 sizes), built once each


def registers(data: bytes) -> list[int]:
    words = _WORDS.get(len(data))
    if words is None:
        words = _WORDS[len(data)] = struct.Struct(">%dH" % (len(data) // 2))
    return list(words.unpack(data))


def bits(data: bytes, count: int) -> list[int]:
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(count)]


def values(read: Read, data: bytes) -> list[int]:
    """The registers or bits in the data part of the answer to ``read``."""
    return bits(data, read.count) if read.function in BIT_FUNCTIONS else registers(data)


# ---- answers (slave side) --------------------------------------------------

# Request lengths of the other public functions (Modbus application protocol 6.x), so a
# slave answers them with exception 1 instead of waiting for 8 bytes that never come:
# 7 read exception status, 11/12 comm event counter/log, 17 report server id (4 bytes);
# 22 mask write (10); 24 read FIFO (6); 43/14 read device identification (7).
_FIXED_LENGTH = {7: 4, 11: 4, 12: 4, 17: 4, 22: 10, 24: 6, 43: 7}
# Functions whose length follows from a byte count: function -> (offset of the count, bytes
# besides the counted ones): 15/16 write multiple, 20/21 file records, 23 read/write multiple.
_COUNTED_LENGTH = {WRITE_COILS: (6, 9), WRITE_REGISTERS: (6, 9), 20: (2, 5), 21: (2, 5), 23: (10, 13)}


def request_length(buffer: bytes) -> int:
    """Length of the request frame starting ``buffer``, 0 if not yet known."""
    if len(buffer) < 2:
        return 0
    if buffer[1] in _COUNTED_LENGTH:
        at, extra = _COUNTED_LENGTH[buffer[1]]
        return extra + buffer[at] if len(buffer) > at else 0
    return _FIXED_LENGTH.get(buffer[1], 8)


def pack_bits(values: list[int]) -> bytes:
    out = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def read_answer(address: int, function: int, values: list[int]) -> bytes:
    if function in BIT_FUNCTIONS:
        data = pack_bits(values)
    else:
        data = struct.pack(">%dH" % len(values), *values)
    return with_crc(bytes((address, function, len(data))) + data)


def exception_answer(address: int, function: int, code: int) -> bytes:
    return with_crc(bytes((address, function | 0x80, code)))
