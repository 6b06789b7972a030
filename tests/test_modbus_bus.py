"""The RTU master and the bus poller against simulated slaves on real ptys."""

import collections
import time

import pytest
from hypothesis import given, settings, strategies as st

from controller.core.catalog import DEVICE_TWINS, Catalog, device_signals
from controller.devtools.bench.modbus import GOOD, REQUEST, fuzz_answers
from drivers.errors import (BusError, ModbusCrcError, ModbusError, ModbusException, ModbusFrameError,
                            ModbusTimeout, PortError)
from drivers.modbus import events as ev, frames
from drivers.modbus.master import RtuMaster
from drivers.modbus.options import Rs485
from drivers.modbus.link import PORT_LOST
from drivers.modbus.poller import TWINS, BusOptions, BusPoller, PolledDevice, open_master
from drivers.modbus.ports import open_serial
from drivers.modbus.profiles import load_profile
from simulator.bus import Late, ScriptedSlave, SimBus, Simulator
from simulator.slave import SimDevice
from tests.scheduling import WIRE_GROUP
from tests.waiting import wait_until

# Real timing on ptys (late answers, turnarounds, timeouts): one worker, beside the quiet soak.
pytestmark = pytest.mark.xdist_group(WIRE_GROUP)

BMS = {"pack_mv": 52800, "current_ma": -1500, "soc_pct": 81, "serial": 20240117, "modules": 1}
SUNSPEC = {"pack_mv": 409600, "current_ma": -2500, "soc_pct": 64, "serial": 77001234, "modules": 8,
           "temp_max_dc": 262, "cells_per_module": 14}      # 805.NCell: a module of 14 cells


def cabinet():
    return [SimDevice("io", "io-dvt", 1, {"door_bolt": 1, "vib_rms_mg": 12, "tamper": 1}),
            SimDevice("bms1", "bms16-vendor", 2, BMS),
            SimDevice("bms2", "sunspec-battery", 3, SUNSPEC),
            SimDevice("relay", "relay4", 4)]


@pytest.fixture
def sim():
    with Simulator([SimBus("b1", cabinet())]) as s:
        yield s


@pytest.fixture
def master(sim):
    m = RtuMaster(sim.bus("b1").port, 19200)
    yield m
    m.close()


class _CountingMaster(RtuMaster):
    reads = 0

    def _read_some(self, n):
        self.reads += 1
        return super()._read_some(n)

    def _read_due(self, n):
        self.reads += 1
        return super()._read_due(n)


def test_an_answer_on_the_wire_is_read_in_a_few_reads_not_one_per_batch(sim):
    """The simulator sends a 30-register answer (65 characters, 37 ms at 19200) in batches
    2 ms apart, as a UART's FIFO would: the master sleeps through the rest of an answer
    once it has begun instead of waking for every batch (the bus thread's CPU)."""
    master = _CountingMaster(sim.bus("b1").port, 19200)
    try:
        for _ in range(3):
            master.wait_quiet()
            assert len(master.read_registers(2, frames.READ_INPUT, 0, 30, 0.2)) == 30
        assert master.reads <= 3 * 10     # was about 20 a read; a loaded machine wakes late and reads more
    finally:
        master.close()


def test_master_reads_every_table(master):
    assert master.read_registers(1, frames.READ_INPUT, 0, 2, 0.1) == [12, 0]
    assert master.read_bits(1, frames.READ_DISCRETE, 0, 2, 0.1) == [0, 1]
    assert master.read_registers(3, frames.READ_HOLDING, 40000, 2, 0.1) == [0x5375, 0x6E53]
    master.write_coil(4, 2, True, 0.1)
    assert master.read_bits(4, frames.READ_COILS, 0, 4, 0.1) == [0, 0, 1, 0]


@pytest.mark.timeout(3)
def test_exception_answer_ends_the_read_at_once(sim, master):
    """With a 10 s timeout, waiting for more than the 5-byte exception would hit the test timeout."""
    for _ in range(5):
        with pytest.raises(ModbusException) as e:
            master.read_registers(2, frames.READ_INPUT, 200, 4, timeout=10.0)
        assert e.value.code == 2
    sim.device("bms1").set_fault("exception", code=6)
    with pytest.raises(ModbusException) as e:
        master.read_registers(2, frames.READ_INPUT, 0, 4, timeout=10.0)
    assert e.value.code == 6


@pytest.mark.parametrize("kind, error", [("silence", ModbusTimeout), ("crc", ModbusCrcError),
                                         ("truncate", ModbusFrameError)])
def test_faults_become_the_right_errors_and_the_bus_recovers(sim, master, kind, error):
    sim.device("bms1").set_fault(kind)
    with pytest.raises(error):
        master.read_registers(2, frames.READ_INPUT, 0, 30, 0.1)  # 40 ms turnaround + 42 ms of wire
    sim.device("bms1").set_fault(None)
    assert master.read_registers(2, frames.READ_INPUT, 4, 1, 0.1) == [810]


