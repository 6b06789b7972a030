"""What flash.sh left on the target: a second flash changes nothing, --verify passes on the bench."""

import hashlib
import shutil
import stat
import subprocess

import pytest

from controller.journal import records as R

from hil_tests.conftest import FLASH_GROUP, START_TIMEOUT_S, GatewayProcess, wait_until

# One worker flashes the rig (once) and runs every HIL case: see FLASH_GROUP.
pytestmark = [pytest.mark.xdist_group(FLASH_GROUP), pytest.mark.long]


def tree(root):
    """Every file under etc/ and usr/ with its mode and content hash (symlinks by target)."""
    out = {}
    for top in ("etc", "usr"):
        for p in sorted((root / top).rglob("*")):
            if p.is_symlink():
                out[str(p.relative_to(root))] = ("->", str(p.readlink()))
            elif p.is_file():
                out[str(p.relative_to(root))] = (stat.S_IMODE(p.stat().st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_the_flashed_tree_is_what_the_gateway_needs(rig):
    files = tree(rig.root)
    for key in ("command", "installer"):
        assert files["etc/cabguard/keys/{}.key".format(key)][0] == 0o600
    assert "etc/cabguard/keys/record.key" not in files       # the root record key stays off the gateway
    assert files["etc/cabguard/people.toml"][0] == 0o600
    assert files["etc/cabguard/site.toml"][0] == 0o600          # it may hold the MQTT password
    unit = (rig.root / "etc/systemd/system/cabguard.service").read_text()
    for line in ("Type=notify", "Restart=always", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "User=cabguard", "SupplementaryGroups=dialout gpio",
                 "ExecStart=/opt/cabguard/venv/bin/cabguard run --config /etc/cabguard/site.toml"):
        assert line in unit, line
    assert "m cabguard dialout" in (rig.root / "usr/lib/sysusers.d/cabguard.conf").read_text()
    assert 'ATTR{latency_timer}="1"' in (rig.root / "etc/udev/rules.d/99-cabguard-ftdi.rules").read_text()
    pins = (rig.root / "opt/cabguard/wheels/requirements.txt").read_text().split()
    assert all("==" in p for p in pins) and any(p.startswith("cryptography==") for p in pins)


def test_a_second_flash_changes_nothing_and_verify_passes_on_the_bench(rig):
    before = tree(rig.root)
    rig.wipe_state()
    rig.reset_cabinet()
    done = rig.flash("--verify", "--siren-test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ana: already enrolled" in done.stdout and "otpauth://totp" not in done.stdout
    assert "reuse the keys already generated" in done.stdout
    for line in ("ok    keys: present, mode 0600", "rule table: ", "io@1 on ", "relay@4 on ",
                 "siren test: relay.k2 pulsed", "selftest: passed"):
        assert line in done.stdout, line
    assert tree(rig.root) == before
    assert rig.sim.device("relay").values.get("k2", 0) == 0   # the siren test switched it off again


def test_a_root_record_key_on_the_gateway_is_journaled_failed_by_selftest_and_removed_by_a_flash(rig):
    """flash.sh installs only epoch 0 of the record key; a root key an older flash (or a
    person) left there voids forward security: the gateway journals a warning, selftest
    fails, and the next flash removes it."""
    rig.wipe_state()
    record_key = rig.root / "etc/cabguard/keys/record.key"
    shutil.copy(rig.keys / "record.key", record_key)
    record_key.chmod(0o600)
    try:
        gw = GatewayProcess(rig).start()
        try:
            assert wait_until(lambda: any(r.get(R.TYPE) == R.HEALTH and r[R.DATA][R.HEALTH_CODE] == R.HEALTH_ROOT_KEY
                                          for r in rig.records()), START_TIMEOUT_S, 0.2), gw.tail()
        finally:
            assert gw.stop() == 0
        done = subprocess.run([str(rig.cabguard), "selftest", "--config", str(rig.site_toml)],
                              capture_output=True, text=True)
        assert done.returncode == 1 and "the root record key is on the gateway" in done.stdout, done.stdout
        done = rig.flash("--verify")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "remove the root record key /etc/cabguard/keys/record.key" in done.stdout
        assert "its record epoch key has moved on; not reinstalling epoch 0" in done.stderr
        assert not record_key.exists() and "selftest: passed" in done.stdout
    finally:
        record_key.unlink(missing_ok=True)
