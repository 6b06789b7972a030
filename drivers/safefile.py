"""Bounded readers for every file cabguard reads: TOML, CBOR, JSON, keys,
traces and segments (docs/architecture.md "Reading files").

A path from a config or a command line may name anything: ``/dev/zero``
(endless), ``/dev/urandom`` (endless junk), a FIFO (blocks forever on
open), a directory, a 10 GB file, or text nested 100,000 deep (tomllib,
json and cbor2 recurse until ``RecursionError``).  Here:

- only a regular file is read: the file is opened with ``O_NONBLOCK`` (so
  a FIFO cannot block the open) and ``fstat``-ed before one byte is read;
- at most ``limit + 1`` bytes are read, whatever the file claims;
- text must be UTF-8; the error names the file and the byte offset;
- nesting is bounded (``MAX_DEPTH``): CBOR is walked without recursion
  before it is decoded, and TOML's brackets are counted before tomllib
  sees the text, so neither ever recurses deep; JSON is parsed, a
  ``RecursionError`` turned into this module's error; the depth of what
  was decoded is checked.

Every problem is an ``InputFileError`` whose message starts with the path.
A missing or unreadable file is left as the ``OSError`` it is, so callers
keep their own "does not exist (make one: ...)" advice.  Imports nothing
of ours but ``drivers.errors``: ``rules/`` and the simulator use it too.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, TextIO

from drivers.errors import DriverError

KIB = 1 << 10
MIB = 1 << 20
# Limits by kind of file: generous for what cabguard writes, far below harm.
TEXT_LIMIT = 4 * MIB        # a config, profile, people file, rule file, scenario, model
CBOR_LIMIT = 4 * MIB        # a key file or a rule table
TRACE_LIMIT = 1 << 30       # a recorded trace (JSON Lines, read line by line)
MAX_DEPTH = 32              # no file of ours nests deeper than a handful of levels

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class InputFileError(DriverError):
    """A file that is not what it must be: not a regular file, too large,
    not UTF-8, nested too deep or not decodable.  The message names the file;
    ``problem`` is the message without it (for callers that place the path)."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__("{}: {}".format(path, problem))
        self.path = str(path)
        self.problem = problem


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: str | Path, what: str, limit: int) -> tuple[int, int]:
    """``(fd, size)`` of a regular file of at most ``limit`` bytes, opened for reading."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(path, "is {}, not a file; give the path of a {}".format(_kind(st.st_mode), what))
        if st.st_size > limit:
            raise InputFileError(path, "{} bytes, more than the {} bytes a {} may have".format(
                st.st_size, limit, what))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_bytes(path: str | Path, what: str, limit: int = CBOR_LIMIT) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    fd, _size = _open_regular(path, what, limit)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)      # the file may have grown since fstat
    if len(data) > limit:
        raise InputFileError(path, "more than the {} bytes a {} may have".format(limit, what))
    return data


def decode_utf8(data: bytes, where: str | Path, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(where, "not UTF-8 text (byte offset {}); a {} is UTF-8 text".format(
            e.start, what)) from None


def read_text(path: str | Path, what: str, limit: int = TEXT_LIMIT) -> str:
    """A regular file's text: strict UTF-8, at most ``limit`` bytes."""
    return decode_utf8(read_bytes(path, what, limit), path, what)


def open_binary(path: str | Path, what: str, limit: int = TRACE_LIMIT) -> BinaryIO:
    """A regular file opened for reading in binary (to stream a long one)."""
    fd, _size = _open_regular(path, what, limit)
    return os.fdopen(fd, "rb")


def open_text(path: str | Path, what: str, limit: int = TRACE_LIMIT) -> TextIO:
    """A regular file opened as strict UTF-8 text, to read line by line; a
    bad byte raises ``UnicodeDecodeError`` while reading (see ``decode_utf8``)."""
    return io.TextIOWrapper(open_binary(path, what, limit), encoding="utf-8", errors="strict")