def test_garbage_and_slow_answers_do_not_poison_the_next_transaction(sim, master):
    bms = sim.device("bms1")
    bms.set_fault("garbage")
    for _ in range(5):
        with pytest.raises(ModbusError):
            master.read_registers(2, frames.READ_INPUT, 0, 30, 0.1)
    bms.set_fault("slow", delay_ms=100)
    with pytest.raises(ModbusTimeout):
        master.read_registers(2, frames.READ_INPUT, 0, 30, 0.1)
    bms.set_fault(None)
    time.sleep(0.1)  # the late answer arrives meanwhile and must be discarded
    assert master.read_registers(2, frames.READ_INPUT, 4, 1, 0.1) == [810]


def test_an_answer_is_checked_unless_it_is_byte_for_byte_the_last_good_one(sim, master):
    """The master skips the checks of an answer equal to its request's last good one (a
    quiet device's): a changed value is read, a garbled copy of that answer is a CRC error."""
    bms = sim.device("bms1")
    assert [master.read_registers(2, frames.READ_INPUT, 4, 1, 0.1) for _ in range(2)] == [[810], [810]]
    bms.set(soc_pct=82)
    assert master.read_registers(2, frames.READ_INPUT, 4, 1, 0.1) == [820]
    bms.set_fault("crc")
    with pytest.raises(ModbusCrcError):
        master.read_registers(2, frames.READ_INPUT, 4, 1, 0.1)
    bms.set_fault(None)
    assert master.read_registers(2, frames.READ_INPUT, 4, 1, 0.1) == [820]


def test_missing_port_names_it_and_lists_existing_ports(sim):
    with pytest.raises(PortError) as e:
        RtuMaster("/dev/ttyNOPE0", 115200)
    msg = str(e.value)
    assert "/dev/ttyNOPE0 does not exist" in msg and sim.bus("b1").port in msg



def _poller(port, master_factory=open_master, **opts):
    # Periods the wire carries at 19200 with 5-40 ms turnarounds (about half its time).
    return BusPoller(port, [PolledDevice("io", "io-dvt", 1, 100),
                            PolledDevice("bms1", "bms16-vendor", 2, 300),
                            PolledDevice("bms2", "sunspec-battery", 3, 300),
                            PolledDevice("relay", "relay4", 4, 300)], BusOptions(**{"baud": 19200, **opts}),
                     master_factory)


def _read_of(request: bytes) -> tuple[int, int, int, int] | None:
    """(address, function, start, count) of a read request, None for any other."""
    if request[1] not in frames.READ_FUNCTION.values():
        return None
    return request[0], request[1], int.from_bytes(request[2:4], "big"), int.from_bytes(request[4:6], "big")


class _NotingMaster(RtuMaster):
    """A real master that notes each read as (address, start, count)."""

    reads: list[tuple[int, int, int]] = []

    def transact(self, request, expected, timeout):
        read = _read_of(request)
        if read is not None:
            address, _function, start, count = read
            self.reads.append((address, start, count))
        return super().transact(request, expected, timeout)


def _noting(reads):
    def factory(port: str, options: BusOptions) -> RtuMaster:
        master = _NotingMaster(port, options.baud, options.parity, options.stopbits)
        master.reads = reads
        return master
    return factory


def test_poller_fills_the_image_with_values_and_twins(sim):
    reads: list[tuple[int, int, int]] = []
    poller = _poller(sim.bus("b1").port, _noting(reads)).start()
    try:
        specs = []
        for instance, signals in poller.device_specs():
            specs += device_signals(instance, signals)
        catalog = Catalog(specs)
        assert catalog.names == poller.names  # the snapshot's order is the catalog's
        assert TWINS == tuple(n for n, _u, _s in DEVICE_TWINS)
        indices = poller.indices(catalog)
        image = catalog.new_image()
        assert wait_until(lambda: all(poller.snapshot()[d + ".online"] for d in ("io", "bms1", "bms2", "relay")))
        poller.copy_into(image, indices)
        get = lambda n: image[catalog.index[n]]  # noqa: E731
        assert get("io.door_bolt") == 1 and get("io.tamper") == 1 and get("io.vib_rms_mg") == 12
        assert get("bms1.pack_mv") == 52800 and get("bms1.current_ma") == -1500
        assert get("bms2.pack_mv") == 409600 and get("bms2.serial") == 77001234
        assert get("bms2.temp_max_dc") == 262 and get("bms2.modules") == 8
        assert get("bms1.cells_per_module") == 16 and get("bms2.cells_per_module") == 14   # stated; 805.NCell
        assert get("bms1.comm_ok") > 0 and get("bms1.comm_timeouts") == 0
        sim.device("bms2").swap(88000001)
        sim.device("io").set(door_open=1)
        assert wait_until(lambda: poller.snapshot()["bms2.serial"] == 88000001)
        assert wait_until(lambda: poller.snapshot()["io.door_open"] == 1)
        kinds = {(e.device, e.kind) for e in poller.events()}
        assert ("bms2", ev.ONLINE) in kinds
    finally:
        poller.stop()
    # No read longer than the shortest poll period (io's 100 ms): the 111-register SunSpec
    # block goes in 37-register reads, and the io module, due meanwhile, is polled between them.
    # 805.NCell (40198) is read once, at discovery: no poll reads it again.
    assert [(a, start, n) for a, start, n in reads if a == 3 and start <= 40198 < start + n] == [(3, 40198, 1)]
    battery = [(i, start, n) for i, (a, start, n) in enumerate(reads) if a == 3]
    assert max(n for _i, _s, n in battery) == 37
    assert any(first + n == start and any(a == 1 for a, _s, _n in reads[i + 1:j])
               for (i, first, n), (j, start, _n) in zip(battery, battery[1:]))


