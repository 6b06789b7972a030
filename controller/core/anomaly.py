"""The fixed-point anomaly model: window features, a per-time-of-week
baseline, integer scoring and guarded online adaptation (docs/anomaly.md).

Portable: integer arithmetic only (every intermediate below 2**30), no
imports beyond MicroPython's subset, nothing of ours.  The caller injects
everything: the model tables (the JSON model file, parsed), the image
index of each signal by name, and the mode numbers in which adaptation is
allowed.

    model = AnomalyModel(tables, catalog.index, adapt_modes=(0,))
    score, top = model.scan(image, now_ms, mode)      # every scan

``scan`` folds the image into the open window (a few comparisons) and, when
the window closes (every ``window_ms``), turns the window's features into
log-scale levels, compares them with the baseline of the current hour of
the week (``sys.week_hour`` on the image, 0 = Monday 00:00 local; the
shell sets it from the wall clock and the model falls back to the
all-week envelope while ``sys.clock_trusted`` is 0) and scores the excess.
Between closes it returns the last window's score.  ``top`` is the index
in FEATURES of the feature that contributed most (-1 when the score is 0);
``explain()`` lists every contributing feature.
"""

import binascii

FORMAT = 1
FEATURES = ("vib", "peak", "door", "tilt", "lift", "current", "volt", "temp", "power")
N_FEATURES = 9
# Features that are evidence of loss: current that stopped, pack voltage gone, the supply fallen.
LOSS_FEATURES = ("current", "volt", "power")
HOURS = 168
SCORE_MAX = 30000
TEMP_HISTORY = 60          # windows over which a temperature rise is measured (5 min)
# A 24 V supply's reading wanders by tens of millivolts (ripple, ADC noise); a
# cut or a failing supply drops it by volts.  Drops below this are noise.
SUPPLY_NOISE_MV = 200
# An impact shakes the whole sensor: its RMS rises with its peak (crest
# factors of knocks, grinders, cranes and trucks stay below 12).  A peak
# register far above what the RMS allows is a glitch of one reading, so the
# peak counts at most this many times the window's highest RMS.
CREST_MAX = 16

_MASK = (1 << 30) - 1      # the core's tick period (docs/trace.md)
_HALF = 1 << 29

# Signals the features read, by short name (device prefixes are found in
# the index).  Missing ones are simply not used.  An I/O module is any device
# with one of the I/O class's own signals (docs/signals.md), whatever the site
# named it (io, door, io1 and io2: docs/config.md); a camera's tamper is not one.
_IO_SHORTS = ("door_open", "door_bolt", "vib_rms_mg", "vib_peak_mg", "tilt_mdeg", "accel_z_mg",
              "supply_mv", "temp_dc")
_DOORS = ("door_open", "door_bolt", "tamper")
_BATTERY_SUFFIXES = (".current_ma", ".pack_mv", ".temp_max_dc")


# floor(log2(y)) of each byte y (0 for 0 and 1): qlog finds the exponent a
# byte at a time, not a bit at a time (it runs for every feature at every close).
_LOG2 = bytearray(256)
for _y in range(2, 256):
    _LOG2[_y] = _LOG2[_y >> 1] + 1


def qlog(x):
    """16 * log2(x), piecewise linear between powers of two, 0 for x < 2,
    capped at 255.  Integer-only, so identical everywhere."""
    if x < 2:
        return 0
    n = 0
    y = x
    while y > 255:
        y >>= 8
        n += 8
    n += _LOG2[y]
    q = 16 * n + (((x << 4) >> n) & 15)
    return q if q < 256 else 255


