"""drivers/safefile.py: the bounded readers every command uses (issue 23)."""

from __future__ import annotations

import os

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.safefile import (
    InputFileError, check_cbor, check_toml_nesting, loads_cbor, open_text, parse_json, parse_toml, read_bytes, read_text,
)
from tests.hostile import DEEP, cbor_structure


@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "fifo", "folder"])
def test_only_a_regular_file_is_read_and_a_fifo_never_blocks(tmp_path, kind):
    path = tmp_path / "x"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = kind
    with pytest.raises(InputFileError, match="^{}: is a .*, not a file; give the path of a key file".format(path)):
        read_bytes(path, "key file")
    with pytest.raises(InputFileError):
        open_text(path, "trace")


def test_a_file_over_its_limit_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 101)
    with pytest.raises(InputFileError, match="101 bytes, more than the 100"):
        read_bytes(path, "key file", 100)
    assert read_bytes(path, "key file", 101) == b"x" * 101


def test_text_must_be_utf8_and_the_error_gives_the_byte_offset(tmp_path):
    path = tmp_path / "site.toml"
    path.write_bytes(b'id = "caf\xe9"\n')
    with pytest.raises(InputFileError, match=r"site.toml: not UTF-8 text \(byte offset 9\)"):
        read_text(path, "site config")


def test_nesting_past_the_limit_is_an_error_naming_the_file_not_a_recursion_error():
    for text in ("a = " + "[" * DEEP + "]" * DEEP, "a = " + "[" * 40 + "]" * 40):
        with pytest.raises(InputFileError, match="^x.toml: nested"):
            parse_toml(text, "x.toml", "site config")
    with pytest.raises(InputFileError, match="^m.json: nested"):
        parse_json("[" * DEEP + "]" * DEEP, "m.json", "model file")
    with pytest.raises(InputFileError, match="a number cannot be read"):
        parse_toml("a = " + "9" * 5000, "x.toml", "site config")
    assert parse_toml("a = [[[1]]]", "x.toml", "site config") == {"a": [[[1]]]}


def test_toml_brackets_are_counted_outside_strings_and_comments_only():
    """The nesting check runs before tomllib: brackets in strings and comments are
    text, not nesting (a password may be all brackets); the limit is the depth."""
    deep = "[" * 40
    text = ('a = "{0}\\"{0}"\nb = \'{0}\'\nc = """\n{0} "" \\""" {0}"""\nd = \'\'\'{0}\n{0}\'\'\'\' # {0}\n'
            "e = [[1], {{x = [2]}}]\n").format(deep)
    assert parse_toml(text, "x.toml", "site config")["e"] == [[1], {"x": [2]}]
    with pytest.raises(InputFileError, match="^x.toml: nested too deep to read; a site config nests"):
        check_toml_nesting("a = " + "[" * 33 + "]" * 33, "x.toml", "site config")
    check_toml_nesting("a = " + "[" * 32 + "]" * 32 + "\n[t]\n[[u]]\n" + "b = [{c = [1]}]\n" * 3, "x.toml", "site config")


@pytest.mark.parametrize("name,data", sorted(cbor_structure().items()) + [
    ("truncated", b"\x82\x01"), ("trailing", b"\x01\x02"), ("lone break", b"\xff"),
    ("reserved info", b"\x1c"), ("unclosed indefinite", b"\x9f" * 10)])
def test_crafted_cbor_is_refused_before_cbor2_sees_it(name, data):
    with pytest.raises(ValueError, match="offset"):
        check_cbor(data)


CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.binary(max_size=40) | st.text(max_size=20)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers(-5, 5) | st.text(max_size=5), inner,
                                                                max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(CBOR_VALUES, st.booleans())
def test_every_well_formed_item_passes_the_check_and_decodes_as_cbor2_does(value, canonical):
    data = cbor2.dumps(value, canonical=canonical)
    assert loads_cbor(data) == cbor2.loads(data)


def test_indefinite_lengths_and_tags_pass():
    for data in (b"\x9f\x01\x02\xff", b"\xbf\x01\x02\xff", b"\x5f\x41a\xff", b"\xd1\x84\x40\xa0\x40\x40"):
        check_cbor(data)