def test_the_io_module_answers_in_one_read_its_status_register_mirroring_its_discrete_inputs(sim, master):
    """io-dvt reads the door and the bolt from bits 1 and 2 of the module's status register
    (input 6, bit 0 the tamper switch): one read of inputs 0..6 a poll.  The module serves
    them on its discrete inputs as well, so a profile without the mirror (io-dvt-discrete:
    two reads, the bits by function 02) reads the same values from the same module."""
    io = sim.device("io")
    io.set(door_open=1, door_bolt=0)
    assert master.read_registers(1, frames.READ_INPUT, 6, 1, 0.1) == [0b011]
    assert master.read_bits(1, frames.READ_DISCRETE, 0, 2, 0.1) == [1, 0]
    master.close()   # the port is the pollers' now
    for profile, expected in (("io-dvt", [(1, frames.READ_INPUT, 0, 7)]),
                              ("io-dvt-discrete", [(1, frames.READ_INPUT, 0, 7), (1, frames.READ_DISCRETE, 0, 2)])):
        for door_open, door_bolt in ((1, 0), (0, 1)):
            io.set(door_open=door_open, door_bolt=door_bolt)
            requests: list = []
            poller = BusPoller(sim.bus("b1").port, [PolledDevice("io", profile, 1, 100)], BusOptions(baud=19200),
                               _logging(requests))
            try:
                assert poller.poll_cycle() == [True]
                got = poller.snapshot()
            finally:
                poller.stop()
            assert requests == expected, profile
            assert (got["io.door_open"], got["io.door_bolt"], got["io.tamper"]) == (door_open, door_bolt, 1), profile


def _logging(requests: list):
    """A master factory whose masters note each read as (address, function, start, count)."""
    class Logging(RtuMaster):
        def transact(self, request, expected, timeout):
            requests.append(_read_of(request))
            return super().transact(request, expected, timeout)

    return lambda port, options: Logging(port, options.baud, options.parity, options.stopbits)


def test_silent_and_exception_devices_go_offline_with_events(sim):
    poller = _poller(sim.bus("b1").port).start()
    try:
        assert wait_until(lambda: poller.snapshot()["bms1.online"] and poller.snapshot()["io.online"])
        sim.device("bms1").set_fault("silence")
        sim.device("io").set_fault("exception", code=4)
        assert wait_until(lambda: not poller.snapshot()["bms1.online"])
        assert wait_until(lambda: not poller.snapshot()["io.online"])
        snap = poller.snapshot()
        assert snap["bms1.comm_timeouts"] >= 2 and snap["io.comm_exc"] == 4
        assert snap["bms2.online"] == 1  # the others keep being polled
        events = poller.events()
        assert any(e.device == "io" and e.kind == ev.EXCEPTION and e.code == 4 for e in events)
        assert {e.device for e in events if e.kind == ev.OFFLINE} >= {"io", "bms1"}
        why = {e.device: e.detail for e in events if e.kind == ev.OFFLINE}
        assert "failed polls; last: no answer within" in why["bms1"]
        assert "failed polls; last: slave 1 answered function" in why["io"] and "exception code 4" in why["io"]
        sim.device("bms1").set_fault(None)
        assert wait_until(lambda: poller.snapshot()["bms1.online"])
        assert poller.snapshot()["bms1.pack_mv"] == 52800
    finally:
        poller.stop()


def test_sunspec_device_that_is_not_sunspec_is_a_mismatch_event(sim):
    poller = BusPoller(sim.bus("b1").port, [PolledDevice("bms", "sunspec-battery", 2, 50)]).start()
    try:
        seen = []
        assert wait_until(lambda: seen.extend(poller.events()) or any(e.kind == ev.MISMATCH for e in seen))
        time.sleep(0.3)  # several more failed discoveries: reported once
        seen += poller.events()
        mismatches = [e for e in seen if e.kind == ev.MISMATCH]
        assert len(mismatches) == 1 and "no SunSpec marker" in mismatches[0].detail
        assert poller.snapshot()["bms.online"] == 0 and poller.stats()["bms"]["exceptions"] > 0
    finally:
        poller.stop()


