"""`cabguard run` as systemd runs it: a real process, sd_notify, SIGTERM; and `config check`."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from controller.journal.verify import verify_dir
from drivers.keys import load_key
from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice
from tests.journaling import flashed_keys
from tests.test_runtime import SITE

CLI = [sys.executable, "-m", "controller.cli.main"]


def test_ready_watchdog_status_and_a_clean_sigterm(tmp_path):
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])]).start()
    try:
        flashed_keys(tmp_path)
        site = tmp_path / "site.toml"
        site.write_text(SITE.format(d=tmp_path, port=sim.bus("rs485").port))
        notify = tmp_path / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify))
        sock.settimeout(15)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify), WATCHDOG_USEC="400000")
        proc = subprocess.Popen(CLI + ["run", "--config", str(site)], env=env, stderr=subprocess.PIPE, text=True)
        seen = []
        while not ("WATCHDOG=1" in seen and any(m.startswith("STATUS=mode") for m in seen)):
            seen += sock.recv(4096).decode().splitlines()
        assert "READY=1" in seen and "STATUS=guarding: mode disarmed" in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()
        while "STOPPING=1" not in seen:
            seen += sock.recv(4096).decode().splitlines()
        sock.close()
    finally:
        sim.stop()
    report = verify_dir(tmp_path / "journal", load_key(tmp_path / "keys" / "record.key"))
    assert report.ok
    assert (tmp_path / "state" / "last-good.toml").exists()   # a clean start: kept as last good


def test_config_check_lists_every_problem_or_says_ok(tmp_path):
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port="/dev/ttyUSB0"))
    ok = subprocess.run(CLI + ["config", "check", str(site)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout and "3 device(s)" in ok.stdout
    site.write_text(SITE.format(d=tmp_path, port="/dev/ttyUSB0").replace('profile = "io-dvt"', 'profile = "io-dvx"')
                    .replace("scan_period_ms = 50", "scan_period_ms = 5").replace("[journal]", "[journal]\nbudjet_mb = 3"))
    bad = subprocess.run(CLI + ["config", "check", str(site)], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "gateway.scan_period_ms: want a whole number from 20 to 1000, got 5" in bad.stderr
    assert "journal.budjet_mb: unknown key" in bad.stderr


def test_sigterm_during_start_up_still_stops_cleanly(tmp_path):
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port="/dev/ttyUSB9"))
    proc = subprocess.Popen(CLI + ["run", "--config", str(site)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not (tmp_path / "journal").exists() and time.monotonic() < deadline:
        time.sleep(0.005)   # the journal folder appears while build() runs: stop it there
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.stderr.read()


def test_a_second_gateway_on_the_same_state_folder_exits_1_naming_the_first(tmp_path):
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port="/dev/ttyUSB9"))
    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(15)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    first = subprocess.Popen(CLI + ["run", "--config", str(site)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        while "READY=1" not in sock.recv(4096).decode().splitlines():
            pass
        second = subprocess.run(CLI + ["run", "--config", str(site)], capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert "another gateway (PID {}) is running on the state folder {}".format(
            first.pid, tmp_path / "state") in second.stderr
        first.send_signal(signal.SIGKILL)       # a crash lets go of the lock: the next start runs
        first.wait(15)
        third = subprocess.Popen(CLI + ["run", "--config", str(site)], env=env, stderr=subprocess.PIPE, text=True)
        while "READY=1" not in sock.recv(4096).decode().splitlines():
            pass
        third.send_signal(signal.SIGTERM)
        assert third.wait(15) == 0, third.stderr.read()
    finally:
        first.kill()
        first.wait(15)
        sock.close()
    report = verify_dir(tmp_path / "journal", load_key(tmp_path / "keys" / "record.key"))
    assert report.ok, report.problems[:5]


def test_run_says_on_stderr_that_it_started_and_what_is_wrong(tmp_path):
    flashed_keys(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port="/dev/ttyUSB9"))     # degraded: the port is missing
    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(15)
    proc = subprocess.Popen(CLI + ["run", "--config", str(site)], env=dict(os.environ, NOTIFY_SOCKET=str(notify)),
                            stderr=subprocess.PIPE, text=True)
    try:
        while "READY=1" not in sock.recv(4096).decode().splitlines():
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        sock.close()
    lines = proc.stderr.read().splitlines()
    assert any(line.startswith("cabguard: alarm health: ") and "/dev/ttyUSB9 does not exist" in line
               for line in lines), lines
    assert any(line.startswith("cabguard: started: gateway gw-test site bench, mode disarmed, 3 device(s)")
               for line in lines), lines


def test_gpio_outputs_on_a_machine_without_gpio_name_the_pin_factory_key():
    from gpiozero import BadPinFactory, Device
    from drivers.gpio import GpioError, PinOutput
    try:
        with pytest.warns(Warning):         # gpiozero warns per factory it tries
            Device._default_pin_factory()
    except BadPinFactory:
        pass
    else:
        pytest.skip("this machine has GPIO")
    with pytest.raises(GpioError, match=r'set \[gpio\] pin_factory = "mock"'):
        PinOutput(17, True)
