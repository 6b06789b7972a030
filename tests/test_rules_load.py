"""Signed tables: the gateway refuses a bad MAC, a wrong key or a catalog
mismatch, and keeps the table it had."""

import pytest

from controller.cli.rulescmd import site_catalog
from controller.core.catalog import Catalog
from controller.devtools.bench.rules import compile_text
from controller.gateway.tables import TableSlot, load_table, sign, write_table
from drivers.keys import CoseKey, generate
from rules.errors import TableRefused

RULES = '[[rule]]\nid = "t"\nwhen = "io.tamper"\nseverity = "alarm"\n'


@pytest.fixture
def key():
    return generate("installer-1")


def table_file(tmp_path, name, key, text=RULES):
    path = tmp_path / name
    write_table(path, sign(compile_text(text).encode(), key))
    return path


def test_a_good_table_loads(tmp_path, key):
    catalog, _site = site_catalog(None)
    data, evaluator = load_table(table_file(tmp_path, "good.cbor", key), key, catalog)
    assert evaluator.table.ids == ["t"] and data["format"] == 1


def test_bad_mac_wrong_key_and_catalog_mismatch_are_refused_and_the_previous_table_stays(tmp_path, key):
    catalog, _site = site_catalog(None)
    slot = TableSlot(key, catalog)
    assert slot.load(table_file(tmp_path, "good.cbor", key))
    good = slot.evaluator

    tampered = tmp_path / "tampered.cbor"
    raw = bytearray(table_file(tmp_path, "x.cbor", key).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    tampered.write_bytes(bytes(raw))
    assert not slot.load(tampered)
    assert "MAC does not verify" in slot.error or "not a signed rule table" in slot.error
    assert slot.evaluator is good

    other = generate("installer-2")
    assert not slot.load(table_file(tmp_path, "other.cbor", other))
    assert "signed with key 'installer-2'" in slot.error and "'installer-1'" in slot.error
    assert slot.evaluator is good

    same_name = CoseKey(key.kid, key.alg, bytes(16))
    assert not slot.load(table_file(tmp_path, "forged.cbor", same_name))
    assert "MAC does not verify under key 'installer-1'" in slot.error
    assert slot.evaluator is good

    slot_elsewhere = TableSlot(key, Catalog(catalog.specs()[:-1]))
    assert not slot_elsewhere.load(table_file(tmp_path, "good2.cbor", key))
    assert "compiled for signal catalog" in slot_elsewhere.error and "recompile" in slot_elsewhere.error
    assert slot_elsewhere.evaluator is None

    assert not slot.load(tmp_path / "missing.cbor")
    assert "cannot read rule table" in slot.error and slot.evaluator is good


def test_a_bit_flip_in_the_tag_is_a_mac_failure(tmp_path, key):
    catalog, _site = site_catalog(None)
    path = table_file(tmp_path, "t.cbor", key)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x80
    path.write_bytes(bytes(raw))
    with pytest.raises(TableRefused, match="MAC does not verify"):
        load_table(path, key, catalog)


def test_a_new_good_table_replaces_the_old_and_is_announced(tmp_path, key):
    catalog, _site = site_catalog(None)
    seen = []
    slot = TableSlot(key, catalog, on_change=seen.append)
    assert slot.load(table_file(tmp_path, "a.cbor", key))
    assert slot.load(table_file(tmp_path, "b.cbor", key, RULES.replace('"t"', '"u"')))
    assert [e.table.ids for e in seen] == [["t"], ["u"]] and slot.evaluator is seen[-1]