def test_coil_writes_are_read_back(sim):
    poller = _poller(sim.bus("b1").port).start()
    try:
        assert wait_until(lambda: poller.snapshot()["relay.online"])
        token = poller.write_coils("relay", {"k1": 1, "k3": 1})
        results = []
        assert wait_until(lambda: results.extend(e for e in poller.events() if e.code == token
                                                and e.kind.startswith("write")) or results)
        assert results[0].kind == ev.WRITE_OK
        assert sim.device("relay").values == {"k1": 1, "k2": 0, "k3": 1, "k4": 0}
        assert poller.snapshot()["relay.k3"] == 1
        sim.device("relay").set_fault("silence")
        token = poller.write_coils("relay", {"k1": 0})
        results.clear()
        assert wait_until(lambda: results.extend(e for e in poller.events() if e.code == token
                                                and e.kind.startswith("write")) or results)
        assert results[0].kind == ev.WRITE_FAILED
    finally:
        poller.stop()


class _NoisyFirstWrite(RtuMaster):
    """A real master whose first coil write is hit by noise on the wire: its CRC arrives
    wrong, so the slave drops it and never answers, as a real one would."""

    spoiled = False

    def transact(self, request, expected, timeout):
        if request[1] == frames.WRITE_COIL and not self.spoiled:
            self.spoiled = True
            super().transact(request[:-1] + bytes([request[-1] ^ 0xFF]), expected, timeout)
        return super().transact(request, expected, timeout)


def test_a_coil_write_lost_to_noise_is_sent_again_not_reported_failed(sim):
    def factory(port: str, options: BusOptions) -> RtuMaster:
        return _NoisyFirstWrite(port, options.baud, options.parity, options.stopbits)
    poller = _poller(sim.bus("b1").port, factory).start()
    try:
        assert wait_until(lambda: poller.snapshot()["relay.online"])
        timeouts = poller.snapshot()["relay.comm_timeouts"]
        token = poller.write_coils("relay", {"k2": 1})         # the siren
        results = []
        assert wait_until(lambda: results.extend(e for e in poller.events() if e.code == token
                                                and e.kind.startswith("write")) or results)
        assert results[0].kind == ev.WRITE_OK, results[0]
        assert sim.device("relay").values["k2"] == 1
        assert poller.snapshot()["relay.comm_timeouts"] == timeouts + 1   # the lost try is counted
    finally:
        poller.stop()


@pytest.fixture(scope="module")
def scripted():
    s = ScriptedSlave()
    m = RtuMaster(s.port, 115200)
    yield s, m
    m.close()
    s.close()


answers = fuzz_answers()


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=None)
@given(answer=answers)
def test_fuzzed_answers_over_a_pty_never_crash_or_stall(scripted, answer):
    slave, master = scripted
    slave.script([answer])
    try:
        values = master.read_registers(7, frames.READ_HOLDING, 0, 3, 0.01)
        assert answer == GOOD and values == [1, 2, 3]
    except ModbusError:
        pass
    # whatever came before, a good answer is read correctly next
    slave.script([GOOD])
    assert master.read_registers(7, frames.READ_HOLDING, 0, 3, 0.05) == [1, 2, 3]


def test_the_rest_of_a_late_answer_is_not_taken_as_the_next_answer():
    """The answer begins after the deadline and trickles in at a slow line's pace; the
    next request waits until the line has been quiet for t3.5 (16 ms at 2400 baud)."""
    slave = ScriptedSlave()
    master = RtuMaster(slave.port, 2400)
    late = frames.read_answer(7, frames.READ_HOLDING, [9, 9, 9])
    try:
        slave.script([Late(late, 0.05, 0.003), GOOD])
        with pytest.raises(ModbusError):
            master.read_registers(7, frames.READ_HOLDING, 0, 3, 0.01)
        assert master.late is None
        assert master.read_registers(7, frames.READ_HOLDING, 0, 3, 0.5) == [1, 2, 3]
        address, turnaround = master.late   # seen while waiting: the poller learns from it
        assert address == 7 and turnaround > 0
    finally:
        master.close()
        slave.close()


def test_an_answer_slower_than_the_wire_is_read_whole_and_the_exception_at_five_bytes():
    """The master sleeps through the rest of an answer once it has begun; a slave that sends
    slower than the baud (a byte every 4 ms at 115200) has nothing new when the master
    wakes: that is a pause to wait through, not a hung-up line.  An exception answer,
    shorter than the read's, ends the read at its 5th byte."""
    slave = ScriptedSlave()
    master = RtuMaster(slave.port, 115200)
    try:
        slave.script([Late(GOOD, 0.005, 0.004), Late(frames.exception_answer(7, 3, 2), 0.005, 0.004), GOOD])
        assert master.read_registers(7, frames.READ_HOLDING, 0, 3, 0.5) == [1, 2, 3]
        with pytest.raises(ModbusException):
            master.read_registers(7, frames.READ_HOLDING, 0, 3, 0.5)
        assert not master.lost
        assert master.read_registers(7, frames.READ_HOLDING, 0, 3, 0.5) == [1, 2, 3]
    finally:
        master.close()
        slave.close()


@settings(max_examples=500)
@given(answer=answers)
def test_check_reply_is_total(answer):
    try:
        assert frames.check_reply(REQUEST, answer) == GOOD[3:-2]
    except ModbusError:
        pass


