"""cabguard rules check|compile|explain and replay with rules, end to end."""

import json
from pathlib import Path

import pytest

from controller.cli.keygen import generate_keys
from controller.cli.rulescmd import demo_catalog, site_catalog
from controller.devtools.bench.rules import compile_text, rules_trace
from drivers.cose import ALG_AES_MAC_128_128
from drivers.keys import generate, write_key
from rules.errors import CatalogFileError
from tests.test_cli import cabguard


def test_check_the_default_packs():
    r = cabguard("rules", "check")
    assert r.returncode == 0 and "door_forced.io" in r.stdout, r.stdout + r.stderr
    listed = [line for line in r.stdout.splitlines() if line.startswith("  ")]
    summary = r.stdout.splitlines()[-1]
    assert summary.startswith("ok: {} rules (".format(len(listed))), summary    # every rule listed, and counted
    assert any(line.split()[0] == "pack_hotter_than_peers.bms1" for line in listed)   # the safety pack is a default


def test_check_reports_every_problem_with_position_and_no_traceback(tmp_path):
    src = tmp_path / "bad.toml"
    src.write_text('[[rule]]\nid = "a"\nwhen = "io.door_opn"\nseverity = "alarm"\n\n'
                   '[[rule]]\nid = "a"\nwhen = "io.tamper and"\nseverity = "alarm"\n')
    r = cabguard("rules", "check", str(src))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "2 problems" in r.stderr
    assert "{}:3:9: rule 'a': unknown signal 'io.door_opn' (did you mean 'io.door_open'".format(src) in r.stderr
    assert "duplicate rule id" in r.stderr


def test_catalog_file_is_used_and_checked(tmp_path):
    specs, classes = demo_catalog()
    cat = tmp_path / "cat.json"
    cat.write_text(json.dumps({"signals": [list(s) for s in specs if not s[0].startswith("bms2.")],
                               "device_classes": {k: v for k, v in classes.items() if k != "bms2"}}))
    r = cabguard("rules", "check", "--catalog", str(cat))
    assert r.returncode == 0 and "bms2" not in r.stdout and "door_forced.io" in r.stdout
    cat.write_text(json.dumps({"signals": [list(s) for s in specs], "device_classes": {"bms9": "battery"}}))
    r = cabguard("rules", "check", "--catalog", str(cat))
    assert r.returncode == 1 and "device_classes.bms9" in r.stderr


def _demo_file(tmp_path):
    specs, classes = demo_catalog()
    cat = tmp_path / "demo-catalog.json"
    cat.write_text(json.dumps({"signals": [list(s) for s in specs], "device_classes": classes}))
    return cat


def test_compile_needs_a_site_and_an_installer_key(tmp_path):
    keys = tmp_path / "keys"
    generate_keys("gw-17", keys, ALG_AES_MAC_128_128)
    table = tmp_path / "rules.cbor"
    cat = str(_demo_file(tmp_path))
    bare = cabguard("rules", "compile", "-o", str(table), "--key", str(keys / "installer.key"))
    assert bare.returncode == 2 and "one of the arguments --config --catalog is required" in bare.stderr
    record = cabguard("rules", "compile", "-o", str(table), "--key", str(keys / "record.key"), "--catalog", cat)
    assert record.returncode == 1 and "key 'gw-17/record' is not an installer key" in record.stderr
    site = Path(__file__).resolve().parent.parent / "examples" / "site.toml"      # gateway gw-porta-017
    other = cabguard("rules", "compile", "-o", str(table), "--key", str(keys / "installer.key"), "--config", str(site))
    assert other.returncode == 1 and "belongs to gateway gw-17, not gw-porta-017" in other.stderr
    assert not table.exists()


def test_compile_replay_and_explain(tmp_path):
    key = tmp_path / "installer.key"
    write_key(key, generate("gw-17/installer"))
    table = tmp_path / "rules.cbor"
    r = cabguard("rules", "compile", "-o", str(table), "--key", str(key), "--catalog", str(_demo_file(tmp_path)))
    assert r.returncode == 0 and "signed with key 'gw-17/installer'" in r.stdout and table.exists()

    trace = tmp_path / "t.trace"
    trace.write_text("\n".join(rules_trace(None, 4, 3000)) + "\n")
    plain = cabguard("replay", str(trace), "--json")
    ruled = cabguard("replay", str(trace), "--json", "--table", str(table), "--key", str(key))
    assert plain.returncode == ruled.returncode == 0
    doc = json.loads(ruled.stdout)
    assert "door_forced.io" in doc["rules"]
    assert json.loads(plain.stdout)["digest"] != doc["digest"]

    ex = cabguard("rules", "explain", str(table), str(trace), "--key", str(key))
    assert ex.returncode == 0, ex.stderr
    assert "RAISED" in ex.stdout and "    when " in ex.stdout and "values:" in ex.stdout
    assert doc["digest"] in ex.stdout
    unverified = cabguard("rules", "explain", str(table), str(trace))
    assert "MAC not checked" in unverified.stdout


def test_replay_runs_the_table_in_the_trace_header(tmp_path):
    compiled = compile_text('[[rule]]\nid = "t"\nwhen = "io.tamper"\nseverity = "warning"\n')
    trace = tmp_path / "h.trace"
    trace.write_text("\n".join(rules_trace(compiled, 2, 2000)) + "\n")
    r = cabguard("replay", str(trace))
    assert r.returncode == 0 and "rule t raised (warning)" in r.stdout


def test_replay_table_without_key_is_a_usage_error(tmp_path):
    trace = tmp_path / "h.trace"
    trace.write_text("\n".join(rules_trace(None, 2, 10)) + "\n")
    r = cabguard("replay", str(trace), "--table", str(tmp_path / "x.cbor"))
    assert r.returncode == 1 and "--table needs --key" in r.stderr


def test_bad_catalog_files_name_the_file_and_what_is_wrong(tmp_path):
    cases = {"a.json": ("{", "not JSON"), "b.json": ('{"signals": 3}', "want {\"signals\""),
             "c.json": ('{"signals": [["x.online", "bool"]]}', "signals[0] must be [name, unit, scale]"),
             "d.json": ('{"signals": [["x.online", "volts", 0]]}', "unknown unit 'volts'")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(CatalogFileError) as e:
            site_catalog(str(tmp_path / name))
        assert name in str(e.value) and message in str(e.value)


def test_emit_python_writes_the_rules_functions_and_names_an_unwritable_path(tmp_path):
    key = tmp_path / "installer.key"
    write_key(key, generate("gw-17/installer"))
    cat, table, source = str(_demo_file(tmp_path)), tmp_path / "rules.cbor", tmp_path / "rules.py"
    r = cabguard("rules", "compile", "-o", str(table), "--key", str(key), "--catalog", cat, "--emit-python", str(source))
    assert r.returncode == 0 and "def rule_0(" in source.read_text(), r.stderr
    bad = tmp_path / "no-such-folder" / "rules.py"
    r = cabguard("rules", "compile", "-o", str(table), "--key", str(key), "--catalog", cat, "--emit-python", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cannot write the rules' Python {}".format(bad) in r.stderr and "give a path in a folder" in r.stderr
