"""Device profiles: register maps as data (TOML), validated on load.

A profile belongs to a device class (``io``, ``battery``, ``relay``,
``gnss_receiver``) and maps registers to exactly that class's signals
(docs/signals.md), each an integer in the class's declared unit and decimal
scale.  The format is documented in
docs/profiles.md.

Decoding and encoding are pure and I/O free, so the same code serves the bus
poller (registers -> signals), the simulator (signals -> registers) and
virtual-time evaluation (world -> encode -> decode -> image):

    profile = load_profile("bms16-vendor")
    regmap = profile.bind()                 # SunSpec: profile.bind(layout)
    tables = profile.encode({"pack_mv": 51200, ...})
    values, missing = regmap.decode(regmap.blocks_from(tables))
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
import zlib
from pathlib import Path
from typing import Any, NamedTuple

from drivers.errors import ProfileError
from drivers.safefile import InputFileError, parse_toml, read_text
from drivers.modbus.frames import MAX_BITS, MAX_REGISTERS
from drivers.tomlsource import TomlSource

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"

# The signal contract of docs/signals.md, defined here once for the drivers,
# the rule tools and the simulator: (short name, unit, scale).
IO_SIGNALS = (("door_open", "bool", 0), ("door_bolt", "bool", 0), ("tamper", "bool", 0),
              ("vib_rms_mg", "g", -3), ("vib_peak_mg", "g", -3), ("tilt_mdeg", "deg", -3),
              ("accel_z_mg", "g", -3), ("supply_mv", "V", -3), ("temp_dc", "C", -1))
BATTERY_SIGNALS = (("pack_mv", "V", -3), ("current_ma", "A", -3), ("soc_pct", "pct", 0),
                   ("cell_vmax_mv", "V", -3), ("cell_vmin_mv", "V", -3),
                   ("temp_max_dc", "C", -1), ("temp_min_dc", "C", -1), ("modules", "count", 0),
                   ("serial", "code", 0), ("alarm_bits", "bits", 0), ("cells_per_module", "count", 0))
CELL_SIGNALS = tuple(("cell{:02d}_mv".format(i), "V", -3) for i in range(1, 17))
RELAY_SIGNALS = tuple(("k{}".format(i), "bool", 0) for i in range(1, 5))
# A GNSS receiver on the bus: its newest fix, which the gateway feeds to the position
# track (controller/gateway/position.py) as it does a GGA sentence read on a serial port.
GNSS_RECEIVER_SIGNALS = (("utc_ms", "s", -3), ("fix", "code", 0), ("sats", "count", 0), ("hdop", "count", -2),
                         ("lat", "deg", -7), ("lon", "deg", -7))
# class -> (signals every profile of the class maps, signals a profile may add)
CLASSES: dict[str, tuple[tuple, tuple]] = {
    "io": (IO_SIGNALS, ()),
    "battery": (BATTERY_SIGNALS, CELL_SIGNALS),
    "relay": (RELAY_SIGNALS, ()),
    "gnss_receiver": (GNSS_RECEIVER_SIGNALS, ()),
}

# Facts of a device's build that a profile may state as a constant (``value = N``)
# where the device has no register for them (docs/profiles.md, "Constant signals"):
# the cells in series in one module of a battery string.
CONSTANT_SIGNALS = ("cells_per_module",)
CONSTANT_MAX = 0xFFFF      # what a u16 register could give

TABLES = ("coil", "discrete", "holding", "input")
BIT_TABLES = ("coil", "discrete")
# A poll reads the registers first and the bits (door contacts, switches) last, so a
# contact's reading is the freshest when the poll ends, just before the scan that uses it.
READ_ORDER = ("holding", "input", "coil", "discrete")
WORDS = {"bool": 1, "u16": 1, "s16": 1, "u32": 2, "s32": 2}
TYPES = tuple(WORDS) + ("str",)
SUNSPEC_BASES = (40000, 0, 50000)
SUNS = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_END = 0xFFFF
# What a SunSpec point the simulator has no value for reads: the information model's
# "not implemented" value of its type, per register, high word first (strings: 0).
UNSET_POINT = {"uint16": [0xFFFF], "enum16": [0xFFFF], "bitfield16": [0xFFFF], "count": [0xFFFF],
                   "int16": [0x8000], "sunssf": [0x8000], "pad": [0x8000],
                   "uint32": [0xFFFF, 0xFFFF], "enum32": [0xFFFF, 0xFFFF], "bitfield32": [0xFFFF, 0xFFFF],
                   "acc32": [0, 0], "int32": [0x8000, 0]}
# SunSpec "not implemented" values per type; a scale factor uses 0x8000.
NOT_IMPLEMENTED = {"u16": 0xFFFF, "s16": 0x8000, "u32": 0xFFFFFFFF, "s32": 0x80000000}
NI_SF = 0x8000
_FIELD_KEYS = {"table", "address", "model", "offset", "type", "scale", "sf", "bit",
               "words", "word_order", "missing", "value", "once", "mirror"}
_MIRROR_KEYS = {"table", "address", "bit"}
_PROFILE_KEYS = {"name", "class", "description", "word_order", "align", "gap"}


def fold31(value: int) -> int:
    """A 32-bit value folded into 31 bits (bit 31 is xor-ed into bit 0)."""
    return (value & 0x7FFFFFFF) ^ (value >> 31)


def fold_text(text: str) -> int:
    """A serial string as an integer: its value if all digits and < 2**31, else CRC-32 & 0x7FFFFFFF."""
    if text.isascii() and text.isdigit() and int(text) < 2**31:   # "2²" is digits to isdigit(), not to int()
        return int(text)
    return zlib.crc32(text.encode("latin-1", "replace")) & 0x7FFFFFFF


def _scaled(raw: int, exp: int) -> int:
    """raw * 10**exp in integers, truncated toward zero."""
    if exp >= 0:
        return raw * 10**exp
    div = 10**-exp
    return raw // div if raw >= 0 else -((-raw) // div)


class Field(NamedTuple):
    """One signal's register(s), resolved to an absolute address."""
    name: str
    table: str
    address: int
    type: str
    words: int
    bit: int | None
    word_order: str
    raw_scale: int          # decimal exponent of one raw count (when sf is None)
    sf_address: int | None  # SunSpec scale-factor register
    scale: int              # the signal's declared scale
    missing: int            # value given for a not-implemented point