@settings(max_examples=500)
@given(body=st.binary(max_size=40), tail=st.binary(min_size=2, max_size=2))
def test_a_frame_checks_when_its_last_two_bytes_are_the_crc_of_the_rest(body, tail):
    """crc_ok runs the CRC over the whole frame (0 when its own CRC matches): the same verdict
    as comparing the CRC of the rest with the last two bytes, low byte first."""
    assert frames.crc_ok(body + tail) == (len(body) >= 2 and frames.crc16(body) == tail[0] | tail[1] << 8)
    assert len(body) < 2 or frames.crc_ok(frames.with_crc(body))


@pytest.mark.parametrize("function, count, data, values", [
    (frames.READ_INPUT, 2, bytes((0, 12, 0x80, 1)), [12, 0x8001]),
    (frames.READ_HOLDING, 1, bytes((0xFF, 0xFF)), [0xFFFF]),
    (frames.READ_DISCRETE, 2, bytes((0b10,)), [0, 1]),
    (frames.READ_COILS, 10, bytes((0b101, 0b10)), [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]),
])
def test_a_read_built_once_carries_its_request_and_unpacks_its_answer(function, count, data, values):
    read = frames.read(3, function, 7, count)
    assert read.request == frames.read_request(3, function, 7, count) and read.expected == 5 + len(data)
    assert frames.values(read, data) == values


def test_a_bus_copies_its_snapshot_to_where_the_catalog_put_each_value():
    """As a slice where the catalog lists the bus's devices in a row (as the gateway's does),
    value by value where it does not."""
    devices = [PolledDevice("io", "io-dvt", 1, 100), PolledDevice("relay", "relay4", 4, 500)]
    poller = BusPoller("/dev/ttyNOWHERE", devices)   # not opened: only its snapshot is copied
    own = [spec for d in devices for spec in device_signals(d.instance, load_profile(d.profile).signal_specs())]
    other, more = ("sys.x", "count", 0), ("sys.y", "count", 0)
    for specs, as_range in (([other] + own + [more], True), (own[:3] + [other] + own[3:] + [more], False)):
        catalog = Catalog(specs)
        indices = poller.indices(catalog)
        assert isinstance(indices, range) == as_range
        poller._flat[:] = range(100, 100 + len(poller.names))
        image = catalog.new_image()
        poller.copy_into(image, indices)
        snapshot = poller.snapshot()
        assert [image[catalog.index[n]] for n in poller.names] == [snapshot[n] for n in poller.names]
        assert image[catalog.index["sys.x"]] == image[catalog.index["sys.y"]] == 0


def test_a_scan_runs_in_the_bus_thread_between_polls(sim):
    """`bus scan` while the poller owns the port: one address per step, polls go on."""
    from drivers.modbus.scan import scan_job

    # A floor above the slowest turnaround (40 ms): a poll that timed out early would leave a
    # late answer that the next probe takes for a garbled slave.
    poller = _poller(sim.bus("b1").port, timeout_floor_ms=80, timeout_ceiling_ms=200).start()
    try:
        assert wait_until(lambda: poller.snapshot()["io.online"] == 1)
        ok_before = poller.snapshot()["io.comm_ok"]
        first = poller.run_job(scan_job(range(1, 21), 0.1))
        second = poller.run_job(scan_job([4], 0.1))   # queued behind the first
        found = first.result(10)
        assert [f.address for f in found] == [1, 2, 3, 4]
        assert found[2].sunspec_base == 40000 and found[2].identity["SN"]
        assert [f.address for f in second.result(5)] == [4]
        # the io module was polled all along (every 100 ms) through 16 silent addresses (100 ms each)
        assert poller.snapshot()["io.comm_ok"] > ok_before + 2
        assert poller.snapshot()["io.online"] == 1
    finally:
        poller.stop()


def test_a_job_is_refused_when_the_bus_is_not_polled(sim):
    poller = _poller(sim.bus("b1").port)
    with pytest.raises(BusError, match="not being polled"):
        poller.run_job(lambda master: iter(()))


def test_a_pulled_port_silences_the_devices_and_is_reopened(tmp_path):
    """The adapter pulled (the pty and its link vanish), then plugged back in (a new pty
    at the same path): the bus thread lives, the devices go offline and come back, through
    a new master from the poller's master factory."""
    first = Simulator([SimBus("b1", cabinet())]).start()
    link = first.link(tmp_path)["b1"]
    opened: list[tuple[str, BusOptions]] = []

    def factory(port: str, options: BusOptions) -> RtuMaster:
        master = open_master(port, options)   # PortError while the port is missing: not counted
        opened.append((port, options))
        return master

    poller = _poller(str(link), factory).start()
    seen = []
    try:
        assert wait_until(lambda: all(poller.snapshot()[d + ".online"] for d in ("io", "bms1", "bms2", "relay")))
        first.stop()   # unplugged: reads hang up, tcflush raises termios.error
        assert wait_until(lambda: not any(poller.snapshot()[d + ".online"] for d in ("io", "bms1", "bms2", "relay")))
        assert poller.crashed() is None
        # All at once, each saying why: the port, not a glitch (no hysteresis to ride out).
        assert {poller.snapshot()[d + ".comm_exc"] for d in ("io", "bms1", "bms2", "relay")} == {PORT_LOST}
        seen += poller.events()
        lost = [e for e in seen if e.kind == ev.PORT_LOST]
        assert len(lost) == 1 and lost[0].device == str(link) and "failed" in lost[0].detail
        offline = [e for e in seen if e.kind == ev.OFFLINE]
        assert {e.device for e in offline} == {"io", "bms1", "bms2", "relay"}
        assert all("failed polls; last: port " in e.detail for e in offline)
        with Simulator([SimBus("b1", cabinet())]) as second:
            second.link(tmp_path)
            assert wait_until(lambda: all(poller.snapshot()[d + ".online"] for d in ("io", "bms1", "bms2", "relay")))
            assert poller.snapshot()["bms1.pack_mv"] == 52800
            seen += poller.events()
            assert [e.kind for e in seen].count(ev.PORT_REOPENED) == 1
            assert opened == [(str(link), BusOptions(baud=19200))] * 2
    finally:
        poller.stop()