class ModelTables:
    """The model file's content, checked; shared by every cabinet's instance."""

    def __init__(self, doc):
        if not isinstance(doc, dict) or doc.get("cabguard_model") != FORMAT:
            raise ValueError("not a cabguard anomaly model (want \"cabguard_model\": {})".format(FORMAT))
        self.window_ms = _int_in(doc, "window_ms", 100, 600000)
        self.margin = _int_in(doc, "margin", 0, 255)
        self.threshold = _int_in(doc, "threshold", 1, SCORE_MAX)
        self.pre = _ints(doc, "pre", N_FEATURES, 0, 24)
        self.weight = _ints(doc, "weight", N_FEATURES, 0, 64)
        self.base = bytes(_ints(doc, "base", N_FEATURES, 0, 255))
        hi = doc.get("hi")
        try:
            self.hi = binascii.unhexlify(hi)
        except (TypeError, ValueError):
            raise ValueError("model key 'hi' must be a hex string of {} bytes".format(HOURS * N_FEATURES))
        if len(self.hi) != HOURS * N_FEATURES:
            raise ValueError("model key 'hi' must hold {} bytes, has {}".format(HOURS * N_FEATURES, len(self.hi)))
        adapt = doc.get("adapt", {})
        if not isinstance(adapt, dict):
            raise ValueError("model key 'adapt' must be an object")
        self.adapt_cap = _int_in(adapt, "cap", 0, 64)
        self.adapt_windows = _int_in(adapt, "step_windows", 1, 1 << 20)
        self.holdoff_windows = _int_in(adapt, "holdoff_windows", 0, 1 << 20)
        # The loss features whose points let the model's rule alarm (docs/anomaly.md,
        # "Earning its place"); default all of them.  Only losses: never a gain.
        alarm_on = doc.get("alarm_on", list(LOSS_FEATURES))
        if not isinstance(alarm_on, list) or any(f not in LOSS_FEATURES for f in alarm_on):
            raise ValueError("model key 'alarm_on' must be a list of loss features ({}), got {!r}".format(
                ", ".join(LOSS_FEATURES), alarm_on))
        self.alarm_on = tuple(FEATURES.index(f) for f in alarm_on)

    def as_doc(self):
        """The model file's object as far as scoring reads it: the journal's
        catalog record carries it, so an incident replays with the model that ran."""
        return {"cabguard_model": FORMAT, "window_ms": self.window_ms, "margin": self.margin,
                "threshold": self.threshold, "pre": list(self.pre), "weight": list(self.weight),
                "base": list(self.base), "hi": binascii.hexlify(self.hi).decode(),
                "adapt": {"cap": self.adapt_cap, "step_windows": self.adapt_windows,
                          "holdoff_windows": self.holdoff_windows},
                "alarm_on": [FEATURES[f] for f in self.alarm_on]}


def _int_in(doc, key, lo, hi):
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise ValueError("model key '{}' must be a whole number from {} to {}, got {!r}".format(key, lo, hi, v))
    return v


def _ints(doc, key, n, lo, hi):
    v = doc.get(key)
    if not isinstance(v, list) or len(v) != n:
        raise ValueError("model key '{}' must be a list of {} whole numbers".format(key, n))
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool) or x < lo or x > hi:
            raise ValueError("model key '{}' holds {!r}: want whole numbers from {} to {}".format(key, x, lo, hi))
    return list(v)


