"""flash.sh refuses bad input and lists its actions (the full flash runs in hil_tests/)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from controller.cli.provision import ProvisionError, relocate_text
from controller.errors import CabguardError
from controller.gateway.config import load
from drivers.keys import first_epoch, load_key, write_key

REPO = Path(__file__).resolve().parent.parent
FLASH = REPO / "flash.sh"


def site_text(console="/dev/ttyAMA0"):
    return ((REPO / "hil_tests/site.toml.in").read_text().replace("@BUS@", "/dev/ttyUSB0")
            .replace("@BAUD@", "115200").replace("@CONSOLE@", console).replace("@BROKER@", "127.0.0.1:1883"))


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(site_text())
    (tmp_path / "root").mkdir()
    return path


def flash(*args, cwd=None):
    """flash.sh in a scratch folder unless told otherwise: its default --keys-out
    is ./keys-<gateway>, which must never land in the checkout."""
    return subprocess.run([str(FLASH), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or tempfile.mkdtemp(prefix="cabguard-flash-cwd-"))


def base(site):
    return ["--config", site, "--gateway", "gw-hil", "--site", "hil-bench"]


def test_shellcheck_clean():
    assert shutil.which("shellcheck"), "shellcheck is missing: `make setup` installs it"
    done = subprocess.run(["shellcheck", str(FLASH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_dry_run_lists_every_action_and_writes_nothing(site, tmp_path):
    done = flash(*base(site), "--technician", "ana", "--dry-run", tmp_path / "root", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for action in ("check the site config", "not another gateway", "MB free", "bundle the program",
                   "generate record, command and installer keys", "install the epoch-0 record key", "enrol ana",
                   "compile the default rule packs", "write the config", "service user cabguard in groups dialout and gpio",
                   "cabguard.service (Type=notify, WatchdogSec, Restart=always", "FTDI", "mask serial-getty@ttyAMA0",
                   "cabguard-install.service at first boot"):
        assert action in out, action
    assert "dry run:" in out
    assert list((tmp_path / "root").iterdir()) == [] and not (tmp_path / "keys-gw-hil").exists()


def test_ssh_target_dry_run_lists_the_remote_steps(site, tmp_path):
    done = flash(*base(site), "--verify", "--dry-run", "ssh://pi@gw-hil.local:2222", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for action in ("copy the staged tree to pi@gw-hil.local:/", "systemd-sysusers", "build /opt/cabguard/venv offline",
                   "self-test with the service stopped", "enable and (re)start cabguard.service"):
        assert action in done.stdout, action


@pytest.mark.parametrize("args, message", [
    (["--colour", "red"], "unknown option '--colour'"),
    (["--min-free-mb", "lots"], "--min-free-mb wants a number"),
    (["--siren-test"], "--siren-test needs --verify"),
    (["--gateway"], "--gateway needs a value"),
])
def test_refuses_bad_options(site, tmp_path, args, message):
    done = flash(*base(site), tmp_path / "root", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr   # usage errors: 2, as the README says


def test_refuses_an_invalid_config_and_leaves_the_old_one(site, tmp_path):
    installed = tmp_path / "root/etc/cabguard/site.toml"
    installed.parent.mkdir(parents=True)
    installed.write_text("# the config that works\n")
    site.write_text(site_text().replace('timezone = "UTC"', 'timezone = "Mars/Olympus"'))
    done = flash(*base(site), tmp_path / "root")
    assert done.returncode == 1
    assert "gateway.timezone" in done.stderr and "refused (see above); nothing was written" in done.stderr
    assert installed.read_text() == "# the config that works\n"


def _written(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_a_rules_syntax_error_is_refused_before_anything_is_written(site, tmp_path, dry):
    bad = tmp_path / "bad-rules.toml"
    bad.write_text('[[rule]]\nid = "x"\nwhen = "io.door_open and"\nseverity = "alarm"\n')
    done = flash(*base(site), "--rules", bad, *dry, tmp_path / "root", cwd=tmp_path)
    assert done.returncode == 1 and "bad-rules.toml:3" in done.stderr and "nothing was written" in done.stderr
    assert "[02]" not in done.stdout and _written(tmp_path / "root") == []
    assert not (tmp_path / "keys-gw-hil").exists()


def test_another_gateways_keys_and_a_different_key_on_the_target_are_refused_before_writes(site, tmp_path):
    from controller.cli.keygen import generate_keys
    from drivers.cose import ALG_AES_MAC_128_128
    generate_keys("gw-other", tmp_path / "other", ALG_AES_MAC_128_128)
    done = flash(*base(site), "--keys", tmp_path / "other", tmp_path / "root", cwd=tmp_path)
    assert done.returncode == 1 and "belongs to gateway gw-other, not gw-hil" in done.stderr, done.stderr
    assert _written(tmp_path / "root") == []
    generate_keys("gw-hil", tmp_path / "mine", ALG_AES_MAC_128_128)
    generate_keys("gw-hil", tmp_path / "old", ALG_AES_MAC_128_128)
    installed = tmp_path / "root/var/lib/cabguard/record-epoch.key"     # epoch 0 of another record key
    installed.parent.mkdir(parents=True)
    write_key(installed, first_epoch(load_key(tmp_path / "old/record.key")))
    done = flash(*base(site), "--keys", tmp_path / "mine", tmp_path / "root", cwd=tmp_path)
    assert done.returncode == 1 and "holds a different key" in done.stderr, done.stderr
    assert "bundle the program" not in done.stdout and _written(tmp_path / "root") == [
        "var", "var/lib", "var/lib/cabguard", "var/lib/cabguard/record-epoch.key"]


def test_model_is_checked_at_its_source_path(site, tmp_path):
    site.write_text(site_text() + '\n[model]\npath = "/etc/cabguard/port.json"\n')
    done = flash(*base(site), "--model", REPO / "rules/models/port.json", "--dry-run", tmp_path / "root", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "install the anomaly model" in done.stdout
    done = flash(*base(site), "--model", tmp_path / "nosuch.json", "--dry-run", tmp_path / "root", cwd=tmp_path)
    assert done.returncode == 1 and "does not exist" in done.stderr


def test_refuses_a_gateway_id_that_differs_from_the_config(site, tmp_path):
    done = flash("--config", site, "--gateway", "gw-other", "--site", "hil-bench", tmp_path / "root")
    assert done.returncode == 1 and "[gateway] id is 'gw-hil', but --gateway is 'gw-other'" in done.stderr


def test_refuses_to_reflash_another_gateway_without_force(site, tmp_path):
    (tmp_path / "root/etc/cabguard").mkdir(parents=True)
    (tmp_path / "root/etc/cabguard/gateway-id").write_text("gw-017\n")
    done = flash(*base(site), "--dry-run", tmp_path / "root")
    assert done.returncode == 1 and "the target is gateway 'gw-017', not 'gw-hil'" in done.stderr
    assert flash(*base(site), "--dry-run", "--force", tmp_path / "root", cwd=tmp_path).returncode == 0


def test_refuses_a_target_without_enough_space(site, tmp_path):
    done = flash(*base(site), "--min-free-mb", "999999999", "--dry-run", tmp_path / "root")
    assert done.returncode == 1 and "needs at least 999999999 MB" in done.stderr


def test_refuses_a_missing_target_and_unknown_schemes(site, tmp_path):
    assert "does not exist" in flash(*base(site), tmp_path / "nowhere").stderr
    assert "only directories, ssh://user@host and mpremote:PORT" in flash(*base(site), "ftp://gw").stderr


def test_relocate_moves_gateway_paths_and_a_pty_console_under_the_root(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(site_text(console="pty:/run/cabguard/console"))
    text = relocate_text(path.read_text(), load(path), "/stage/")
    assert 'record = "/stage/etc/cabguard/keys/record.key"' in text
    assert 'dir = "/stage/var/lib/cabguard/journal"' in text and 'state_dir = "/stage/var/lib/cabguard"' in text
    assert 'port = "pty:/stage/run/cabguard/console"' in text and 'port = "/dev/ttyUSB0"' in text


def test_relocate_leaves_a_path_quoted_in_a_comment_alone(tmp_path):
    path = tmp_path / "site.toml"
    note = '# was "/var/lib/cabguard/journal" before the SD card; see "#12"\n'
    path.write_text(note + site_text().replace('dir = "/var/lib/cabguard/journal"',
                                               'dir = "/var/lib/cabguard/journal"   # not "/var/lib/cabguard/journal"'))
    text = relocate_text(path.read_text(), load(path), "/stage")
    assert text.startswith(note)
    assert 'dir = "/stage/var/lib/cabguard/journal"   # not "/var/lib/cabguard/journal"' in text


def test_relocate_names_a_path_it_cannot_find(tmp_path):
    path = tmp_path / "site.toml"
    escaped = 'record = "/etc/cabguard/keys/rec\\u006frd.key"'   # a TOML escape: same value, other text
    path.write_text(site_text().replace('record = "/etc/cabguard/keys/record.key"', escaped))
    with pytest.raises(ProvisionError, match="record.key") as err:
        relocate_text(path.read_text(), load(path), "/stage")
    assert isinstance(err.value, CabguardError)


def test_selftest_names_each_failed_check(tmp_path):
    from controller.cli.keygen import generate_keys
    from controller.cli.selftest import run_checks
    from controller.gateway.tables import sign, write_table
    from drivers.cose import ALG_AES_MAC_128_128
    from drivers.keys import generate

    path = tmp_path / "site.toml"
    path.write_text(site_text())
    path.write_text(relocate_text(path.read_text(), load(path), str(tmp_path)))
    keys = tmp_path / "etc/cabguard/keys"
    generate_keys("gw-hil", keys, ALG_AES_MAC_128_128)    # record.key too: the root key left on the gateway
    (keys / "command.key").chmod(0o644)
    write_table(tmp_path / "etc/cabguard/rules.table", sign(b"\xa0", generate("gw-hil/installer")))
    results = dict(run_checks(str(path), siren=False))
    failed = [line for line, ok in results.items() if not ok]
    assert any("record.key: the root record key is on the gateway" in line for line in failed), failed
    assert any("command.key: readable by others (chmod 600)" in line for line in failed), failed
    assert any(line.startswith("rule table: ") and "does not verify" in line for line in failed), failed
    assert any("io on /dev/ttyUSB0: serial port /dev/ttyUSB0 does not exist" in line for line in failed), failed


def test_mpremote_target_dry_run_lists_core_table_and_copy(site, tmp_path):
    done = flash(*base(site), "--dry-run", "--target", "mpremote:/dev/ttyACM0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for action in ("portable core (controller/core, its manifest) to .mpy", "-> :rules.table",
                   "copy them to the board on /dev/ttyACM0"):
        assert action in done.stdout, action
    assert "bundle the program" not in done.stdout and "cabguard.service" not in done.stdout


def test_portable_core_compiles_to_mpy_files(tmp_path):
    done = subprocess.run([str(REPO / ".venv/bin/cabguard"), "provision", "mpy", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    step = tmp_path / "controller/core/step.mpy"
    assert step.read_bytes()[:2] == b"M\x06"            # MicroPython .mpy, format 6
    assert (tmp_path / "controller/core/modelrules.mpy").exists() and not list(tmp_path.rglob("*.py"))
    assert not (tmp_path / "controller/gateway/loop.mpy").exists()   # host code stays on the host
    assert not (tmp_path / "rules").exists()


def test_selftest_wants_the_epoch_key_and_no_root_key(tmp_path):
    """What flash.sh leaves: epoch 0 in the state folder, no root record key."""
    from controller.cli.keygen import generate_keys
    from controller.cli.selftest import check_keys
    from drivers.cose import ALG_AES_MAC_128_128

    path = tmp_path / "site.toml"
    path.write_text(site_text())
    path.write_text(relocate_text(path.read_text(), load(path), str(tmp_path)))
    doc = load(path).doc
    generate_keys("gw-hil", tmp_path / "installer", ALG_AES_MAC_128_128)
    keys = tmp_path / "etc/cabguard/keys"
    keys.mkdir(parents=True)
    for src, dest in (("command", "command"), ("installer", "installer")):
        shutil.copy(tmp_path / "installer/{}.key".format(src), keys / "{}.key".format(dest))
    assert [p for p in check_keys(doc) if "record" in p] == [
        "record epoch key {}/var/lib/cabguard/record-epoch.key: missing (flash.sh installs epoch 0 there)".format(tmp_path)]
    (tmp_path / "var/lib/cabguard").mkdir(parents=True)
    done = subprocess.run([str(REPO / ".venv/bin/cabguard"), "provision", "epoch-key", str(tmp_path / "installer/record.key"),
                           "-o", str(tmp_path / "var/lib/cabguard/record-epoch.key")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_key(tmp_path / "var/lib/cabguard/record-epoch.key").kid == b"gw-hil/record/0"
    assert check_keys(doc) == []
    shutil.copy(tmp_path / "installer/record.key", keys / "record.key")
    assert [p.split(":")[0] for p in check_keys(doc)] == ["keys.record {}/record.key".format(keys)]