class _Crash(BaseException):
    """Escapes every handler of the bus thread, as a bug would."""


def _crashing_job(master):
    raise _Crash("a bug in a job")
    yield


def test_a_dead_bus_thread_marks_its_devices_offline_and_can_be_restarted(sim):
    poller = _poller(sim.bus("b1").port).start()
    try:
        assert wait_until(lambda: poller.snapshot()["io.online"] and poller.snapshot()["bms1.online"])
        assert poller.crashed() is None
        poller.run_job(_crashing_job)
        assert wait_until(lambda: poller.crashed() is not None)
        assert "_Crash: a bug in a job" in poller.crashed()
        assert not poller.snapshot()["io.online"] and not poller.snapshot()["bms1.online"]
        poller.restart()
        assert poller.crashed() is None
        assert wait_until(lambda: poller.snapshot()["io.online"] and poller.snapshot()["bms1.online"])
    finally:
        poller.stop()


def test_a_failing_job_fails_its_future_and_polling_goes_on(sim):
    poller = _poller(sim.bus("b1").port).start()

    def buggy(master):
        yield
        raise ValueError("a bug in a scan")

    try:
        with pytest.raises(ValueError, match="a bug in a scan"):
            poller.run_job(buggy).result(5)
        assert poller.crashed() is None
        assert wait_until(lambda: poller.snapshot()["io.online"])
    finally:
        poller.stop()


@pytest.mark.parametrize("parity, stopbits", [("E", 2), ("O", 1), ("N", 2)])
def test_the_bus_framing_reaches_the_port_and_a_matching_simulator_answers(parity, stopbits):
    bus = SimBus("framed", [SimDevice("bms1", "bms16-vendor", 2, BMS)], parity=parity, stopbits=stopbits)
    with Simulator([bus]):
        default = RtuMaster(bus.port, 19200)   # 8N1: another framing, no answer
        try:
            with pytest.raises(ModbusTimeout):
                default.read_registers(2, frames.READ_INPUT, 4, 1, 0.05)
        finally:
            default.close()
        dropped = bus.dropped
        assert dropped >= 1
        poller = BusPoller(bus.port, [PolledDevice("bms1", "bms16-vendor", 2, 50)],
                           BusOptions(baud=19200, parity=parity, stopbits=stopbits)).start()
        try:
            assert poller._master.serial.parity == parity and poller._master.serial.stopbits == stopbits
            assert wait_until(lambda: poller.snapshot()["bms1.online"])
            assert poller.snapshot()["bms1.soc_pct"] == 81 and bus.dropped == dropped
        finally:
            poller.stop()


@pytest.mark.parametrize("mode, cannot", [("kernel", "switch the transceiver (TIOCSRS485)"), ("rts", "drive RTS")])
def test_rs485_direction_control_a_port_cannot_do_is_refused_saying_what_to_use(sim, mode, cannot):
    """A pty has neither RTS nor the kernel's RS-485 mode, as many USB adapters lack the latter."""
    with pytest.raises(PortError) as err:
        RtuMaster(sim.bus("b1").port, 19200, rs485=Rs485(mode))
    assert "rs485 = \"{}\"".format(mode) in str(err.value) and cannot in str(err.value)
    assert str(err.value).startswith("serial port " + sim.bus("b1").port)


class _RtsLine:
    """The port's RTS line as levels with the bytes sent so far (a pty has no RTS: the
    transport seam puts this in front of the real pty; the simulator answers on it)."""

    def __init__(self, port, rs485: Rs485):
        self.port = port
        self.levels: list[tuple[bool, int]] = []
        self.sent = 0
        self._rts = not rs485.rts_tx_high   # parked at receive, as open_serial parks it

    def fileno(self):
        return self.port.fileno()

    def close(self):
        self.port.close()

    @property
    def rts(self):
        return self._rts

    @rts.setter
    def rts(self, level: bool) -> None:
        self.sent = self.port.out_waiting   # tcdrain has run before RTS falls: nothing left to send
        self._rts = level
        self.levels.append((level, self.sent))


