"""Other Modbus clients read the simulator over its pty: minimalmodbus, pymodbus, pysunspec2."""

from pathlib import Path

import minimalmodbus
import pytest

from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice

SUNSPEC = {"pack_mv": 409600, "current_ma": -2500, "soc_pct": 64, "cell_vmax_mv": 3210,
           "cell_vmin_mv": 3190, "temp_max_dc": 262, "temp_min_dc": 230, "modules": 8,
           "serial": 77001234, "alarm_bits": 5, "cells_per_module": 16}


@pytest.fixture(scope="module")
def sim():
    devices = [SimDevice("io", "io-dvt", 1, {"door_bolt": 1, "vib_rms_mg": 12, "temp_dc": -35}),
               SimDevice("bms1", "bms16-vendor", 2, {"pack_mv": 52800, "current_ma": -1500}),
               SimDevice("bms2", "sunspec-battery", 3, SUNSPEC),
               SimDevice("relay", "relay4", 4)]
    with Simulator([SimBus("b1", devices)]) as s:
        yield s


def test_minimalmodbus_reads_and_writes(sim):
    inst = minimalmodbus.Instrument(sim.bus("b1").port, 2)
    inst.serial.baudrate = 19200
    inst.serial.timeout = 0.5
    try:
        assert inst.read_long(0, functioncode=4) == 52800
        assert inst.read_long(2, functioncode=4, signed=True) == -1500
        inst.address = 1
        assert inst.read_register(5, functioncode=4, signed=True) == -35
        assert inst.read_bits(0, 2, functioncode=2) == [0, 1]
        inst.address = 4
        inst.write_bit(3, 1, functioncode=5)
        assert inst.read_bits(0, 4, functioncode=1) == [0, 0, 0, 1]
        inst.address = 3
        assert inst.read_string(40000, 2, functioncode=3) == "SunS"
        with pytest.raises(minimalmodbus.IllegalRequestError):
            inst.read_register(39000, functioncode=3)
    finally:
        inst.serial.close()


def test_pymodbus_reads(sim):
    from pymodbus.client import ModbusSerialClient

    client = ModbusSerialClient(port=sim.bus("b1").port, baudrate=19200, timeout=0.5, retries=0)
    assert client.connect()
    try:
        r = client.read_input_registers(0, count=4, device_id=2)
        assert not r.isError() and r.registers == [0, 52800, 0xFFFF, 0x10000 - 1500]
        r = client.read_discrete_inputs(0, count=2, device_id=1)
        assert r.bits[:2] == [False, True]
        r = client.read_holding_registers(40000, count=4, device_id=3)
        assert r.registers == [0x5375, 0x6E53, 1, 66]
        assert client.read_holding_registers(100, count=1, device_id=3).isError()
    finally:
        client.close()


def test_pysunspec2_reads_the_simulated_sunspec_battery(sim):
    from sunspec2.modbus.client import SunSpecModbusClientDeviceRTU

    dev = SunSpecModbusClientDeviceRTU(3, sim.bus("b1").port, baudrate=19200, timeout=1)
    try:
        dev.scan()
        assert [m for m in dev.models if isinstance(m, int)] == [1, 802, 803, 805]
        assert dev.common[0].SN.value == "77001234" and dev.common[0].Mn.value == "cabguard"
        battery = dev.models[802][0]
        assert battery.V.cvalue == pytest.approx(409.6) and battery.A.cvalue == pytest.approx(-2.5)
        assert battery.SoC.cvalue == pytest.approx(64) and battery.CellVMax.cvalue == pytest.approx(3.21)
        assert battery.Evt1.value == 5
        bank = dev.models[803][0]
        assert bank.ModTmpMax.cvalue == pytest.approx(26.2) and bank.ModTmpMin.cvalue == pytest.approx(23.0)
        assert bank.string[0].StrNMod.value == 8
        module = dev.models[805][0]
        assert module.NCell.value == 16
        # Finding 8: the 16 cells it declares are there, and points the simulator has no value
        # for read "not implemented" (pysunspec2 gives None), not 0.
        cells = module.groups["lithium-ion-module-cell"]
        assert len(cells) == 16 and cells[15].CellTmp.value is None
        assert battery.AHRtg.value is None and battery.WHRtg.value is None and battery.DisChaRte_SF.value is None
    finally:
        dev.close()


def test_the_gateway_does_not_depend_on_a_client_only_tests_use():
    """Finding 10: minimalmodbus was a runtime dependency, used only by this test and the bench."""
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    runtime = [d.split(">")[0].split("=")[0] for d in project["dependencies"]]
    assert "minimalmodbus" not in runtime
    assert any(d.startswith("minimalmodbus") for d in project["optional-dependencies"]["dev"])