class Features:
    """Window features from the image: fold every scan, close every window.

    ``index`` maps signal names to image indices (a catalog's ``index``).

    A value never read is unknown, not 0: a device's signals are folded only
    while its ``<dev>.online`` twin is 1, and its steps (door, current,
    pack voltage) and the temperature history start again when it comes
    back online, so neither its first reading nor a value it returns with
    is a step or a rise.

    Honest faults are not anomalies: a temperature counts once it held over
    two window closes (a one-poll spike does not), a supply drop once it is
    past SUPPLY_NOISE_MV, a vibration peak up to CREST_MAX times the RMS
    (a lone peak glitch with the RMS idle is no knock), and a silent device
    is left to the silence rules.
    """

    def __init__(self, index):
        def get(name):
            i = index.get(name)
            return -1 if i is None else i
        names = sorted(index)
        self.online = [index[n] for n in names if n.endswith(".online")]
        slot_of = {}   # "dev." -> its position in online
        for n in names:
            if n.endswith(".online"):
                slot_of[n[:-len("online")]] = len(slot_of)

        def slot(name):
            dot = name.find(".")
            return slot_of.get(name[:dot + 1], -1)
        ios = _io_prefixes(names)     # "io.", "door." ...: in name order, so deterministic
        self.ios = [slot(p) for p in ios]   # each module's device slot, -1 for none
        self.vibs = [get(p + "vib_rms_mg") for p in ios]
        self.peaks = [get(p + "vib_peak_mg") for p in ios]
        self.tilts = [get(p + "tilt_mdeg") for p in ios]
        self.lifts = [get(p + "accel_z_mg") for p in ios]
        self.supplies = [get(p + "supply_mv") for p in ios]
        self.io_temps = [get(p + "temp_dc") for p in ios]
        doors = [(get(p + n), slot(p)) for p in ios for n in _DOORS if get(p + n) >= 0]
        self.doors = [i for i, _d in doors]
        current_names = [n for n in names if n.endswith(_BATTERY_SUFFIXES[0])]
        pack_names = [n for n in names if n.endswith(_BATTERY_SUFFIXES[1])]
        temp_names = [n for n in names if n.endswith(_BATTERY_SUFFIXES[2])]
        self.currents = [index[n] for n in current_names]
        self.packs = [index[n] for n in pack_names]
        self.temps = [index[n] for n in temp_names]
        # The device slot (position in ``online``) of each signal, -1 for none.
        self.door_slots = [d for _i, d in doors]
        self.cur_slots = [slot(n) for n in current_names]
        self.pack_slots = [slot(n) for n in pack_names]
        self.temp_slots = [slot(n) for n in temp_names]
        n_dev = len(self.online)
        self.on = [0] * n_dev        # online at this scan
        self.fresh = [0] * n_dev     # came (back) online at this scan
        self.steady = 0              # the last scan found every device on, none fresh (``update``)
        self.door_prev = [0] * len(self.doors)
        self.cur_prev = [0] * len(self.currents)
        self.pack_prev = [0] * len(self.packs)
        self.temp_ring = [0] * TEMP_HISTORY
        self.ring_at = 0
        self.temp_restart = 1        # the temperature history starts at the next close
        self.temp_last = 0           # the hottest reading at the last close
        self.supply_prev = [0] * len(ios)   # per module: its supply at the last close
        self.acc = [0] * N_FEATURES
        self.supply_min = [0] * len(ios)    # and its lowest since
        # Per module, what ``update`` folds: (vib, peak, tilt, lift, supply, slot, k).
        self.io_points = tuple(zip(self.vibs, self.peaks, self.tilts, self.lifts, self.supplies, self.ios,
                                   range(len(ios))))
        # What ``_temp`` reads: (signal, device slot) of each temperature, the modules' first.
        self.temp_points = tuple([(i, d) for i, d in zip(self.io_temps, self.ios) if i >= 0]
                                 + list(zip(self.temps, self.temp_slots)))
        self._quiet()

    def _quiet(self):
        """``quiet``: (signal, reading) of every online twin (1) and of every
        signal ``_steps`` reads (its previous reading).  A scan that finds
        all of them as they were, after a steady one, has every device
        answering, none back, and no step (most scans): ``update`` finds
        that in one pass, without ``_presence`` or ``_steps``.  Made again
        whenever ``_steps`` or ``restore`` moved a previous reading."""
        self.quiet = tuple([(i, 1) for i in self.online]
                           + list(zip(self.doors, self.door_prev)) + list(zip(self.currents, self.cur_prev))
                           + list(zip(self.packs, self.pack_prev)))

    def state(self):
        """What ``update`` and ``close`` go on from: the open window, the last
        readings, the temperature history (``fresh`` is recomputed every scan)."""
        return {"on": list(self.on), "doors": list(self.door_prev), "cur": list(self.cur_prev),
                "pack": list(self.pack_prev), "temps": list(self.temp_ring),
                "temp": [self.ring_at, self.temp_restart, self.temp_last],
                "supply": _pairs(self.supply_prev, self.supply_min), "acc": list(self.acc)}

    def restore(self, snap):
        """Start from ``state()`` of the same catalog; ValueError names what does not fit."""
        lists = (("on", self.on), ("doors", self.door_prev), ("cur", self.cur_prev),
                 ("pack", self.pack_prev), ("temps", self.temp_ring), ("acc", self.acc))
        for key, have in lists:
            _fits(snap, key, len(have))
        _fits(snap, "temp", 3)
        _fits(snap, "supply", 2 * len(self.ios))
        self.on = list(snap["on"])
        self.steady = 0              # ``fresh`` is not in the state: the next scan works both out
        self.door_prev = list(snap["doors"])
        self.cur_prev = list(snap["cur"])
        self.pack_prev = list(snap["pack"])
        self._quiet()
        self.temp_ring = list(snap["temps"])
        self.ring_at, self.temp_restart, self.temp_last = snap["temp"]
        self.supply_prev = list(snap["supply"][0::2])
        self.supply_min = list(snap["supply"][1::2])
        self.acc = list(snap["acc"])

    def update(self, image):
        """Fold one scan's image into the open window."""
        acc = self.acc
        on = self.on
        # ``steady``: every device answered at the last scan and none came
        # back (the common case): ``on`` is all 1, ``fresh`` all 0.
        steady = self.steady
        moved = 1
        if steady:
            for i, v in self.quiet:
                if image[i] != v:
                    break
            else:
                moved = 0           # every device answers, no step
            if moved:
                for i in self.online:
                    if not image[i]:
                        steady = 0
                        break
        if not steady:
            steady = self._presence(image)
            self.steady = steady
        supply_min = self.supply_min
        for vib, peak, tilt, lift, supply, d, k in self.io_points:
            if d < 0 or on[d]:
                if vib >= 0 and image[vib] > acc[0]:
                    acc[0] = image[vib]
                if peak >= 0 and image[peak] > acc[1]:
                    acc[1] = image[peak]
                if tilt >= 0:
                    v = abs(image[tilt])
                    if v > acc[3]:
                        acc[3] = v
                if lift >= 0:
                    v = abs(image[lift])
                    if v > acc[4]:
                        acc[4] = v
                if supply >= 0 and image[supply] < supply_min[k]:
                    supply_min[k] = image[supply]
        if not moved:
            return
        fresh = self.fresh
        if self.doors:    # a door of a module offline is skipped (_steps)
            acc[2] += _steps(image, self.doors, self.door_prev, self.door_slots, on, fresh, _ANY)[1] * 64
        # Losses only: current that stops flowing, pack voltage that goes
        # (modules pulled).  Current starting, modules arriving are no theft.
        if self.currents:
            d = _steps(image, self.currents, self.cur_prev, self.cur_slots, on, fresh, _FALL_ABS)[0]
            if d > acc[5]:
                acc[5] = d
        if self.packs:
            d = _steps(image, self.packs, self.pack_prev, self.pack_slots, on, fresh, _FALL)[0]
            if d > acc[6]:
                acc[6] = d
        self._quiet()

    def _presence(self, image):
        """Each device's ``on`` and ``fresh`` from its online twin; 1 if every
        device answers and none came back at this scan.  A module's supply
        drop is measured from its first reading back."""
        on = self.on
        fresh = self.fresh
        steady = 1
        k = 0
        for i in self.online:
            if not image[i]:
                on[k] = fresh[k] = 0
                steady = 0
            elif not on[k]:
                on[k] = fresh[k] = 1
                self.temp_restart = 1
                steady = 0
            else:
                fresh[k] = 0
            k += 1
        for _vib, _peak, _tilt, _lift, supply, d, k in self.io_points:
            if supply >= 0 and d >= 0 and fresh[d]:
                self.supply_prev[k] = self.supply_min[k] = image[supply]
        return steady

    def _temp(self, image):
        """The highest temperature of the devices online, or None."""
        t = None
        on = self.on
        for i, d in self.temp_points:
            if (d < 0 or on[d]) and (t is None or image[i] > t):
                t = image[i]
        return t

    def close(self, image):
        """The finished window's raw features; opens the next window."""
        acc = self.acc
        t = self._temp(image)
        if t is not None:
            if self.temp_restart:
                # A device came (back) online: its temperature is no rise.
                for k in range(TEMP_HISTORY):
                    self.temp_ring[k] = t
                self.temp_restart = 0
                self.temp_last = t
            # The hottest reading that held over two window closes: a single
            # spike of one poll is not a rise, a pack warming up keeps both.
            held = t if t < self.temp_last else self.temp_last
            self.temp_last = t
            low = min(held, min(self.temp_ring))
            self.temp_ring[self.ring_at] = held
            self.ring_at = (self.ring_at + 1) % TEMP_HISTORY
            acc[7] = held - low
        # Evidence of lost power only: a device that falls silent is the silence
        # rules' (sensor_silent, bms_silent, *_offline), supply noise is nothing.
        # Of several modules, the one whose supply fell furthest.
        power = 0
        on, supply_prev, supply_min = self.on, self.supply_prev, self.supply_min
        for _vib, _peak, _tilt, _lift, i, d, k in self.io_points:
            drop = supply_prev[k] - supply_min[k] - SUPPLY_NOISE_MV
            if drop > power:
                power = drop
            if i >= 0 and (d < 0 or on[d]):
                supply_prev[k] = supply_min[k] = image[i]
        acc[8] = power >> 4
        if acc[1] > acc[0] * CREST_MAX:
            acc[1] = acc[0] * CREST_MAX
        self.acc = [0] * N_FEATURES
        return acc