def check_depth(value: Any, where: str | Path, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a decoded document nested deeper than ``max_depth`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = list(item)
        else:
            continue
        if depth > max_depth:
            raise InputFileError(where, "nested more than {} levels deep; a {} never is".format(max_depth, what))
        stack.extend((c, depth + 1) for c in children)


def _parse(loads: Callable[[Any], Any], syntax_error: type[ValueError], text: Any, where: str | Path,
           what: str) -> Any:
    """``loads(text)`` with bounded nesting; ``syntax_error`` passes through for
    the caller's own line-numbered message."""
    try:
        doc = loads(text)
    except RecursionError:
        raise InputFileError(where, "nested too deep to read; a {} nests a few levels at most".format(
            what)) from None
    except syntax_error:
        raise
    except ValueError as e:     # an integer of more than 4,300 digits (sys.int_info)
        raise InputFileError(where, "a number cannot be read ({})".format(str(e).split(";")[0])) from None
    check_depth(doc, where, what)
    return doc


# What a TOML text's nesting depends on: the brackets of its arrays and inline
# tables, outside the strings and comments (which may hold any bracket).
_TOML_TOKEN = re.compile("|".join((
    r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*""""{0,2}',     # a multi-line basic string
    r"'''[\s\S]*?''''{0,2}",                        # a multi-line literal string
    r'"(?:[^"\\\n]|\\.)*"',                           # a basic string
    r"'[^'\n]*'",                                     # a literal string
    r"#[^\n]*",                                       # a comment
    r"[\[\]{}]",                                      # a bracket
)))


def check_toml_nesting(text: str, where: str | Path, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse TOML whose arrays and inline tables nest deeper than ``max_depth``
    before tomllib reads it: tomllib recurses once a level, until ``RecursionError``."""
    depth = 0
    for m in _TOML_TOKEN.finditer(text):
        token = m.group()
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                raise InputFileError(where, "nested too deep to read; a {} nests a few levels at most".format(what))
        elif token in ("]", "}"):
            depth = max(0, depth - 1)


def parse_toml(text: str, where: str | Path, what: str) -> dict:
    """``tomllib.loads`` with bounded nesting; ``TOMLDecodeError`` passes through."""
    import tomllib   # here: a process that reads only segments (the uplink's) never parses TOML
    check_toml_nesting(text, where, what)
    return _parse(tomllib.loads, tomllib.TOMLDecodeError, text, where, what)


def parse_json(text: str | bytes, where: str | Path, what: str) -> Any:
    """``json.loads`` with bounded nesting; ``JSONDecodeError`` passes through."""
    return _parse(json.loads, json.JSONDecodeError, text, where, what)


# -- CBOR --------------------------------------------------------------

class _Cbor:
    """A walk over CBOR items that decodes nothing: it checks that every
    item is complete, no length claims more bytes than are left, and the
    nesting stays within ``max_depth`` (cbor2 recurses, and allocates what
    a length field claims)."""

    def __init__(self, data: bytes, max_depth: int):
        self.data = data
        self.max_depth = max_depth

    def head(self, pos: int) -> tuple[int, int, int, int]:
        """``(major, info, argument, next pos)`` of the item head at ``pos``."""
        data = self.data
        if pos >= len(data):
            raise ValueError("offset {}: the data ends inside an item".format(pos))
        first = data[pos]
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info, info, pos + 1
        if info > 27:
            if info == 31 and major in (2, 3, 4, 5, 7):
                return major, info, -1, pos + 1     # indefinite length, or the break
            raise ValueError("offset {}: reserved additional information {}".format(pos, info))
        size = 1 << (info - 24)
        if pos + 1 + size > len(data):
            raise ValueError("offset {}: the data ends inside an item head".format(pos))
        return major, info, int.from_bytes(data[pos + 1:pos + 1 + size], "big"), pos + 1 + size

    def walk(self) -> int:
        """The offset after the first complete item."""
        pos = 0
        # Each open container: [items still to come (-1: until a break), depth,
        # whether it is a map's key/value pairs (counts double)].
        stack: list[list[int]] = []
        while True:
            major, info, arg, pos = self.head(pos)
            if major == 7 and info == 31:
                if not stack or stack[-1][0] != -1:
                    raise ValueError("offset {}: a break outside an indefinite item".format(pos - 1))
                stack.pop()
            elif major in (2, 3) and arg >= 0:
                if arg > len(self.data) - pos:
                    raise ValueError("offset {}: a string of {} bytes, but only {} are left".format(
                        pos, arg, len(self.data) - pos))
                pos += arg
            elif major in (2, 3, 4, 5, 6):
                if len(stack) >= self.max_depth:
                    raise ValueError("offset {}: nested more than {} levels".format(pos, self.max_depth))
                count = arg * 2 if (major == 5 and arg > 0) else arg
                if major == 6:
                    count = 1
                elif count > len(self.data) - pos:
                    raise ValueError("offset {}: {} items claimed, but only {} bytes are left".format(
                        pos, count, len(self.data) - pos))
                if count != 0:
                    stack.append([count])
                    continue
            # One item is complete: count it against the open containers.
            while stack and stack[-1][0] > 0:
                stack[-1][0] -= 1
                if stack[-1][0]:
                    break
                stack.pop()
            if not stack:
                return pos


def check_cbor(data: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``ValueError`` (with the offset) unless ``data`` is exactly one
    complete CBOR item nested at most ``max_depth`` deep."""
    end = _Cbor(data, max_depth).walk()
    if end != len(data):
        raise ValueError("offset {}: {} bytes after the item".format(end, len(data) - end))


def loads_cbor(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """cbor2.loads behind ``check_cbor``; every decoding problem is a
    ``ValueError`` (cbor2 raises several kinds on crafted tags)."""
    import cbor2     # here: the rest of this module is stdlib-only
    check_cbor(data, max_depth)
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, ArithmeticError,
            LookupError, RecursionError, MemoryError) as e:
        raise ValueError("CBOR did not decode: {}".format(e)) from None


def read_cbor(path: str | Path, what: str, limit: int = CBOR_LIMIT) -> Any:
    """The one CBOR item of a regular file."""
    data = read_bytes(path, what, limit)
    try:
        return loads_cbor(data)
    except ValueError as e:
        raise InputFileError(path, "not a {} ({})".format(what, e)) from None
