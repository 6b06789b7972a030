"""The hostile-input corpus (issue 23): files a careless operator or an
attacker may hand to any command that reads one.

Generated, not hand-picked: every kind of file gets the generic corpus
(device files, a FIFO, a folder, binary, non-UTF-8, NUL bytes, empty, too
large) and its own family (deep nesting, huge numbers, NaN and extreme
dates for TOML, JSON and scenarios; crafted and truncated CBOR for keys and
tables; crafted, truncated and random segments for journals).  Each item
is made from a seed and a valid example, so the families grow with the
formats.  ``materialize`` puts an item on disk under the suffix a command
expects (``.toml``, ``.trace`` ...).
"""

from __future__ import annotations

import os
import random
import re
import struct
import zlib
from pathlib import Path
from typing import Callable

DEEP = 50_000      # far past any recursion limit
BIG = 5 << 20      # past every text and CBOR size limit (drivers/safefile.py)

# Items that are not contents: what `materialize` makes of each.
SPECIAL = {
    "dev-zero": "/dev/zero",
    "dev-urandom": "/dev/urandom",
    "fifo": "",            # a FIFO nobody writes to: a blocking open would hang
    "folder": "",
}

Item = bytes | str          # file contents, or a key of SPECIAL


def generic(seed: int = 23) -> dict[str, Item]:
    rng = random.Random(seed)
    items: dict[str, Item] = {name: name for name in SPECIAL}
    items.update({
        "binary": rng.randbytes(4096),
        "non-utf8": "name = \"caf\xe9\"\n# \xff\xfe\n".encode("latin-1"),
        "empty": b"",
        "too-large": b"# padding\n" * (BIG // 10 + 1),
    })
    return items


def deep_toml() -> dict[str, Item]:
    return {
        "toml-deep-array": ("a = " + "[" * DEEP + "]" * DEEP + "\n").encode(),
        "toml-deep-inline": ("a = " + "{b = " * DEEP + "1" + "}" * DEEP + "\n").encode(),
        "toml-deep-unclosed": ("a = " + "[" * DEEP).encode(),
        "toml-deep-tables": ("[" + ".".join(["t"] * 2000) + "]\nx = 1\n").encode(),
    }


def toml_family(valid: str) -> dict[str, Item]:
    """Deep nesting, and a valid file with its numbers made huge, NaN or infinite
    and its dates pushed to year 9999."""
    items = deep_toml()
    items["toml-huge-int"] = (valid + "\nzz_huge = " + "9" * 100_000 + "\n").encode()
    for name, number in (("1e300", "1e300"), ("nan", "nan")):
        items["toml-numbers-" + name] = _replace_numbers(valid, number).encode()
    for year, when in (("9999", "9999-12-31T23:59:59Z"), ("0001", "0001-01-01T00:00:00Z")):
        if _replace_dates(valid, when) != _replace_dates(valid, "x"):    # the file has dates
            items["toml-year-" + year] = _replace_dates(valid, when).encode()
    return items


def _replace_numbers(text: str, number: str) -> str:
    """Every bare integer value (``key = 12``) becomes ``number``."""
    out = []
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and value.strip().lstrip("-").isdigit():
            line = "{}= {}".format(key, number)
        out.append(line)
    return "\n".join(out) + "\n"


def _replace_dates(text: str, when: str) -> str:
    out = []
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        v = value.strip()
        if eq and len(v) >= 10 and v[:4].isdigit() and v[4] == "-":
            line = "{}= {}".format(key, when)
        out.append(line)
    return "\n".join(out) + "\n"


def when_family(terms: int = 100_000) -> dict[str, Item]:
    """Rules whose ``when`` is a chain of ``terms`` terms, or nested hundreds deep."""
    chains = {
        "when-and-chain": " and ".join(["io.door_open == 1"] * terms),
        "when-sum-chain": " + ".join(["io.supply_mv"] * terms) + " > 5",
        "when-not-chain": "not " * terms + "io.door_open",
        "when-not-900": "not " * 900 + "io.door_open",
        "when-parens": "(" * terms + "io.door_open" + ")" * terms,
    }
    return {name: '[[rule]]\nid = "x"\nwhen = "{}"\nseverity = "warning"\n'.format(when).encode()
            for name, when in chains.items()}


def scenario_family(valid: str) -> dict[str, Item]:
    """A scenario's own extremes: offsets and durations of absurd length."""
    items = toml_family(valid)

    def duration(value: str) -> bytes:
        return re.sub(r"(?m)^duration = .*$", "duration = " + value, valid, count=1).encode()
    items["scenario-duration-1e300"] = duration('"1e300s"')
    items["scenario-duration-huge"] = duration('"{}d"'.format("9" * 40))
    items["scenario-duration-nan"] = duration("nan")
    items["scenario-at-huge"] = valid.replace('at = "+', 'at = "+{}'.format("9" * 40)).encode()
    return items


def json_deep() -> dict[str, Item]:
    return {
        "json-deep": ("[" * DEEP + "]" * DEEP).encode(),
        "json-deep-object": ('{"a":' * DEEP + "1" + "}" * DEEP).encode(),
    }


def json_family() -> dict[str, Item]:
    return {
        **json_deep(),
        "json-nan": b'{"signals": NaN, "version": Infinity}',
        "json-huge-int": b'{"n": ' + b"9" * 100_000 + b"}",
    }


def trace_deep() -> dict[str, Item]:
    return {"trace-deep-header": ("[" * DEEP + "]" * DEEP + "\n").encode()}


def trace_family(valid_lines: list[str]) -> dict[str, Item]:
    """A trace (JSON Lines): a deep line, numbers made extreme, a truncated last line."""
    head, scans = valid_lines[0], valid_lines[1:]
    body = "".join(line + "\n" for line in scans)
    items = trace_deep()
    items["trace-deep-scan"] = (head + "\n" + "[" * DEEP + "]" * DEEP + "\n").encode()
    items["trace-truncated"] = (head + "\n" + body)[:-7].encode()
    for name, number in (("nan", "NaN"), ("huge", "9" * 5000)):
        items["trace-numbers-" + name] = (head + "\n" + _json_numbers(body, number)).encode()
    return items


def _json_numbers(text: str, number: str) -> str:
    """Every run of digits in ``text`` becomes ``number``."""
    out, digits = [], False
    for ch in text:
        if ch.isdigit():
            if not digits:
                out.append(number)
            digits = True
        else:
            out.append(ch)
            digits = False
    return "".join(out)


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def cbor_structure() -> dict[str, Item]:
    """CBOR that no reader may decode: deep, or claiming more than it holds."""
    return {
        "cbor-deep-array": b"\x81" * DEEP + b"\x00",
        "cbor-claims-2^64-items": b"\x9b" + b"\xff" * 8,
        "cbor-claims-4GB-string": b"\x5a\xff\xff\xff\xff" + b"x" * 16,
    }


def cbor_family(valid: bytes, seed: int = 17) -> dict[str, Item]:
    """Deep nesting, lengths that claim more than the file holds, crafted tags,
    a truncated and a bit-flipped copy of ``valid``."""
    rng = random.Random(seed)
    flipped = bytearray(valid)
    for _ in range(4):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return {
        **cbor_structure(),
        "cbor-deep-map": b"\xa1\x01" * DEEP + b"\x00",
        "cbor-deep-tags": b"\xd1" * DEEP + b"\x00",
        "cbor-indefinite-unclosed": b"\x9f" * 1000,
        "cbor-rational-zero": b"\xd8\x1e\x82\x01\x00",             # tag 30: 1/0
        "cbor-datetime-1e300": b"\xc1\xfb" + struct.pack(">d", 1e300),   # tag 1
        "cbor-datetime-nan": b"\xc1\xfb" + struct.pack(">d", float("nan")),
        "cbor-bignum-huge": b"\xc2\x5a\x00\x10\x00\x00" + b"\xff" * (1 << 20),
        "cbor-truncated": valid[:len(valid) // 2],
        "cbor-bit-flipped": bytes(flipped),
        "cbor-trailing-junk": valid + b"\xff\x00",
        "cbor-map-odd-keys": _cbor_head(5, 2) + b"\x01\x04\x02\x9b" + b"\xff" * 8,
    }


def _frame(record: bytes, crc: int | None = None) -> bytes:
    return struct.pack(">II", len(record), zlib.crc32(record) if crc is None else crc) + record


# Every even offset reads as a plausible ~1 MB frame whose CRC fails: a
# byte-by-byte resync would CRC a megabyte at a million offsets.
CRAFTED_SEGMENT = b"\x01" + b"\x00\x0f" * (1 << 20)


def segment_crafted() -> dict[str, Item]:
    return {"segment-crafted-resync": CRAFTED_SEGMENT,
            "segment-deep-record": _frame(b"\xd1" + b"\x81" * DEEP + b"\x00")}


def segment_family(valid: bytes, seed: int = 29) -> dict[str, Item]:
    """Segments: crafted to make a resync scan quadratic, truncated, random,
    zero-filled, a deep CBOR record in a good frame, a frame claiming 4 GB."""
    rng = random.Random(seed)
    return {
        **segment_crafted(),
        "segment-crafted-tail": valid + CRAFTED_SEGMENT[:3 << 19],
        "segment-truncated": valid[:len(valid) - 5],
        "segment-random": rng.randbytes(2 << 20),
        "segment-zeros": bytes(1 << 20),
        "segment-huge-claim": struct.pack(">II", 0xFFFFFFFF, 0) + b"x" * 64,
        "segment-bad-crcs": b"".join(_frame(rng.randbytes(rng.randrange(1, 300)), 0) for _ in range(2000)),
    }


def output_places(base: Path, folder: bool) -> dict[str, Path]:
    """Places no command can write its output to: an output ``folder``, or a
    file.  (No device as an output file: the old code, run as root, renamed
    its output over it.  A FIFO takes that path.  A read-only folder only if
    we are not root, who writes anywhere.)"""
    base.mkdir(parents=True, exist_ok=True)
    a_file = base / "a-file"
    a_file.write_text("x")
    a_folder = base / "a-folder"
    a_folder.mkdir(exist_ok=True)
    fifo = base / "a-fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    places = {"out-under-a-file": a_file / "sub", "out-in-proc": Path("/proc/self/nope/x"), "out-fifo": fifo}
    places.update({"out-a-file": a_file, "out-dev-null": Path("/dev/null")} if folder else {"out-a-folder": a_folder})
    if os.geteuid() != 0:
        locked = base / "read-only"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o500)
        places["out-read-only"] = locked / "new"
    return places


def materialize(name: str, item: Item, folder: Path, suffix: str = "") -> Path:
    """Put ``item`` at ``folder/name+suffix`` (or return the device path it names)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name + suffix)
    if isinstance(item, bytes):
        path.write_bytes(item)
        return path
    if SPECIAL[item]:
        return Path(SPECIAL[item])
    if item == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


# One item of each way the generic corpus breaks a reader: for a command
# whose reader already gets the whole corpus through another command.
SAMPLE = ("dev-zero", "fifo", "folder", "binary", "non-utf8")


def corpus(*families: Callable[[], dict[str, Item]] | dict[str, Item], sample: bool = False) -> dict[str, Item]:
    """The generic corpus (or its SAMPLE) plus the given families (dicts, or functions making them)."""
    items = {k: v for k, v in generic().items() if not sample or k in SAMPLE}
    for family in families:
        items.update(family() if callable(family) else family)
    return items