class Block(NamedTuple):
    table: str
    start: int
    count: int


class SunSpecModel(NamedTuple):
    id: int
    length: int
    fill: dict[int, Any]


class RegisterMap:
    """A profile bound to concrete addresses: block reads, decode, coil addresses."""

    def __init__(self, fields: list[Field], gap: int, not_implemented: bool,
                 constants: dict[str, int] | None = None) -> None:
        self.fields = fields
        self.constants = dict(constants or {})   # signals the profile states, read with every poll
        self.blocks = _pack_blocks(fields, gap)
        self.not_implemented = not_implemented
        # The decode plan, built once: (name, block, offset, field), the field None where the
        # signal is the register as read (one word, no bit, sign, scale or "not implemented" value).
        self._plan = [(f.name, *self._locate(f.table, f.address), None if self._as_read(f) else f) for f in fields]
        self._sf = {f.sf_address: self._locate("holding", f.sf_address)
                    for f in fields if f.sf_address is not None}

    def _as_read(self, f: Field) -> bool:
        return (f.type in ("bool", "u16") and f.bit is None and f.sf_address is None and f.raw_scale == f.scale
                and not (self.not_implemented and f.type in NOT_IMPLEMENTED))

    def _locate(self, table: str, address: int) -> tuple[int, int]:
        for i, b in enumerate(self.blocks):
            if b.table == table and b.start <= address < b.start + b.count:
                return i, address - b.start
        raise ProfileError("register {} of table {} is in no block".format(address, table))

    def decode(self, blocks: list[list[int]]) -> tuple[dict[str, int], int]:
        """Signals from block contents (aligned with ``self.blocks``), and the count of
        not-implemented points (each given its field's ``missing`` value).  A
        constant signal comes with every decode: known once the device answered."""
        out: dict[str, int] = dict(self.constants)
        missing = 0
        ni = self.not_implemented
        for name, bi, off, f in self._plan:
            regs = blocks[bi]
            if f is None:
                out[name] = regs[off]
                continue
            raw = _raw(f, regs, off)
            if raw is None or (ni and f.type in NOT_IMPLEMENTED and raw == NOT_IMPLEMENTED[f.type]):
                out[f.name] = f.missing
                missing += 1
                continue
            raw = _signed(f, raw)
            exp = f.raw_scale
            if f.sf_address is not None:
                sbi, soff = self._sf[f.sf_address]
                sf = blocks[sbi][soff]
                if sf == NI_SF:
                    out[f.name] = f.missing
                    missing += 1
                    continue
                exp = sf - 0x10000 if sf & 0x8000 else sf
            out[f.name] = _scaled(raw, exp - f.scale)
        return out, missing

    def blocks_from(self, tables: dict[str, dict[int, int]]) -> list[list[int]]:
        """What a slave holding ``tables`` answers to this map's block reads (absent = 0)."""
        return [[tables[b.table].get(a, 0) for a in range(b.start, b.start + b.count)]
                for b in self.blocks]

    def coil(self, name: str) -> int:
        """The coil address of a writable signal."""
        for f in self.fields:
            if f.name == name and f.table == "coil":
                return f.address
        raise ProfileError("signal '{}' is not a coil (coils: {})".format(
            name, ", ".join(f.name for f in self.fields if f.table == "coil") or "none"))


