"""`cabguard config check` checks the files `run` reads: keys (this gateway's, each of its role),
the rule table or the rules to install, the model; every problem at once."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli.keygen import generate_keys
from drivers.cose import ALG_AES_MAC_128_128

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "controller.cli.main"]


def check(site, *extra):
    return subprocess.run(CLI + ["config", "check", str(site), *extra], capture_output=True, text=True)


@pytest.fixture
def gateway(tmp_path):
    """examples/site.toml with its files where the config says, as on a flashed gateway."""
    etc = tmp_path / "etc"
    text = (REPO / "examples" / "site.toml").read_text().replace('"/etc/cabguard/', '"{}/'.format(etc))
    text = text.replace('"/var/lib/cabguard', '"{}/var'.format(tmp_path))
    site = tmp_path / "site.toml"
    site.write_text(text)
    generate_keys("gw-porta-017", etc / "keys", ALG_AES_MAC_128_128)
    shutil.copy(etc / "keys" / "command.key", etc / "keys" / "headend.key")
    shutil.copy(REPO / "rules" / "models" / "port.json", etc / "port.json")
    done = subprocess.run(CLI + ["rules", "compile", "-o", str(etc / "rules.table"), "--key",
                                 str(etc / "keys" / "installer.key"), "--config", str(site)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return site, etc


def test_a_complete_gateway_checks_ok(gateway):
    site, _etc = gateway
    done = check(site)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr


def test_wrong_keys_and_a_missing_model_at_once_without_knock_on_errors(gateway, tmp_path):
    site, etc = gateway
    generate_keys("gw-other", tmp_path / "other", ALG_AES_MAC_128_128)
    shutil.copy(tmp_path / "other" / "record.key", etc / "keys" / "record.key")        # another gateway's
    shutil.copy(etc / "keys" / "command.key", etc / "keys" / "installer.key")          # the wrong role
    (etc / "port.json").unlink()
    done = check(site)
    assert done.returncode == 1 and "3 problems" in done.stderr, done.stderr
    assert "keys.record: {}: key 'gw-other/record' belongs to gateway gw-other, not gw-porta-017".format(
        etc / "keys" / "record.key") in done.stderr
    assert "rules.key: {}: key 'gw-porta-017/command' is not an installer key".format(
        etc / "keys" / "installer.key") in done.stderr
    assert "model.path: cannot read model {}".format(etc / "port.json") in done.stderr
    assert "rules.table" not in done.stderr     # not checked with a key that is not the installer's


def test_installing_checks_the_installers_files_and_the_schedules_the_packs_need(tmp_path):
    site = tmp_path / "site.toml"
    text = (REPO / "examples" / "site.toml").read_text()
    site.write_text(text)
    ok = check(site, "--installing", "--model", str(REPO / "rules" / "models" / "port.json"))
    assert ok.returncode == 0, ok.stderr      # nothing at the gateway paths yet, and that is fine
    cut = text.index("[schedules.maintenance]")
    site.write_text(text[:cut] + text[text.index("[schedules.shift_change]"):])
    bad = check(site, "--installing", "--model", str(tmp_path / "nosuch.json"))
    assert bad.returncode == 1
    assert "schedule 'maintenance' is never defined" in bad.stderr and "add [schedules.maintenance]" in bad.stderr
    assert "model.path: cannot read model {}".format(tmp_path / "nosuch.json") in bad.stderr


def test_a_table_that_does_not_verify_is_a_problem(gateway):
    site, etc = gateway
    table = etc / "rules.table"
    table.write_bytes(table.read_bytes()[:-1] + bytes([table.read_bytes()[-1] ^ 1]))
    done = check(site)
    assert done.returncode == 1 and "rules.table: " in done.stderr and "does not verify" in done.stderr, done.stderr