@pytest.mark.parametrize("tx_high", [True, False])
def test_rts_direction_control_drives_the_bus_for_the_request_only(sim, tx_high):
    lines = []

    def transport(port, baud, parity, stopbits, rs485):
        lines.append(_RtsLine(open_serial(port, baud, parity, stopbits), rs485))
        return lines[0]

    rs485 = Rs485("rts", tx_high, delay_before_ms=2, delay_after_ms=1)
    master = RtuMaster(sim.bus("b1").port, 19200, rs485=rs485, transport=transport)
    try:
        for _ in range(3):
            assert master.read_registers(1, frames.READ_INPUT, 0, 2, 0.1) == [12, 0]
        # Up to the send level before each request, back once its last bit is out, and
        # the answer is read with the transceiver listening.
        assert lines[0].levels == [(tx_high, 0), (not tx_high, 0)] * 3
        assert lines[0].rts == (not tx_high)
    finally:
        master.close()


def test_a_bad_framing_is_refused_with_the_port_named():
    with pytest.raises(PortError, match="/dev/ttyX0: parity 'M'"):
        RtuMaster("/dev/ttyX0", 9600, "M", 1)


def test_a_slow_slave_comes_online_at_first_contact_and_its_late_answers_teach_the_timeout():
    """A BMS answering 40 ms after the request at 19200 baud (on the simulator's wire): the
    first poll waits the ceiling, the turnaround it measures sets the timeout, and the device
    is online after its first two polls, without a single timeout."""
    bms = SimDevice("bms1", "bms16-vendor", 2, BMS, turnaround_ms=40)
    with Simulator([SimBus("slow", [bms], 19200)]) as sim:
        poller = BusPoller(sim.bus("slow").port, [PolledDevice("bms1", "bms16-vendor", 2, 300)],
                           BusOptions(baud=19200, timeout_floor_ms=20, timeout_ceiling_ms=200)).start()
        try:
            assert wait_until(lambda: poller.snapshot()["bms1.online"])
            stats = poller.stats()["bms1"]
            assert stats["timeouts"] == 0 and stats["latency_ms"] >= 40
            assert poller.snapshot()["bms1.soc_pct"] == 81
        finally:
            poller.stop()



def test_a_scan_at_9600_waits_long_enough_for_a_slow_sunspec_device():
    """Finding 6: a fixed 30 ms per read failed the identity reads of a 40 ms BMS at 9600 baud,
    and their late answers showed as a phantom garbled slave at the next address."""
    from drivers.modbus.scan import probes, scan_timeout

    bms = SimDevice("bms2", "sunspec-battery", 3, SUNSPEC, turnaround_ms=40)
    with Simulator([SimBus("slow", [bms], 9600)]) as sim:
        master = RtuMaster(sim.bus("slow").port, 9600)
        try:
            found = [f for f in probes(master, [3, 4], scan_timeout(9600)) if f is not None]
        finally:
            master.close()
    assert [f.address for f in found] == [3] and "garbled" not in found[0].note
    assert found[0].identity["SN"] and "?" not in found[0].identity.values()


def test_a_sunspec_battery_at_9600_comes_online_with_its_long_block_split():
    """Finding 4: the 111-register battery read takes 260 ms at 9600 baud, more than the 200 ms
    ceiling, so the battery never came online; the poller splits it into reads that fit."""
    bms = SimDevice("bms2", "sunspec-battery", 3, SUNSPEC, turnaround_ms=20)
    with Simulator([SimBus("slow", [bms], 9600)]) as sim:
        poller = BusPoller(sim.bus("slow").port, [PolledDevice("bms2", "sunspec-battery", 3, 1000)],
                           BusOptions(baud=9600, timeout_ceiling_ms=200)).start()
        try:
            assert wait_until(lambda: poller.snapshot()["bms2.online"])
            # Unsplit, every read of the block timed out and the battery never came online.  A
            # late answer on a loaded host may still time out one read against the adaptive
            # timeout (tens of ms here), which is the link's business, not the split's.
            assert wait_until(lambda: poller.stats()["bms2"]["ok"] >= 6)
            stats = poller.stats()["bms2"]
            assert poller.snapshot()["bms2.soc_pct"] == 64 and stats["timeouts"] < stats["ok"], stats
        finally:
            poller.stop()


@pytest.mark.parametrize("pdu", [bytes((7,)), bytes((17,)), bytes((43, 14, 1, 0)), bytes((24, 0, 0))])
def test_other_functions_get_exception_1_not_silence(master, pdu):
    """Finding 8: FC7, FC17, FC43 and FC24 requests are not 8 bytes; the simulator waited for
    8, dropped them at t3.5 and stayed silent, against docs/simulator.md."""
    with pytest.raises(ModbusException) as e:
        master.transact(frames.with_crc(bytes((2,)) + pdu), 5, 0.1)
    assert e.value.code == 1


