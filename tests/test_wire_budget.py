"""The wire budget `cabguard config check` shows an installer (issue 19, finding 4)."""

from __future__ import annotations

import subprocess
import sys

from drivers.modbus import frames
from drivers.modbus.budget import device_load, read_limit_s, verdict
from drivers.modbus.profiles import load_profile
from tests.test_runtime import SITE

# --installing: the config as on the flashing machine (no key files here; the packs compile for it)
CLI = [sys.executable, "-m", "controller.cli.main", "config", "check", "--installing"]


def check(tmp_path, text):
    site = tmp_path / "site.toml"
    site.write_text(text)
    return subprocess.run(CLI + [str(site)], capture_output=True, text=True)


def site(tmp_path, baud, io_poll_ms):
    return SITE.format(d=tmp_path, port="/dev/ttyUSB0").replace("baud = 19200", "baud = {}".format(baud)) \
        .replace("poll_ms = 100", "poll_ms = {}".format(io_poll_ms))


def test_a_bus_over_its_wire_is_refused_naming_the_device_to_slow_down(tmp_path):
    """At 9600 baud an io module polled every 50 ms needs 126 % of the wire by itself."""
    done = check(tmp_path, site(tmp_path, 9600, 50))
    assert done.returncode == 1
    assert ("error: bus rs485: wire load 154 % at 9600 baud (io 126 %, bms1 23 %, relay 5 %): over 100 %"
            in done.stderr)
    assert "slow down io (poll_ms = 195 or more) or raise the baud" in done.stderr and "refused" in done.stderr


def test_a_busy_bus_is_a_warning_and_a_quiet_one_shows_its_load(tmp_path):
    quiet = check(tmp_path, site(tmp_path, 19200, 100))
    assert quiet.returncode == 0, quiet.stderr
    assert "bus rs485: wire load 43 % at 19200 baud (io 32 %, bms1 9 %, relay 2 %)\n" in quiet.stdout
    busy = check(tmp_path, site(tmp_path, 9600, 100))
    assert busy.returncode == 0, busy.stderr
    # bms1's 30 registers take more than the io module's 100 ms at 9600: two reads (23 %, not 18 %)
    assert "warning: bus rs485: wire load 91 % at 9600 baud (io 63 %, bms1 23 %, relay 5 %)" in busy.stdout
    assert "slow down io (poll_ms = 195 or more)" in busy.stdout and "OK" in busy.stdout


def test_a_read_costs_the_documented_wire_time_and_long_blocks_split():
    """(13 + 2N)·11/baud + 2·t3.5 per read; a 111-register SunSpec block at 9600 with a 200 ms
    ceiling is read in two (one read would take 260 ms)."""
    io = device_load("io", load_profile("io-dvt"), 100, 19200, 0.2)
    assert io.reads == 2
    battery = device_load("bms2", load_profile("sunspec-battery"), 1000, 9600, 0.2)
    assert battery.reads == 2
    assert [n for _s, n in frames.split_reads(frames.READ_HOLDING, 0, 111, 9600, 0.2)] == [58, 53]
    assert frames.split_reads(frames.READ_HOLDING, 0, 111, 19200, 0.2) == [(0, 111)]
    assert abs(battery.poll_s - (2 * 13 + 2 * 111) * 11 / 9600 - 4 * frames.t35_seconds(9600)) < 1e-9
    level, line = verdict("b", 9600, [battery])
    assert level == "ok" and "wire load 30 %" in line


def test_no_read_is_longer_than_the_shortest_poll_period():
    """So the devices polled often are polled between a long block's reads (the poller does)."""
    assert read_limit_s(0.2, [0.1, 1.0]) == 0.1
    assert read_limit_s(0.2, [0.5, 1.0]) == 0.2
    assert [n for _s, n in frames.split_reads(frames.READ_HOLDING, 0, 111, 19200, read_limit_s(0.2, [0.1]))] == \
        [37, 37, 37]
    assert device_load("bms2", load_profile("sunspec-battery"), 1000, 19200, read_limit_s(0.2, [0.1, 1.0])).reads == 3
