"""Device profiles: the shipped ones, their round trip, and every kind of bad profile."""

import json
import re
import zlib
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from controller.core.catalog import Catalog, device_signals
from drivers.errors import ProfileError
from drivers.modbus.profiles import (BIT_TABLES, NI_SF, NOT_IMPLEMENTED, CLASSES, fold31, fold_text, known_profiles,
                                     load_profile, parse_profile)

ROOT = Path(__file__).resolve().parent.parent
VENDOR = (ROOT / "drivers/profiles/bms16-vendor.toml").read_text()
IO = (ROOT / "drivers/profiles/io-dvt.toml").read_text()


def doc_class_signals(device_class):
    """Signal names of a class as the first column of its table in docs/signals.md."""
    text = (ROOT / "docs/signals.md").read_text()
    section = text.split("## Class `{}`".format(device_class))[1].split("\n## ")[0]
    names = set()
    for first in re.findall(r"^\| ([^|]+)\|", section, re.M):
        names.update(re.findall(r"`(\w+)`", first))
    if {"k1", "k4"} <= names:   # "`k1` … `k4`"
        names.update({"k2", "k3"})
    return names


def test_shipped_profiles_cover_every_class():
    classes = {load_profile(n).device_class for n in known_profiles()}
    assert classes == set(CLASSES)


@pytest.mark.parametrize("name", known_profiles())
def test_profile_signals_are_the_documented_class_signals(name):
    p = load_profile(name)
    names = {n for n, _u, _s in p.signal_specs()}
    documented = doc_class_signals(p.device_class)
    base = {n for n, _u, _s in CLASSES[p.device_class][0]}
    assert base == documented and base <= names
    Catalog(device_signals("dev", p.signal_specs()))  # units and scales the core accepts


def _values(profile, draw_int):
    out = {}
    for name, unit, scale in profile.signal_specs():
        if unit == "bool":
            out[name] = draw_int(0, 1)
        elif name == "current_ma":
            out[name] = draw_int(-32000, 32000) * 10
        elif name in ("temp_max_dc", "temp_min_dc", "temp_dc", "tilt_mdeg", "accel_z_mg"):
            out[name] = draw_int(-300, 900) * (10 if name == "tilt_mdeg" else 1)
        elif name == "supply_mv":
            out[name] = draw_int(0, 6000) * 10
        elif name == "soc_pct":
            out[name] = draw_int(0, 100)
        elif name in ("serial", "alarm_bits"):
            out[name] = draw_int(0, 2**31 - 1)
        elif name == "pack_mv":
            out[name] = draw_int(0, 6500) * 100
        else:
            out[name] = draw_int(0, 6000)
    out.update(profile.constants)       # stated by the profile: no register to carry another value
    return out


@pytest.mark.parametrize("name", known_profiles())
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_encode_then_decode_gives_the_values_back(name, data):
    p = load_profile(name)
    values = _values(p, lambda lo, hi: data.draw(st.integers(lo, hi)))
    regmap = p.bind(p.sim_layout() if p.sunspec else None)
    decoded, missing = regmap.decode(regmap.blocks_from(p.encode(values)))
    assert missing == 0 and decoded == values


def _as_documented(regmap, blocks, f):
    """One field of ``blocks`` as docs/profiles.md says, or None when not implemented: the
    reference the decode plan (signals copied as read, the rest converted) must agree with."""
    def word(table, address):
        return next(blocks[i][address - b.start] for i, b in enumerate(regmap.blocks)
                    if b.table == table and b.start <= address < b.start + b.count)
    words = [word(f.table, f.address + i) for i in range(f.words)]
    if f.type == "str":
        text = b"".join(w.to_bytes(2, "big") for w in words).split(b"\0")[0].decode("latin-1").strip()
        return fold_text(text) if text else None
    raw = (words[1] << 16 | words[0] if f.word_order == "little" else words[0] << 16 | words[1]) if f.words == 2 \
        else words[0] if f.bit is None else (words[0] >> f.bit) & 1
    if regmap.not_implemented and raw == NOT_IMPLEMENTED.get(f.type):
        return None
    bits = 16 * f.words
    if f.type in ("s16", "s32") and raw >> (bits - 1):
        raw -= 1 << bits
    elif f.type == "u32":
        raw = fold31(raw)
    exp = f.raw_scale
    if f.sf_address is not None:
        sf = word("holding", f.sf_address)
        if sf == NI_SF:
            return None
        exp = sf - 0x10000 if sf & 0x8000 else sf
    return int(Fraction(raw) * Fraction(10) ** (exp - f.scale))   # truncated toward zero