def _raw(f: Field, regs: list[int], off: int) -> int | None:
    if f.type == "str":
        data = b"".join(r.to_bytes(2, "big") for r in regs[off:off + f.words])
        text = data.split(b"\0")[0].decode("latin-1").strip()
        return fold_text(text) if text else None
    if f.words == 2:
        hi, lo = regs[off], regs[off + 1]
        if f.word_order == "little":
            hi, lo = lo, hi
        return (hi << 16) | lo
    raw = regs[off]
    if f.bit is not None:
        return (raw >> f.bit) & 1
    return raw


def _signed(f: Field, raw: int) -> int:
    if f.type == "s16" and raw & 0x8000:
        return raw - 0x10000
    if f.type == "s32" and raw & 0x80000000:
        return raw - 0x100000000
    if f.type == "u32" and raw >> 31:
        return fold31(raw)
    return raw


def _pack_blocks(fields: list[Field], gap: int) -> list[Block]:
    """Contiguous (or within ``gap``) addresses of one table packed into reads of at
    most 125 registers / 2000 bits."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for f in fields:
        spans.setdefault(f.table, []).append((f.address, f.address + f.words))
        if f.sf_address is not None:
            spans.setdefault("holding", []).append((f.sf_address, f.sf_address + 1))
    blocks = []
    for table in READ_ORDER:
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        start = end = None
        for lo, hi in sorted(spans.get(table, [])):
            if start is not None and lo <= end + gap and max(end, hi) - start <= limit:
                end = max(end, hi)
                continue
            if start is not None:
                blocks.append(Block(table, start, end - start))
            start, end = lo, hi
        if start is not None:
            blocks.append(Block(table, start, end - start))
    return blocks


class Profile:
    """A validated profile.  ``bind()`` gives the RegisterMap the poller and decoder use."""

    def __init__(self, path: Path, name: str, device_class: str, description: str,
                 specs: list[tuple[str, str, int]], fields: list[dict], gap: int,
                 models: list[SunSpecModel], constants: dict[str, int]) -> None:
        self.path = path
        self.name = name
        self.device_class = device_class
        self.description = description
        self._specs = specs
        self._fields = fields     # validated entries; SunSpec ones relative to their model
        self.constants = constants  # signals stated by the profile (no register): name -> value
        self.gap = gap
        self.models = models      # empty unless a SunSpec profile
        self._sim_maps: dict[int, RegisterMap] = {}  # encode()'s bound maps, by SunSpec base
        # Where the device also serves a signal (``mirror``): the simulator serves it there too.
        self._mirrors = self._resolve([e["mirror"] for e in fields if e["mirror"] is not None], None)

    @property
    def sunspec(self) -> bool:
        return bool(self.models)

    def signal_specs(self) -> list[tuple[str, str, int]]:
        """``(short_name, unit, scale)`` in class order, for catalog.device_signals()."""
        return list(self._specs)

    def coils(self) -> list[str]:
        """The signals an output may drive (coil table)."""
        return [e["name"] for e in self._fields if e["table"] == "coil"]

    def only(self, names: set[str]) -> "Profile":
        """This profile restricted to some points (same addresses): virtual-time
        evaluation round-trips one point at a time through it."""
        return Profile(self.path, self.name, self.device_class, self.description, self._specs,
                       [e for e in self._fields if e["name"] in names], self.gap, self.models,
                       {n: v for n, v in self.constants.items() if n in names})

    def sim_layout(self, base: int = SUNSPEC_BASES[0]) -> dict[int, int]:
        """SunSpec model id -> address of its ID register, chained from ``base``."""
        layout, addr = {}, base + 2
        for m in self.models:
            layout[m.id] = addr
            addr += 2 + m.length
        return layout

    def bind(self, layout: dict[int, int] | None = None, facts: dict[str, int] | None = None) -> RegisterMap:
        """Resolve addresses; a SunSpec profile needs the discovered model ``layout``.

        Without ``facts``: every register the profile maps (what a slave holds).
        With ``facts`` (the signals read once at discovery, ``once_map``): what a
        poll reads, the ``once`` points left out and ``facts`` carried as constants."""
        if self.sunspec and layout is None:
            raise ProfileError("{}: a SunSpec profile needs the device's model layout".format(self.path))
        entries = self._fields if facts is None else [e for e in self._fields if not e["once"]]
        return RegisterMap(self._resolve(entries, layout), self.gap, self.sunspec, dict(self.constants, **(facts or {})))

    def once_map(self, layout: dict[int, int]) -> RegisterMap:
        """The points read once, when a SunSpec device is discovered (``once = true``)."""
        return RegisterMap(self._resolve([e for e in self._fields if e["once"]], layout), self.gap, self.sunspec)

    def _resolve(self, entries: list[dict], layout: dict[int, int] | None) -> list[Field]:
        fields = []
        for e in entries:
            base = layout[e["model"]] if self.sunspec else 0
            sf = e.get("sf")
            fields.append(Field(e["name"], e["table"], base + e["address"], e["type"],
                                e["words"], e.get("bit"), e["word_order"], e["raw_scale"],
                                None if sf is None else base + sf, e["scale"], e["missing"]))
        return fields

    def encode(self, values: dict[str, int], base: int = SUNSPEC_BASES[0]) -> dict[str, dict[int, int]]:
        """Register tables that decode to ``values`` (the simulator's side).

        Values outside a register's range are clamped; SunSpec scale factors are
        chosen per scale-factor register as the finest that fits every point.
        """
        tables: dict[str, dict[int, int]] = {t: {} for t in TABLES}
        regmap = self._sim_maps.get(base)
        if regmap is None:
            regmap = self._sim_maps[base] = self.bind(self.sim_layout(base) if self.sunspec else None)
        if self.sunspec:
            _encode_sunspec_frame(tables["holding"], self.models, self.sim_layout(base), base)
        sfs = _choose_sfs(regmap.fields, values)
        for f in regmap.fields:
            value = values.get(f.name, 0)
            exp = sfs[f.sf_address] if f.sf_address is not None else f.raw_scale
            _put(tables[f.table], f, value, exp)
        for f in self._mirrors:
            _put(tables[f.table], f, values.get(f.name, 0), f.raw_scale)
        for address, sf in sfs.items():
            tables["holding"][address] = sf & 0xFFFF
        return tables


def _encode_sunspec_frame(holding: dict[int, int], models: list[SunSpecModel],
                          layout: dict[int, int], base: int) -> None:
    holding[base], holding[base + 1] = SUNS
    end = base + 2
    for m in models:
        start = layout[m.id]
        holding[start], holding[start + 1] = m.id, m.length
        for a in range(start + 2, start + 2 + m.length):
            holding[a] = 0
        for offset, size, kind in _model_points(m.id, m.length):
            for i, word in enumerate(UNSET_POINT.get(kind, [0] * size)):
                holding[start + offset + i] = word
        for offset, value in m.fill.items():
            if isinstance(value, str):
                _put_text(holding, start + offset, value, (len(value) + 1) // 2)
            else:
                holding[start + offset] = value & 0xFFFF
        end = start + 2 + m.length
    holding[end], holding[end + 1] = SUNSPEC_END, 0


@functools.lru_cache(maxsize=None)
def _point_types() -> dict[str, Any]:
    return json.loads((PROFILE_DIR / "sunspec-points.json").read_text())


def _model_points(model_id: int, length: int) -> list[tuple[int, int, str]]:
    """(offset from the ID register, registers, type) of every point of a model of ``length``,
    its repeating group (803's strings, 805's cells) as many times as the length holds; [] for
    a model whose types are not known."""
    model = _point_types().get(str(model_id))
    if model is None:
        return []
    points = [tuple(p) for p in model["fixed"]]
    repeat = model.get("repeat", [])
    step = sum(size for _o, size, _t in repeat)
    end = points[-1][0] + points[-1][1] if points else 2
    for first in range(end, 2 + length - step + 1, step or 2 + length):
        points += [(first + offset, size, kind) for offset, size, kind in repeat]
    return points


def _put_text(regs: dict[int, int], address: int, text: str, words: int) -> None:
    data = text.encode("latin-1", "replace")[: 2 * words].ljust(2 * words, b"\0")
    for i in range(words):
        regs[address + i] = (data[2 * i] << 8) | data[2 * i + 1]


_RANGE = {"bool": (0, 1), "u16": (0, 0xFFFF), "s16": (-0x8000, 0x7FFF),
          "u32": (0, 0x7FFFFFFF), "s32": (-0x80000000, 0x7FFFFFFF)}


def _raw_for(f: Field, value: int, exp: int) -> int:
    return _scaled(value, f.scale - exp)


def _choose_sfs(fields: list[Field], values: dict[str, int]) -> dict[int, int]:
    by_sf: dict[int, list[Field]] = {}
    for f in fields:
        if f.sf_address is not None:
            by_sf.setdefault(f.sf_address, []).append(f)
    chosen = {}
    for address, group in by_sf.items():
        for exp in range(-6, 10):
            if all(_RANGE[f.type][0] <= _raw_for(f, values.get(f.name, 0), exp) <= _RANGE[f.type][1]
                   for f in group):
                break
        chosen[address] = exp
    return chosen


def _put(regs: dict[int, int], f: Field, value: int, exp: int) -> None:
    if f.type == "str":
        _put_text(regs, f.address, str(value), f.words)
        return
    lo, hi = _RANGE[f.type]
    raw = min(hi, max(lo, _raw_for(f, value, exp)))
    if f.bit is not None:
        old = regs.get(f.address, 0)
        regs[f.address] = (old & ~(1 << f.bit)) | (raw << f.bit)
    elif f.words == 2:
        raw &= 0xFFFFFFFF
        words = [raw >> 16, raw & 0xFFFF]
        if f.word_order == "little":
            words.reverse()
        regs[f.address], regs[f.address + 1] = words
    else:
        regs[f.address] = raw & 0xFFFF


# ---- loading and validation ------------------------------------------------

class _Source(TomlSource):
    """The profile's text, to find the line of a table or key."""

    def error(self, line: int, what: str) -> ProfileError:
        return ProfileError("{}:{}: {}".format(self.path, line, what))


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (drivers/profiles/NAME.toml) or by file path."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and "/" not in str(name_or_path):
        path = PROFILE_DIR / (str(name_or_path) + ".toml")
        if not path.is_file():
            raise ProfileError("unknown device profile '{}' (known: {}; or give a .toml path)".format(
                name_or_path, ", ".join(known_profiles())))
    try:
        text = read_text(path, "device profile")
    except OSError as e:
        raise ProfileError("cannot read device profile {}: {}".format(path, e.strerror)) from None
    except InputFileError as e:
        raise ProfileError(str(e)) from None
    return parse_profile(text, path)


def parse_profile(text: str, path: Path) -> Profile:
    src = _Source(path, text)
    try:
        doc = parse_toml(text, path, "device profile")
    except tomllib.TOMLDecodeError as e:
        raise ProfileError("{}: not valid TOML: {}".format(path, e)) from None
    except InputFileError as e:
        raise ProfileError(str(e)) from None
    head = doc.get("profile")
    if not isinstance(head, dict):
        raise src.error(1, "missing [profile] table (name, class)")
    for key in head:
        if key not in _PROFILE_KEYS:
            raise src.error(src.line_of("profile", key), "unknown key profile.{} (known: {})".format(
                key, ", ".join(sorted(_PROFILE_KEYS))))
    device_class = head.get("class")
    if device_class not in CLASSES:
        raise src.error(src.line_of("profile", "class"), "device class {!r} is not one of {}".format(
            device_class, ", ".join(CLASSES)))
    word_order = head.get("word_order", "big")
    if word_order not in ("big", "little"):
        raise src.error(src.line_of("profile", "word_order"), "word_order must be \"big\" or \"little\"")
    align = _int_in(src, head, "align", 1, (1, 2), "profile")
    gap = _int_in(src, head, "gap", 0, range(0, MAX_REGISTERS), "profile")
    models = _sunspec_models(src, doc.get("sunspec"))
    required, optional = CLASSES[device_class]
    catalog = {n: (u, s) for n, u, s in required + optional}
    signals = doc.get("signals")
    if not isinstance(signals, dict):
        raise src.error(1, "missing [signals.NAME] tables")
    entries = []
    constants = {}
    for name, entry in signals.items():
        if name not in catalog:
            raise src.error(src.line_of("signals." + name), "signal '{}' is not in class {} (its signals: {})".format(
                name, device_class, ", ".join(n for n, _u, _s in required + optional)))
        if isinstance(entry, dict) and "value" in entry:
            constants[name] = _constant(src, name, entry)
        else:
            entries.append(_field(src, name, entry, catalog[name], word_order, models))
    missing = [n for n, _u, _s in required if n not in signals]
    if missing:
        stated = [n for n in missing if n in CONSTANT_SIGNALS]
        raise src.error(1, "class {} needs signals {}: add a [signals.NAME] table for each{}".format(
            device_class, ", ".join(missing), "" if not stated else " ({}: the device's register, or "
            "value = N where the device has none, docs/profiles.md \"Constant signals\")".format(", ".join(stated))))
    _check_layout(src, entries + [e["mirror"] for e in entries if e["mirror"] is not None], align, models)
    specs = [s for s in required + optional if s[0] in signals]
    return Profile(path, str(head.get("name", path.stem)), device_class,
                   str(head.get("description", "")), specs, entries, gap, models, constants)


def _constant(src: _Source, name: str, entry: dict) -> int:
    """A signal the profile states (``value = N``): a fact of the device's build
    that it has no register for.  Only CONSTANT_SIGNALS may be one, it has no
    other key, and it is a positive whole number: 0 would read as "not known"
    for ever (docs/signals.md) and silence every rule that needs it."""
    header = "signals." + name
    value = entry["value"]
    if name not in CONSTANT_SIGNALS:
        raise src.error(src.line_of(header, "value"), "signal '{}': only {} may be stated as a constant "
                        "(value = N); map {} to the device's register".format(name, ", ".join(CONSTANT_SIGNALS), name))
    others = sorted(k for k in entry if k != "value")
    if others:
        raise src.error(src.line_of(header, others[0]), "signal '{}': a constant (value = N) has no register: "
                        "remove {} or the value".format(name, ", ".join(others)))
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= CONSTANT_MAX:
        raise src.error(src.line_of(header, "value"), "signal '{}': value = {!r} is not a whole number 1..{} "
                        "(the device's own figure, e.g. 16 cells per module)".format(name, value, CONSTANT_MAX))
    return value


def _int_in(src: _Source, table: dict, key: str, default: int, allowed, where: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise src.error(src.line_of(where, key), "{}.{} = {!r} is not allowed (want one of {})".format(
            where, key, value, "{}..{}".format(min(allowed), max(allowed))))
    return value


def _sunspec_models(src: _Source, sunspec: Any) -> list[SunSpecModel]:
    if sunspec is None:
        return []
    models = sunspec.get("model") if isinstance(sunspec, dict) else None
    if not isinstance(models, list) or not models:
        raise src.error(src.line_of("sunspec"), "[sunspec] needs [[sunspec.model]] tables (id, length)")
    out = []
    for n, m in enumerate(models):
        mid, length = m.get("id"), m.get("length")
        if not isinstance(mid, int) or not 1 <= mid < SUNSPEC_END or not isinstance(length, int) or length < 1:
            raise src.error(src.nth_of("sunspec.model", n), "SunSpec model needs integer id and length")
        fill = {}
        for key, value in m.get("fill", {}).items():
            if not key.isdigit() or not 2 <= int(key) < 2 + length or not isinstance(value, (int, str)):
                raise src.error(src.nth_of("sunspec.model", n, "fill"),
                                "model {} fill key {!r}: want an offset 2..{} and an integer or string".format(
                                    mid, key, length + 1))
            fill[int(key)] = value
        out.append(SunSpecModel(mid, length, fill))
    if out[0].id != 1:
        raise src.error(src.nth_of("sunspec.model", 0, "id"), "the first SunSpec model must be the common model 1")
    return out


def _field(src: _Source, name: str, entry: Any, unit_scale: tuple[str, int], word_order: str,
           models: list[SunSpecModel]) -> dict:
    header = "signals." + name
    if not isinstance(entry, dict):
        raise src.error(src.line_of(header), "signal '{}' must be a table".format(name))
    for key in entry:
        if key not in _FIELD_KEYS:
            raise src.error(src.line_of(header, key), "signal '{}': unknown key '{}' (known: {})".format(
                name, key, ", ".join(sorted(_FIELD_KEYS))))
    unit, scale = unit_scale
    typ = entry.get("type", "bool" if unit == "bool" else "u16")
    if models:
        table, address = "holding", entry.get("offset")
        where = "model {} offset {}".format(entry.get("model"), address)
        if entry.get("model") not in [m.id for m in models]:
            raise src.error(src.line_of(header, "model"), "signal '{}': model {!r} is not in [[sunspec.model]]".format(
                name, entry.get("model")))
    else:
        table, address = entry.get("table"), entry.get("address")
        where = "{} register {}".format(table, address)
        if table not in TABLES:
            raise src.error(src.line_of(header, "table"), "signal '{}': table {!r} is not one of {}".format(
                name, table, ", ".join(TABLES)))
    if not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise src.error(src.line_of(header, "offset" if models else "address"),
                        "signal '{}': register address {!r} is not an integer 0..65535".format(name, address))
    line = src.line_of(header, "type")
    say = "signal '{}' ({})".format(name, where)
    if typ not in TYPES:
        raise src.error(line, "{}: unknown type {!r} (known: {})".format(say, typ, ", ".join(TYPES)))
    if (table in BIT_TABLES) != (typ == "bool"):
        raise src.error(line, "{}: type {} does not fit table {} (coil/discrete are bool, registers are not)".format(
            say, typ, table))
    bit = entry.get("bit")
    if bit is not None and (typ != "u16" or not isinstance(bit, int) or not 0 <= bit <= 15):
        raise src.error(src.line_of(header, "bit"), "{}: bit must be 0..15 on a u16 register".format(say))
    if unit == "bool" and typ != "bool" and bit is None:
        raise src.error(line, "{}: a bool signal on a register needs `bit`".format(say))
    words = WORDS.get(typ, entry.get("words"))
    if typ == "str" and (not isinstance(words, int) or not 1 <= words <= MAX_REGISTERS):
        raise src.error(src.line_of(header, "words"), "{}: a str needs words = 1..125".format(say))
    if not models and address + words > 0x10000:
        raise src.error(line, "{}: its {} registers run past register 65535, the last there is".format(say, words))
    raw_scale = entry.get("scale", scale)
    if not isinstance(raw_scale, int) or isinstance(raw_scale, bool) or not -9 <= raw_scale <= 9:
        raise src.error(src.line_of(header, "scale"), "{}: scale {!r} is not an integer power of ten -9..9".format(
            say, raw_scale))
    sf = entry.get("sf")
    if sf is not None and (not models or not isinstance(sf, int) or sf < 2):
        raise src.error(src.line_of(header, "sf"), "{}: sf is the offset of a SunSpec scale-factor point".format(say))
    order = entry.get("word_order", word_order)
    if order not in ("big", "little"):
        raise src.error(src.line_of(header, "word_order"), "{}: word_order must be big or little".format(say))
    missing = entry.get("missing", 0)
    if not isinstance(missing, int):
        raise src.error(src.line_of(header, "missing"), "{}: missing must be an integer".format(say))
    once = entry.get("once", False)
    if once is not False and (once is not True or not models or name not in CONSTANT_SIGNALS):
        raise src.error(src.line_of(header, "once"), "{}: once = true reads a fact of the unit's build ({}) "
                        "when a SunSpec device is discovered; elsewhere leave it out".format(
                            say, ", ".join(CONSTANT_SIGNALS)))
    return {"name": name, "table": table, "address": address, "type": typ, "words": words,
            "bit": bit, "word_order": order, "raw_scale": raw_scale, "sf": sf, "scale": scale,
            "missing": missing, "model": entry.get("model"), "line": line, "where": where, "once": once,
            "mirror": _mirror(src, name, entry, unit, models)}


def _mirror(src: _Source, name: str, entry: dict, unit: str, models: list[SunSpecModel]) -> dict | None:
    """Where the device also serves a bool signal (``mirror = {table, address}``, a register
    with ``bit``): a module whose status register mirrors its discrete inputs.  The poll reads
    the signal's own place only; the simulator serves both (docs/profiles.md, "Mirrors")."""
    mirror = entry.get("mirror")
    if mirror is None:
        return None
    line = src.line_of("signals." + name, "mirror")
    if not isinstance(mirror, dict):
        mirror = {"table": None}
    table, address, bit = mirror.get("table"), mirror.get("address"), mirror.get("bit")
    good_bit = bit is None if table in BIT_TABLES else isinstance(bit, int) and 0 <= bit <= 15
    if (unit != "bool" or models or set(mirror) - _MIRROR_KEYS or table not in TABLES or not good_bit
            or not isinstance(address, int) or isinstance(address, bool) or not 0 <= address <= 0xFFFF):
        raise src.error(line, "signal '{}': mirror must be {{table = \"discrete\", address = N}} (or \"coil\"), "
                        "or a register's bit {{table = \"input\", address = N, bit = 0..15}}, on a bool signal "
                        "of a profile without [sunspec]".format(name))
    where = "{} register {}, mirror".format(table, address)
    return {"name": name, "table": table, "address": address, "type": "u16" if bit is not None else "bool",
            "words": 1, "bit": bit, "word_order": "big", "raw_scale": 0, "sf": None, "scale": 0, "missing": 0,
            "model": None, "line": line, "where": where, "once": False, "mirror": None}


def _check_layout(src: _Source, entries: list[dict], align: int, models: list[SunSpecModel]) -> None:
    lengths = {m.id: m.length for m in models}
    taken: dict[tuple, dict] = {}
    for e in entries:
        if align == 2 and e["words"] == 2 and e["address"] % 2:
            raise src.error(e["line"], "signal '{}' ({}): a 32-bit value must start at an even register "
                            "(profile.align = 2)".format(e["name"], e["where"]))
        if models and e["address"] + e["words"] > 2 + lengths[e["model"]]:
            raise src.error(e["line"], "signal '{}' ({}): runs past the end of model {} (length {})".format(
                e["name"], e["where"], e["model"], lengths[e["model"]]))
        for a in range(e["address"], e["address"] + e["words"]):
            key = (e["model"], e["table"], a, e["bit"])
            whole = (e["model"], e["table"], a, None)
            clash = taken.get(key) or (taken.get(whole) if e["bit"] is not None else None)
            if clash is None and e["bit"] is None:
                clash = next((v for k, v in taken.items() if k[:3] == key[:3]), None)
            if clash is not None:
                raise src.error(e["line"], "signal '{}' ({}) overlaps signal '{}' at register {}".format(
                    e["name"], e["where"], clash["name"], a))
            taken[key] = e
