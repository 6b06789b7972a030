"""The gateway's decode path in virtual time: world values -> registers -> image.

``profile_decode(profiles)`` is a ``decode_factory`` for
``simulator.evaluate``: each value the world reports for a device is
encoded into that device's registers with its Modbus profile
(``profile.encode``, what the simulated slave serves) and decoded back
with the profile's register map (``RegisterMap.decode``, what the bus
poller runs), so clamping, rounding, word order, bit packing and SunSpec
scale factors reach the image exactly as on a gateway.

Speed: a point without a scale factor decodes independently of the
device's other points, so it round-trips alone (``profile.only``) and the
result is cached by value, one cache per device class and point (batteries
in a cabinet often report the same values); points that share a SunSpec
scale factor are encoded together with their group's current values on
every change.
"""

from __future__ import annotations

from typing import Any, Callable

from controller.core.catalog import CAMERA_CLASS, GNSS_CLASS, Catalog
from drivers.modbus.profiles import Profile, load_profile

# The profiles a scenario cabinet's devices speak, by device class.
DEFAULT_PROFILES = {"io": "io-dvt", "battery": "bms16-vendor"}
CACHE_LIMIT = 1 << 16          # cached round trips per point before its cache restarts

Changes = list[tuple[int, int]]
Image = Any            # a list of signal values (or _Collected, a dict): anything that takes image[i] = v


class _Collected:
    """An image that keeps what is written into it as a list of changes, in order."""

    def __init__(self) -> None:
        self.changes: Changes = []

    def __setitem__(self, i: int, v: int) -> None:
        self.changes.append((i, v))


def device_class(device: str) -> str:
    """A scenario cabinet's devices: ``io``, ``bms1`` ... ``bms4``, its cameras
    ``cam.<name>`` and its GNSS receiver ``pos`` (no Modbus profile: the
    world gives their values as the gateway's image has them)."""
    if device.startswith("cam."):
        return CAMERA_CLASS
    if device == "pos":
        return GNSS_CLASS
    return "io" if device == "io" else "battery"


class _Points:
    """Some points of one device that round-trip together (one point, or a
    SunSpec scale-factor group), with the values the world last reported."""

    def __init__(self, profile: Profile, names: tuple[str, ...]):
        self.profile = profile.only(set(names))
        self.regmap = self.profile.bind(profile.sim_layout() if profile.sunspec else None)
        self.names = names
        self.values = {n: 0 for n in names}
        self.cache: dict[int, int] = {}

    def alone(self, name: str, value: int) -> int:
        """A point without a scale factor: its decoded value (cached by value)."""
        cache = self.cache
        got = cache.get(value)
        if got is None:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            got = cache[value] = self._decode({name: value})[name]
        return got

    def together(self, name: str, value: int) -> list[tuple[str, int]]:
        """A point of a scale-factor group: the whole group, decoded again."""
        self.values[name] = value
        decoded = self._decode(self.values)
        return [(n, decoded[n]) for n in self.names]

    def _decode(self, values: dict[str, int]) -> dict[str, int]:
        decoded, _missing = self.regmap.decode(self.regmap.blocks_from(self.profile.encode(values)))
        return decoded


def _groups(profile: Profile) -> list[tuple[str, ...]]:
    regmap = profile.bind(profile.sim_layout() if profile.sunspec else None)
    by_sf: dict[object, list[str]] = {}
    for f in regmap.fields:
        by_sf.setdefault(f.sf_address if f.sf_address is not None else ("alone", f.name), []).append(f.name)
    for name in profile.constants:      # stated by the profile: whatever the world says, the image reads it
        by_sf[("alone", name)] = [name]
    return [tuple(names) for names in by_sf.values()]


def profile_decode(profiles: dict[str, str] | None = None) -> Callable[[Catalog], Callable[[Changes], Changes]]:
    """A decode factory: per cabinet catalog, a function from the world's
    changes to the image's changes through each device's profile.
    ``profiles`` maps device class -> profile name (default DEFAULT_PROFILES);
    signals of no device (``sys.*``, ``sched.*``) and twins pass unchanged."""
    chosen = dict(DEFAULT_PROFILES, **(profiles or {}))
    loaded = {cls: load_profile(name) for cls, name in chosen.items()}
    groups = {cls: _groups(profile) for cls, profile in loaded.items()}
    # A point without a scale factor decodes the same on every device of its
    # class, so all of them (in every cabinet) share its cache.
    alone: dict[tuple[str, str], _Points] = {}

    def points_for(cls: str, names: tuple[str, ...]) -> _Points:
        if len(names) > 1:
            return _Points(loaded[cls], names)      # the group's values are the device's own
        key = (cls, names[0])
        if key not in alone:
            alone[key] = _Points(loaded[cls], names)
        return alone[key]

    def factory(catalog: Catalog) -> Callable[[Changes], Changes]:
        index = catalog.index
        # Per catalog index: the round-trip cache of a point that decodes alone
        # (and its points, for a miss); else a scale-factor group's points;
        # else nothing: the value passes unchanged.
        caches: list[dict[int, int] | None] = [None] * catalog.size
        alone_of: dict[int, tuple[_Points, str]] = {}
        group_of: dict[int, tuple[_Points, str, dict[str, int]]] = {}
        for dev in catalog.devices:
            cls = device_class(dev)
            for names in groups.get(cls, ()):
                where = {n: index[dev + "." + n] for n in names if dev + "." + n in index}
                if not where:
                    continue
                points = points_for(cls, names)
                for n, i in where.items():
                    if len(names) > 1:
                        group_of[i] = (points, n, where)
                    else:
                        caches[i] = points.cache
                        alone_of[i] = (points, n)

        def decode_into(changes: Changes, truth: Image, image: Image) -> None:
            """Write each of the world's changes, decoded, into ``truth`` and
            ``image`` in order (the gateway's common case: one pass, no list
            between)."""
            for i, v in changes:
                cache = caches[i]
                if cache is not None:           # the common case, inline: a cached round trip
                    got = cache.get(v)
                    if got is None:
                        points, name = alone_of[i]
                        got = points.alone(name, v)
                    truth[i] = image[i] = got
                elif i in group_of:
                    points, name, group = group_of[i]
                    for n, x in points.together(name, v):
                        if n in group:
                            truth[group[n]] = image[group[n]] = x
                else:
                    truth[i] = image[i] = v

        def decode(changes: Changes) -> Changes:
            out = _Collected()
            decode_into(changes, out, {})       # (the dict takes the second copy)
            return out.changes
        decode.into = decode_into       # type: ignore[attr-defined]
        return decode
    return factory