def test_a_broadcast_write_is_executed_by_every_slave_without_an_answer(sim, master):
    with pytest.raises(ModbusTimeout):
        master.transact(frames.write_coil_request(0, 2, True), 8, 0.1)
    assert sim.device("relay").values["k3"] == 1
    assert master.read_bits(4, frames.READ_COILS, 0, 4, 0.1) == [0, 0, 1, 0]


def test_sunspec_registers_refuse_writes_even_to_the_model_id(sim, master):
    for register in (40002, 40002 + 68 + 2):     # model 1's ID, a point of model 802
        with pytest.raises(ModbusException) as e:
            master.write_register(3, register, 999, 0.1)
        assert e.value.code == 2
    assert master.read_registers(3, frames.READ_HOLDING, 40002, 1, 0.1) == [1]


class _LoggingMaster(RtuMaster):
    """Every read on the bus as (address, function, start, outcome), in bus order."""

    def __init__(self, *args, log: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    def transact(self, request, expected, timeout):
        read = _read_of(request)
        if read is None:
            return super().transact(request, expected, timeout)
        noted = read[:3]
        try:
            data = super().transact(request, expected, timeout)
        except ModbusError as e:
            self.log.append((*noted, type(e).__name__))
            raise
        self.log.append((*noted, "ok"))
        return data


def test_the_io_module_is_read_between_a_batterys_pieces_and_a_silent_one_confirmed_at_once():
    """Issue 19: a battery's 111 registers are 3 reads at 19200 baud beside an I/O module
    polled every 100 ms, each read scheduled on its own: nothing goes between the I/O
    module's two reads (a module read without its status mirror, io-dvt-discrete: the
    door and bolt from its discrete inputs, after its input registers), the battery's
    pieces come in order and decode, and once the I/O
    module falls silent its failed poll is confirmed at once (its 2 + 2 timeouts back to
    back, no battery read between them: it was polled a period later, 3.7-4.2 periods
    to offline)."""
    log: list = []
    devices = [SimDevice("io", "io-dvt", 1, {"door_bolt": 1}, turnaround_ms=5),
               SimDevice("bms2", "sunspec-battery", 3, SUNSPEC, turnaround_ms=5)]
    with Simulator([SimBus("w", devices, 19200)]) as sim:
        poller = BusPoller(sim.bus("w").port, [PolledDevice("io", "io-dvt-discrete", 1, 100),
                                               PolledDevice("bms2", "sunspec-battery", 3, 300)],
                           BusOptions(baud=19200, timeout_ceiling_ms=200),
                           lambda port, o: _LoggingMaster(port, o.baud, log=log)).start()
        try:
            assert wait_until(lambda: poller.snapshot()["bms2.online"] and poller.snapshot()["io.online"])
            ok = poller.snapshot()["bms2.comm_ok"]
            assert wait_until(lambda: poller.snapshot()["bms2.comm_ok"] >= ok + 9)   # three more polls
            assert poller.snapshot()["bms2.soc_pct"] == 64 and poller.snapshot()["io.door_bolt"] == 1
            silenced = len(log)   # (a read in flight may log after it: never an I/O module's timeout)
            sim.device("io").set_fault("silence")
            assert wait_until(lambda: not poller.snapshot()["io.online"], 10)
        finally:
            poller.stop()
    io_reads = [i for i, (address, function, _s, outcome) in enumerate(log)
                if address == 1 and function == frames.READ_INPUT and outcome == "ok"]
    assert io_reads and all(log[i + 1][:2] == (1, frames.READ_DISCRETE) for i in io_reads if i + 1 < len(log))
    pieces = collections.Counter(start for address, _f, start, outcome in log if address == 3 and outcome == "ok")
    assert len([start for start, n in pieces.items() if n >= 3]) >= 3     # 3 pieces, read in 3 polls or more
    silent = [i for i, (address, _f, _s, outcome) in enumerate(log)
              if i >= silenced and address == 1 and outcome == "ModbusTimeout"]
    assert len(silent) >= 4
    assert all(address == 1 for address, *_rest in log[silent[0]:silent[3] + 1])


def test_a_device_the_wire_cannot_poll_on_its_period_is_reported_stretched():
    """A SunSpec battery asked for every 50 ms, whose 111 registers take some 200 ms on a
    19200-baud wire: its values are that old, and the poller says so (once), naming how
    often it is polled in fact; the console's `devices` shows the same figure."""
    devices = [SimDevice("bms2", "sunspec-battery", 3, SUNSPEC, turnaround_ms=20)]
    with Simulator([SimBus("w", devices, 19200)]) as sim:
        poller = BusPoller(sim.bus("w").port, [PolledDevice("bms2", "sunspec-battery", 3, 50)],
                           BusOptions(baud=19200)).start()
        try:
            news: list = []
            assert wait_until(lambda: news.extend(poller.events()) or any(e.kind == ev.STRETCHED for e in news), 20)
            assert poller.stats()["bms2"]["poll_gap_ms"] > 150
        finally:
            poller.stop()
    stretched = [e for e in news if e.kind == ev.STRETCHED]
    assert len(stretched) == 1 and stretched[0].device == "bms2"
    assert "not every 0.05 s" in stretched[0].detail and "raise the baud" in stretched[0].detail