@pytest.mark.parametrize("name", known_profiles())
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_register_contents_decode_as_each_field_is_documented(name, data):
    """Whatever a device answers, every signal is its register(s) read as its type, bit,
    sign and scale say (fast path or not), a not-implemented point its ``missing`` value."""
    p = load_profile(name)
    regmap = p.bind(p.sim_layout() if p.sunspec else None)
    special = st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF, 0xFFFE])
    blocks = [data.draw(st.lists(st.integers(0, 1) if b.table in BIT_TABLES else st.integers(0, 0xFFFF) | special,
                                 min_size=b.count, max_size=b.count)) for b in regmap.blocks]
    decoded, missing = regmap.decode(blocks)
    expected = {f.name: _as_documented(regmap, blocks, f) for f in regmap.fields}
    assert missing == sum(v is None for v in expected.values())
    assert decoded == dict(p.constants, **{f.name: f.missing if expected[f.name] is None else expected[f.name]
                                           for f in regmap.fields})


def test_blocks_respect_the_125_register_limit():
    p = load_profile("sunspec-battery")
    blocks = p.bind(p.sim_layout()).blocks
    assert all(b.count <= 125 for b in blocks) and len(blocks) >= 1


def test_sunspec_not_implemented_points_become_missing_values_and_are_counted():
    p = load_profile("sunspec-battery")
    layout = p.sim_layout()
    regmap = p.bind(layout)
    tables = p.encode({"pack_mv": 400000, "soc_pct": 50})
    tables["holding"][layout[802] + 34] = 0xFFFF      # V not implemented
    tables["holding"][layout[802] + 56] = NI_SF       # SoC_SF not implemented
    values, missing = regmap.decode(regmap.blocks_from(tables))
    assert values["pack_mv"] == 0 and values["soc_pct"] == 0 and missing == 2


def test_sunspec_scale_factors_use_integer_arithmetic():
    p = load_profile("sunspec-battery")
    layout = p.sim_layout()
    regmap = p.bind(layout)
    tables = p.encode({})
    tables["holding"][layout[802] + 34] = 5123       # V = 512.3 V with V_SF = -1
    tables["holding"][layout[802] + 59] = 0xFFFF     # -1
    tables["holding"][layout[802] + 44] = 0xFFF6     # A = -10 with A_SF = +1 -> -100 A
    tables["holding"][layout[802] + 61] = 1
    values, _ = regmap.decode(regmap.blocks_from(tables))
    assert values["pack_mv"] == 512300 and values["current_ma"] == -100000


def test_sunspec_profile_offsets_match_the_sunspec_model_definitions():
    import sunspec2
    models = Path(sunspec2.__file__).parent / "models" / "json"
    expect = {("serial", 1): "SN", ("pack_mv", 802): "V", ("current_ma", 802): "A",
              ("soc_pct", 802): "SoC", ("cell_vmax_mv", 802): "CellVMax",
              ("cell_vmin_mv", 802): "CellVMin", ("alarm_bits", 802): "Evt1",
              ("temp_max_dc", 803): "ModTmpMax", ("temp_min_dc", 803): "ModTmpMin",
              ("modules", 803): "StrNMod", ("cells_per_module", 805): "NCell"}
    p = load_profile("sunspec-battery")
    regmap = p.bind({m.id: 0 for m in p.models})
    for f in regmap.fields:
        model = next(m for (n, m) in expect if n == f.name)
        doc = json.loads((models / "model_{}.json".format(model)).read_text())["group"]
        offsets, off = {}, 0
        for point in doc["points"]:
            offsets[point["name"]] = (off, point.get("sf"))
            off += point["size"]
        for group in doc.get("groups", []):   # first instance of a repeating group
            goff = off
            for point in group["points"]:
                offsets[point["name"]] = (goff, point.get("sf"))
                goff += point["size"]
        point_offset, sf_name = offsets[expect[(f.name, model)]]
        assert f.address == point_offset, f.name
        if sf_name:
            assert f.sf_address == offsets[sf_name][0], f.name
    for m in p.models:
        doc = json.loads((models / "model_{}.json".format(m.id)).read_text())["group"]
        fixed = sum(pt["size"] for pt in doc["points"]) - 2
        assert m.length >= fixed


