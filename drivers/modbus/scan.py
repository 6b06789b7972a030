"""``cabguard bus scan PORT``: which slave addresses answer, and which are SunSpec devices."""

from __future__ import annotations

import argparse
from typing import Callable, Generator, Iterable, Iterator, NamedTuple

from drivers.errors import ModbusCrcError, ModbusError, ModbusException, ModbusFrameError, ModbusTimeout
from drivers.modbus import frames
from drivers.modbus.master import RtuMaster
from drivers.modbus.options import Rs485
from drivers.modbus.sunspec import NotSunSpec, find_base, model_chain

COMMON_TEXT = (("Mn", 2, 16), ("Md", 18, 16), ("SN", 50, 16))  # model 1 strings: name, offset, words


def scan_timeout(baud: int) -> float:
    """The wait per read of a scan at ``baud``: the slowest turnaround, plus the wire time of
    the longest identity read (16 registers) and t3.5.  A fixed wait made identity reads
    fail at 9600 baud, and their late answers showed as phantom garbled slaves."""
    longest = max(words for _n, _o, words in COMMON_TEXT)
    return frames.SLOWEST_TURNAROUND_S + frames.wire_seconds(8 + 5 + 2 * longest, baud) + frames.t35_seconds(baud)


class Found(NamedTuple):
    address: int
    note: str                 # "" or what was odd about the answers
    sunspec_base: int | None
    models: list[int]
    identity: dict[str, str]


def _text(regs: list[int]) -> str:
    return b"".join(r.to_bytes(2, "big") for r in regs).split(b"\0")[0].decode("latin-1").strip()


def probe(master: RtuMaster, address: int, timeout: float) -> Found | None:
    """A device at ``address``: anything that answers, even with an exception, is there."""
    note = ""
    try:
        master.read_registers(address, frames.READ_HOLDING, 0, 1, timeout)
    except ModbusException as e:
        note = "exception {} at holding register 0".format(e.code)
    except (ModbusCrcError, ModbusFrameError) as e:
        return Found(address, "answers, but garbled: {}".format(e), None, [], {})
    except ModbusTimeout:
        return None
    return identify(master, address, timeout, note)


def identify(master: RtuMaster, address: int, timeout: float, note: str = "") -> Found:
    def read(start: int, count: int) -> list[int]:
        return master.read_registers(address, frames.READ_HOLDING, start, count, timeout)
    try:
        base = find_base(read)
        chain = model_chain(read, base)
    except (NotSunSpec, ModbusError):
        return Found(address, note, None, [], {})
    identity = {}
    common = [a for mid, a, _l in chain if mid == 1]
    if common:
        for name, offset, words in COMMON_TEXT:
            try:
                identity[name] = _text(read(common[0] + offset, words))
            except ModbusError:
                identity[name] = "?"
    return Found(address, note, base, [c[0] for c in chain], identity)


def probes(master: RtuMaster, addresses: Iterable[int], timeout: float) -> Iterator[Found | None]:
    """Probe each address in turn: what is there, or None."""
    for address in addresses:
        yield probe(master, address, timeout)


def scan_job(addresses: Iterable[int], timeout: float) -> Callable[[RtuMaster], Generator[None, None, list[Found]]]:
    """The scan as a BusPoller job: one address per step, between the gateway's polls."""
    def steps(master: RtuMaster) -> Generator[None, None, list[Found]]:
        found = []
        for f in probes(master, addresses, timeout):
            if f is not None:
                found.append(f)
            yield
        return found
    return steps


def report(port: str, baud: int, first: int, last: int, found: list[Found]) -> list[str]:
    lines = ["{} at {} baud, addresses {}-{}: {} slave(s) answer".format(port, baud, first, last, len(found))]
    for f in found:
        line = "  address {:3d}".format(f.address)
        if f.sunspec_base is not None:
            line += "  SunSpec at {}: models {}".format(f.sunspec_base, ", ".join(map(str, f.models)))
            line += "".join("  {}={}".format(k, v) for k, v in f.identity.items())
        if f.note:
            line += "  ({})".format(f.note)
        lines.append(line)
    return lines


def main(args: argparse.Namespace) -> int:
    master = RtuMaster(args.port, args.baud, args.parity, args.stopbits, Rs485(args.rs485))
    try:
        timeout = scan_timeout(args.baud) if args.timeout_ms is None else args.timeout_ms / 1000
        found = [f for f in probes(master, range(args.first, args.last + 1), timeout) if f is not None]
    finally:
        master.close()
    print("\n".join(report(args.port, args.baud, args.first, args.last, found)))
    return 0