def _io_prefixes(names):
    """The I/O modules' prefixes ("io.") among sorted ``names``: devices with an I/O signal."""
    out = []
    for n in names:
        dot = n.rfind(".")
        if n[dot + 1:] in _IO_SHORTS and n[:dot + 1] not in out:
            out.append(n[:dot + 1])
    return out


def _pairs(a, b):
    """[a0, b0, a1, b1, ...]"""
    out = []
    for k in range(len(a)):
        out.append(a[k])
        out.append(b[k])
    return out


_ANY, _FALL, _FALL_ABS = 0, 1, 2    # what a step counts: any change, a fall, a fall of the magnitude


def _steps(image, idx, prev, slots, on, fresh, kind):
    """(largest step, number of signals that changed) of ``idx`` since
    their previous readings, which become the current ones.  ``kind``: a
    step is any change (``_ANY``), a fall of the value (``_FALL``) or of its
    magnitude (``_FALL_ABS``); rises count as no step.  A signal of a
    device offline is skipped; at the device's first scan back its reading
    becomes the previous one, with no step."""
    best = 0
    changed = 0
    k = 0
    for i in idx:
        d = slots[k]
        if d >= 0 and (fresh[d] or not on[d]):
            if fresh[d]:
                prev[k] = image[i]
            k += 1
            continue
        v = image[i]
        d = v - prev[k]
        if d:
            changed += 1
            if kind == _FALL:
                d = -d
            elif kind == _FALL_ABS:
                d = abs(prev[k]) - abs(v)
            elif d < 0:
                d = -d
            prev[k] = v
            if d > best:
                best = d
        k += 1
    return best, changed


