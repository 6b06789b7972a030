"""The simulator: SIM.toml, `cabguard sim`, `cabguard bus scan`, runtime commands."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.modbus import frames
from drivers.modbus.master import RtuMaster
from simulator.config import load_config
from simulator.control import apply_command
from simulator.errors import SimConfigError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "simulator/configs/demo.toml"


def test_demo_config_has_the_cabinet_on_one_bus():
    sim = load_config(DEMO)
    try:
        bus = sim.bus("rs485-1")
        assert {a: d.profile.name for a, d in bus.devices.items()} == {
            1: "io-dvt", 2: "bms16-vendor", 3: "sunspec-battery", 4: "relay4"}
    finally:
        for b in sim.buses.values():
            os.close(b.master_fd)
            os.close(b.slave_fd)


def test_the_demo_packs_read_as_modules_of_their_cells_in_series():
    """Each pack's string is modules x cells_per_module cells, every one between the lowest
    and the highest cell; the vendor pack's 16 cell registers are one module's cells."""
    sim = load_config(DEMO)
    try:
        packs = [d for b in sim.buses.values() for d in b.devices.values() if d.profile.device_class == "battery"]
        assert [d.name for d in packs] == ["bms1", "bms2"]
        for d in packs:
            v = d.values
            cells = v["modules"] * v["cells_per_module"]
            assert cells * v["cell_vmin_mv"] <= v["pack_mv"] <= cells * v["cell_vmax_mv"], d.name
            module = [v[n] for n in sorted(v) if n[:4] == "cell" and n[4:6].isdigit()]
            if module:
                assert len(module) == v["cells_per_module"] and (min(module), max(module)) == (
                    v["cell_vmin_mv"], v["cell_vmax_mv"])
    finally:
        for b in sim.buses.values():
            os.close(b.master_fd)
            os.close(b.slave_fd)


def test_a_simulated_device_serves_its_profiles_constant_and_no_other():
    from simulator.slave import SimDevice

    dev = SimDevice("bms1", "bms16-vendor", 2)
    assert dev.values["cells_per_module"] == 16
    dev.set(cells_per_module=16)
    with pytest.raises(SimConfigError, match="profile bms16-vendor states cells_per_module = 16"):
        dev.set(cells_per_module=2)


@pytest.mark.parametrize("change, message", [
    ('address = 2\n', "bus[0]: bus b: two devices share an address ([2, 2])"),
    ('profile = "no-such"\n', "bus[0].device[1]: unknown device profile 'no-such'"),
    ('values = { pack_mvv = 1 }\n', "has no signal pack_mvv"),
    ('fault = { kind = "gremlins" }\n', "unknown fault 'gremlins'"),
    ('colour = "red"\n', "bus[0].device[1].colour: unknown key"),
])
def test_bad_configs_name_file_and_key(tmp_path, change, message):
    key = change.split(" =")[0]
    text = "[[bus]]\nname = \"b\"\n[[bus.device]]\nname = \"io\"\nprofile = \"io-dvt\"\naddress = 2\n" \
           "[[bus.device]]\nname = \"bms\"\nprofile = \"bms16-vendor\"\naddress = 3\n"
    lines = text.splitlines(keepends=True)
    if key in ("address", "profile"):
        lines = [change if (ln.startswith(key) and i > 6) else ln for i, ln in enumerate(lines)]
    else:
        lines.append(change)
    path = tmp_path / "sim.toml"
    path.write_text("".join(lines))
    with pytest.raises(SimConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_a_bus_framing_is_configured_and_checked(tmp_path):
    path = tmp_path / "sim.toml"
    bus = "[[bus]]\nname = \"b\"\nparity = \"{}\"\nstopbits = {}\n" \
          "[[bus.device]]\nname = \"io\"\nprofile = \"io-dvt\"\naddress = 1\n"
    path.write_text(bus.format("E", 2))
    sim = load_config(path)
    with sim:
        assert (sim.bus("b").parity, sim.bus("b").stopbits) == ("E", 2)
    path.write_text(bus.format("X", 1))
    with pytest.raises(SimConfigError, match=r"bus\[0\]: bus b: parity 'X' / stop bits 1: want parity N, E or O"):
        load_config(path)


def test_commands_change_a_running_simulator():
    sim = load_config(DEMO)
    with sim:
        apply_command(sim, "set bms1 soc_pct=40 temp_max_dc=451")
        apply_command(sim, "swap bms2 99001234")
        apply_command(sim, "fault io exception code=6")
        m = RtuMaster(sim.bus("rs485-1").port, 115200)
        try:
            assert m.read_registers(2, frames.READ_INPUT, 4, 1, 0.1) == [400]
            assert sim.device("bms2").values["serial"] == 99001234
            with pytest.raises(Exception, match="exception code 6"):
                m.read_registers(1, frames.READ_INPUT, 0, 1, 0.1)
            apply_command(sim, "fault io none")
            assert m.read_registers(1, frames.READ_INPUT, 0, 1, 0.1) == [12]
        finally:
            m.close()
        with pytest.raises(SimConfigError, match="no simulated device 'bms9'"):
            apply_command(sim, "set bms9 soc_pct=1")
        with pytest.raises(SimConfigError, match="is not NAME=VALUE"):
            apply_command(sim, "set bms1 soc_pct")


def test_get_reads_back_what_a_device_holds_coils_the_master_wrote_included():
    sim = load_config(DEMO)
    with sim:
        m = RtuMaster(sim.bus("rs485-1").port, 115200)
        try:
            m.write_coil(4, 0, True, 0.1)                    # relay k1, as the gateway's lock
        finally:
            m.close()
        assert apply_command(sim, "get relay k1 k2") == "ok relay k1=1 k2=0"
        assert apply_command(sim, "get bms1").startswith("ok bms1 pack_mv=52800 ")
        with pytest.raises(SimConfigError, match="has no signal k9"):
            apply_command(sim, "get relay k9")


def cabguard(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "controller.cli.main", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cabguard_sim_links_ptys_scan_finds_devices_and_sigterm_stops_it(tmp_path):
    links = tmp_path / "links"
    proc = cabguard("sim", "--config", str(DEMO), "--link", str(links))
    try:
        line = proc.stdout.readline()
        assert line.startswith("bus rs485-1: {}".format(links / "rs485-1"))
        link = links / "rs485-1"
        assert os.readlink(link).startswith("/dev/pts/")
        scan = subprocess.run([sys.executable, "-m", "controller.cli.main", "bus", "scan", str(link),
                               "--last", "6", "--baud", "19200"],
                              cwd=ROOT, capture_output=True, text=True)
        assert scan.returncode == 0, scan.stderr
        assert "4 slave(s) answer" in scan.stdout
        assert "address   3  SunSpec at 40000: models 1, 802, 803, 805" in scan.stdout
        assert "SN=77001234" in scan.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    assert not (links / "rs485-1").exists()


def test_a_second_sim_on_the_same_link_folder_refuses_and_leaves_the_first_ones_links(tmp_path):
    links = tmp_path / "links"
    first = cabguard("sim", "--config", str(DEMO), "--link", str(links))
    try:
        assert first.stdout.readline().startswith("bus rs485-1:")
        pty = os.readlink(links / "rs485-1")
        second = subprocess.run([sys.executable, "-m", "controller.cli.main", "sim", "--config", str(DEMO),
                                 "--link", str(links)], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert "{} is in use by a running simulator (PID {})".format(links, first.pid) in second.stderr
        assert os.readlink(links / "rs485-1") == pty      # not stolen, not deleted
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=5) == 0
    again = cabguard("sim", "--config", str(DEMO), "--link", str(links))     # free again once it stopped
    try:
        assert again.stdout.readline().startswith("bus rs485-1:")
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=5) == 0


def test_scan_of_a_missing_port_is_an_installer_message():
    r = subprocess.run([sys.executable, "-m", "controller.cli.main", "bus", "scan", "/dev/ttyUSB97"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "serial port /dev/ttyUSB97 does not exist" in r.stderr and "ports that exist" in r.stderr


def test_sim_with_a_bad_config_exits_1(tmp_path):
    bad = tmp_path / "sim.toml"
    bad.write_text("[[bus]]\nname = \"b\"\n")
    proc = cabguard("sim", "--config", str(bad), "--link", str(tmp_path / "l"))
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1 and "no [[bus.device]] tables" in err


def test_stdin_commands_reach_the_running_simulator(tmp_path):
    proc = cabguard("sim", "--config", str(DEMO), "--link", str(tmp_path), "--commands",
                    stdin=subprocess.PIPE)
    try:
        proc.stdout.readline()
        proc.stdout.readline()
        proc.stdin.write("set bms1 soc_pct=33\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok set bms1 soc_pct=33"
        m = RtuMaster(str(tmp_path / "rs485-1"), 115200)
        try:
            assert m.read_registers(2, frames.READ_INPUT, 4, 1, 0.2) == [330]
        finally:
            m.close()
        proc.stdin.write("fault nobody silence\n")
        proc.stdin.flush()
        assert "error: no simulated device 'nobody'" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0


def test_the_documented_sim_toml_example_loads(tmp_path):
    text = (ROOT / "docs/simulator.md").read_text()
    example = text.split("```toml\n")[1].split("```")[0]
    path = tmp_path / "SIM.toml"
    path.write_text(example)
    sim = load_config(path)
    with sim:
        assert set(sim.buses) == {"rs485-1", "rs485-2"}
        assert sim.device("bms1").fault.kind == "slow"