def test_serial_is_folded_to_31_bits():
    assert fold31(0xFFFFFFFF) == 0x7FFFFFFE and fold31(12345) == 12345
    p = load_profile("bms16-vendor")
    regmap = p.bind()
    tables = p.encode({})
    tables["input"][12], tables["input"][13] = 0x8000, 0x0001
    values, _ = regmap.decode(regmap.blocks_from(tables))
    assert values["serial"] == 0 and 0 <= values["serial"] < 2**31


def _bad(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    return str(e.value)


def _line_of(text, needle):
    return text.splitlines().index(needle) + 1


def test_overlapping_registers_name_file_line_and_register(tmp_path):
    text = VENDOR.replace('[signals.modules]\ntable = "input"\naddress = 5',
                          '[signals.modules]\ntable = "input"\naddress = 3')
    msg = _bad(tmp_path, text)
    lines = text.splitlines()
    header = lines.index("[signals.modules]")
    expected_line = header + lines[header:].index('type = "u16"') + 1
    assert msg.startswith("{}:{}:".format(tmp_path / "bad.toml", expected_line))
    assert "signal 'modules' (input register 3) overlaps signal 'current_ma' at register 3" in msg


def test_misaligned_32_bit_register_is_rejected(tmp_path):
    text = VENDOR.replace("[signals.alarm_bits]\ntable = \"input\"\naddress = 10",
                          "[signals.alarm_bits]\ntable = \"input\"\naddress = 31")
    msg = _bad(tmp_path, text)
    assert "signal 'alarm_bits' (input register 31)" in msg and "even register" in msg


def test_a_value_past_the_last_register_is_refused_at_load_not_at_every_poll(tmp_path):
    text = VENDOR.replace("[signals.alarm_bits]\ntable = \"input\"\naddress = 10",
                          "[signals.alarm_bits]\ntable = \"input\"\naddress = 65535")
    msg = _bad(tmp_path, text.replace("align = 2", "align = 1"))
    assert "signal 'alarm_bits' (input register 65535)" in msg and "run past register 65535" in msg


def test_unknown_type_names_the_line(tmp_path):
    text = VENDOR.replace('[signals.modules]\ntable = "input"\naddress = 5\ntype = "u16"',
                          '[signals.modules]\ntable = "input"\naddress = 5\ntype = "float32"')
    msg = _bad(tmp_path, text)
    assert msg.startswith("{}:{}:".format(tmp_path / "bad.toml", _line_of(text, 'type = "float32"')))
    assert "unknown type 'float32'" in msg and "input register 5" in msg


def test_bad_scale_names_the_line(tmp_path):
    text = VENDOR.replace('address = 4\ntype = "u16"\nscale = -1', 'address = 4\ntype = "u16"\nscale = 0.1')
    msg = _bad(tmp_path, text)
    assert msg.startswith("{}:{}:".format(tmp_path / "bad.toml", _line_of(text, "scale = 0.1")))
    assert "scale 0.1" in msg


def test_signal_outside_the_class_and_missing_signals(tmp_path):
    msg = _bad(tmp_path, VENDOR + '\n[signals.door_open]\ntable = "discrete"\naddress = 0\n')
    assert "not in class battery" in msg
    msg = _bad(tmp_path, VENDOR.replace("[signals.serial]", "[signals.serial_old]"))
    assert "not in class battery" in msg or "needs signals serial" in msg


def test_a_mirrored_signal_is_served_at_both_places_and_read_at_its_own():
    """io-dvt's door and bolt: bits 1 and 2 of the status register (one read a poll), which
    the module also serves on discrete inputs 0 and 1 (the simulator serves both)."""
    io = load_profile("io-dvt")
    assert [(b.table, b.start, b.count) for b in io.bind().blocks] == [("input", 0, 7)]
    tables = io.encode({"door_open": 1, "door_bolt": 0, "tamper": 1})
    assert tables["input"][6] == 0b011 and tables["discrete"] == {0: 1, 1: 0}
    assert io.only({"door_bolt"}).encode({"door_bolt": 1})["discrete"] == {1: 1}   # the mirror follows its signal
    discrete = load_profile("io-dvt-discrete")
    regmap = discrete.bind()
    assert [(b.table, b.start, b.count) for b in regmap.blocks] == [("input", 0, 7), ("discrete", 0, 2)]
    assert regmap.decode(regmap.blocks_from(tables))[0]["door_open"] == 1   # the same module, the other profile


@pytest.mark.parametrize("mirror, expected", [
    ('{ table = "input", address = 7 }', "mirror must be"),                    # a register needs its bit
    ('{ table = "discrete", address = 0, bit = 1 }', "mirror must be"),        # a discrete input has none
    ('{ table = "discrete", address = -1 }', "mirror must be"),
    ('{ table = "discrete", adress = 0 }', "mirror must be"),
    ('"discrete 0"', "mirror must be"),
    ('{ table = "input", address = 6, bit = 0 }', "overlaps signal 'tamper'"),
    ('{ table = "discrete", address = 0 }', "overlaps signal 'door_open'"),
])
def test_a_bad_mirror_is_refused_with_its_line(tmp_path, mirror, expected):
    text = IO.replace('mirror = { table = "discrete", address = 1 }', "mirror = " + mirror)
    msg = _bad(tmp_path, text)
    lines = text.splitlines()
    line = len(lines) - lines[::-1].index("mirror = " + mirror)   # door_bolt's, after door_open's
    assert msg.startswith("{}:{}: signal 'door_bolt'".format(tmp_path / "bad.toml", line)), msg
    assert expected in msg


def test_only_a_bool_signal_may_have_a_mirror(tmp_path):
    text = IO.replace('[signals.temp_dc]\ntable = "input"\naddress = 5\ntype = "s16"',
                      '[signals.temp_dc]\ntable = "input"\naddress = 5\ntype = "s16"\nmirror = { table = "input", '
                      'address = 9, bit = 0 }')
    assert "signal 'temp_dc': mirror must be" in _bad(tmp_path, text)


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(ProfileError, match="known: .*bms16-vendor"):
        load_profile("no-such-profile")


def test_parse_profile_reports_toml_syntax(tmp_path):
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile("[profile\n", tmp_path / "x.toml")


def test_a_text_serial_is_its_crc32_masked_as_docs_profiles_say():
    """Finding 10: the doc said "folded" (bit 31 xor-ed into bit 0), the code masks."""
    from drivers.modbus.profiles import fold_text

    text = "PACK-A1"        # its CRC-32 has bit 31 set: folding and masking differ
    crc = zlib.crc32(text.encode())
    assert crc >> 31 and fold31(crc) != crc & 0x7FFFFFFF
    assert fold_text(text) == crc & 0x7FFFFFFF
    doc = (Path(__file__).resolve().parent.parent / "docs/profiles.md").read_text()
    assert "CRC-32 masked to 31 bits (`crc32 & 0x7FFFFFFF`)" in doc


def test_a_serial_of_digits_that_are_not_ascii_is_its_crc_not_a_crash():
    """Latin-1 "²" is a digit to str.isdigit() but not to int(): the decode raised ValueError."""
    assert fold_text("2\u00b2") == zlib.crc32("2\u00b2".encode("latin-1")) & 0x7FFFFFFF
    assert fold_text("77001234") == 77001234


def test_a_garbled_sunspec_chain_is_a_mismatch_not_a_dead_bus_thread():
    """A model length read from a garbled answer once sent discovery past register
    65535, and struct.pack killed the bus thread (seen in an armed soak)."""
    import pytest
    from drivers.errors import ModbusFrameError
    from drivers.modbus import frames
    from drivers.modbus.profiles import SUNS
    from drivers.modbus.sunspec import NotSunSpec, model_chain

    regs = {40000: SUNS[0], 40001: SUNS[1], 40002: 1, 40003: 65000}     # model 1 "65,000 registers long"

    def read(start, count):
        return [regs.get(a, 0xFFFF) for a in range(start, start + count)]
    with pytest.raises(NotSunSpec, match="past the end of the register space"):
        model_chain(read, 40000)
    with pytest.raises(ModbusFrameError, match="no registers 65535..65536"):
        frames.read_request(2, frames.READ_HOLDING, 0xFFFF, 2)


def _sunspec_device(tables):
    """read(start, count) over a simulated SunSpec slave's holding registers."""
    holding = tables["holding"]
    return lambda start, count: [holding.get(a, 0) for a in range(start, start + count)]


def test_the_vendor_pack_states_its_cells_per_module_and_every_poll_gives_it():
    p = load_profile("bms16-vendor")
    regmap = p.bind()
    assert p.constants == {"cells_per_module": 16} and "cells_per_module" not in [f.name for f in regmap.fields]
    values, missing = regmap.decode(regmap.blocks_from(p.encode({"pack_mv": 52800})))
    assert values["cells_per_module"] == 16 and values["pack_mv"] == 52800 and missing == 0


def test_sunspec_cells_per_module_is_805_ncell_read_once_when_the_device_is_discovered():
    from drivers.modbus.sunspec import discover, read_facts

    p = load_profile("sunspec-battery")
    read = _sunspec_device(p.encode({"cells_per_module": 14, "pack_mv": 409600}))
    layout = discover(read, p)
    facts = read_facts(read, p, layout)
    assert facts == {"cells_per_module": 14}
    polled = p.bind(layout, facts)
    assert [b for b in polled.blocks if b.start <= layout[805] + 4 < b.start + b.count] == []   # not read every poll
    assert polled.blocks == p.bind(layout, {}).blocks and len(polled.blocks) == 1
    values, _missing = polled.decode([read(b.start, b.count) for b in polled.blocks])
    assert values["cells_per_module"] == 14 and values["pack_mv"] == 409600


def test_a_sunspec_ncell_not_implemented_is_unknown_not_a_module_of_no_cells():
    from drivers.modbus.sunspec import discover, read_facts

    p = load_profile("sunspec-battery")
    tables = p.encode({})
    layout = p.sim_layout()
    tables["holding"][layout[805] + 4] = NOT_IMPLEMENTED["u16"]
    read = _sunspec_device(tables)
    assert read_facts(read, p, discover(read, p)) == {"cells_per_module": 0}


VENDOR_CELLS = "[signals.cells_per_module]  # no register: the vendor's modules are 16 cells in series\nvalue = 16"


@pytest.mark.parametrize("replacement, line, expected", [
    ("[signals.cells_per_module]\nvalue = 0", "value = 0", "value = 0 is not a whole number 1..65535"),
    ("[signals.cells_per_module]\nvalue = true", "value = true", "value = True is not a whole number 1..65535"),
    ("[signals.cells_per_module]\nvalue = 16\ntable = \"input\"\naddress = 40", "address = 40",
     "a constant (value = N) has no register: remove address, table or the value"),
    ("[signals.cells_per_module]\ntable = \"input\"\naddress = 40\nonce = true", "once = true",
     "once = true reads a fact of the unit's build (cells_per_module) when a SunSpec device is discovered"),
    ("", None, "class battery needs signals cells_per_module: add a [signals.NAME] table for each "
               "(cells_per_module: the device's register, or value = N where the device has none"),
])
def test_a_bad_cells_per_module_is_refused_with_its_line(tmp_path, replacement, line, expected):
    assert VENDOR_CELLS in VENDOR
    text = VENDOR.replace(VENDOR_CELLS, replacement)
    msg = _bad(tmp_path, text)
    assert msg.startswith("{}:{}:".format(tmp_path / "bad.toml", _line_of(text, line) if line else 1)), msg
    assert expected in msg, msg


def test_only_a_fact_of_the_build_may_be_stated_as_a_constant(tmp_path):
    text = VENDOR.replace('[signals.modules]\ntable = "input"\naddress = 5\ntype = "u16"', '[signals.modules]\nvalue = 8')
    msg = _bad(tmp_path, text)
    assert msg.startswith("{}:{}:".format(tmp_path / "bad.toml", _line_of(text, "value = 8")))
    assert "only cells_per_module may be stated as a constant (value = N); map modules to the device's register" in msg