def _fits(snap, key, n):
    """``snap[key]`` is a list of ``n`` whole numbers, else ValueError naming it."""
    v = snap.get(key) if isinstance(snap, dict) else None
    if not isinstance(v, list) or len(v) != n:
        raise ValueError("model state '{}' must be a list of {} whole numbers".format(key, n))
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool):
            raise ValueError("model state '{}' holds {!r}: want whole numbers".format(key, x))


class AnomalyModel:
    """One cabinet's scorer.  ``adapt_modes``: the core's mode numbers in
    which the baseline may adapt (the caller passes DISARMED)."""

    def __init__(self, tables, index, adapt_modes=(0,)):
        self.t = tables
        self.features = Features(index)
        self.hour_idx = index.get("sys.week_hour", -1)
        self.trusted_idx = index.get("sys.clock_trusted", -1)
        self.adapt_modes = tuple(adapt_modes)
        self.hi = bytearray(tables.hi)         # this cabinet's adapted baseline
        self.moved = set()                     # its offsets that adaptation moved (state() lists them)
        self.up = [0] * N_FEATURES
        self.down = [0] * N_FEATURES
        self.holdoff = tables.holdoff_windows  # no adaptation until it has watched a while
        self.window_end = -1
        self.score = 0
        self.top = -1
        self.contrib = [0] * N_FEATURES
        self.levels = [0] * N_FEATURES
        self.windows = 0

    def state(self):
        """What ``scan`` needs to go on from here as it would have, plain integers
        and lists (an evidence window starts with it, docs/trace.md "start"):
        the baseline as it adapted (``[offset, level]`` of each byte that moved
        from the model file's), the adaptation counters, the open window's
        features and the last window's score.  Compact: the model file is
        in the journal's catalog record, not here."""
        return {"hi": [[k, self.hi[k]] for k in sorted(self.moved)],
                "up": list(self.up), "down": list(self.down), "holdoff": self.holdoff,
                "end": self.window_end, "score": [self.score, self.top], "contrib": list(self.contrib),
                "features": self.features.state()}

    def restore(self, snap):
        """Start from ``state()`` of a model with the same tables and catalog;
        ValueError names what does not fit."""
        if not isinstance(snap, dict):
            raise ValueError("model state must be an object")
        for key in ("up", "down", "contrib"):
            _fits(snap, key, N_FEATURES)
        _fits(snap, "score", 2)
        moved = snap.get("hi")
        if not isinstance(moved, list):
            raise ValueError("model state 'hi' must be a list of [offset, level]")
        for m in moved:
            if not isinstance(m, list) or len(m) != 2 or not 0 <= m[0] < len(self.hi) or not 0 <= m[1] < 256:
                raise ValueError("model state 'hi' holds {!r}: want [offset below {}, level 0-255]".format(
                    m, len(self.hi)))
        for key in ("holdoff", "end"):
            if not isinstance(snap.get(key), int):
                raise ValueError("model state '{}' must be a whole number".format(key))
        self.features.restore(snap.get("features"))
        self.hi = bytearray(self.t.hi)
        self.moved = set()
        for k, level in moved:
            self.hi[k] = level
            self.moved.add(k)
        self.up = list(snap["up"])
        self.down = list(snap["down"])
        self.contrib = list(snap["contrib"])
        self.holdoff = snap["holdoff"]
        self.window_end = snap["end"]
        self.score, self.top = snap["score"]

    def scan(self, image, now, mode):
        """Fold this scan in; at a window's end, score it.  -> (score, top)."""
        self.features.update(image)
        if self.window_end < 0:
            self.window_end = (now + self.t.window_ms) & _MASK
            return self.score, self.top
        late = ((now - self.window_end + _HALF) & _MASK) - _HALF
        if late >= 0:
            step = self.t.window_ms
            self.window_end = (now + step - (late if late < step else 0)) & _MASK
            self._close(image, mode)
        return self.score, self.top

    def _row(self, image):
        """Offset of this hour's row in the baseline, or -1 for the all-week one."""
        if self.trusted_idx >= 0 and not image[self.trusted_idx]:
            return -1
        h = image[self.hour_idx] if self.hour_idx >= 0 else -1
        return h * N_FEATURES if 0 <= h < HOURS else -1

    def _close(self, image, mode):
        t = self.t
        raw = self.features.close(image)
        row = self._row(image)
        hi = self.hi
        base = t.base
        levels = self.levels
        contrib = self.contrib
        pre = t.pre
        weight = t.weight
        margin = t.margin
        score = 0
        top = -1
        best = 0
        for f in range(N_FEATURES):
            q = raw[f] >> pre[f]
            if q < 2:
                # An idle feature (most of them): level 0, so no points
                # (reference and margin are never negative), without qlog.
                levels[f] = 0
                contrib[f] = 0
                continue
            q = qlog(q)
            levels[f] = q
            ref = hi[row + f] if row >= 0 else base[f]
            ex = q - ref - margin
            c = ex * weight[f] if ex > 0 else 0
            contrib[f] = c
            score += c
            if c > best:
                best = c
                top = f
        self.score = score if score < SCORE_MAX else SCORE_MAX
        self.top = top
        self.windows += 1
        self._adapt(row, mode)

    def _adapt(self, row, mode):
        """Guarded, bounded, slow: see docs/anomaly.md "Adaptation"."""
        t = self.t
        if self.score * 2 >= t.threshold:
            self.holdoff = t.holdoff_windows
            return
        if self.holdoff > 0:
            self.holdoff -= 1
            return
        if row < 0 or mode not in self.adapt_modes or self.score > 0:
            return
        hi = self.hi
        ref = t.hi
        cap = t.adapt_cap
        levels = self.levels
        for f in range(N_FEATURES):
            q = levels[f]
            cur = hi[row + f]
            if q > cur and cur < ref[row + f] + cap and cur < 255:
                self.up[f] += 1
                if self.up[f] >= t.adapt_windows:
                    self.up[f] = 0
                    hi[row + f] = cur + 1
                    self.moved.add(row + f)
            elif q + 16 < cur and cur > ref[row + f] - cap and cur > 0:
                self.down[f] += 1
                if self.down[f] >= t.adapt_windows * 4:
                    self.down[f] = 0
                    hi[row + f] = cur - 1
                    self.moved.add(row + f)

    def explain(self):
        """The last window's contributing features, largest first: [(name, points)]."""
        out = []
        for f in range(N_FEATURES):
            if self.contrib[f] > 0:
                out.append((self.contrib[f], f))
        out.sort()
        out.reverse()
        return [(FEATURES[f], c) for c, f in out]
