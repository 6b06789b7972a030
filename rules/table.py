"""Compiled rule tables and their evaluator: a small stack machine (portable).

Theory of operation
-------------------
The host compiler (rules/compiler.py) turns rule files into a *table*: plain
data (lists, integers, text) that is CBOR-encoded and MAC'd for the gateway,
or carried as JSON in a trace header.  This module holds everything that
the table format fixes -- severities, action bits, mode codes, opcodes --
and the evaluator that runs a table once per scan.

Each rule is one list of integers: postfix code over the input image.
Running it leaves one value on the stack (the ``when`` condition, with any
``for`` duration already folded in as a HELD op), or two when the rule has
a ``clear_when`` (hysteresis).  All of a rule's code runs on every scan
(``and``/``or`` do not short-circuit), so the state of every timer, edge
detector, counter and rate stays current.  The code is straight-line; the
only loop is a count() window's expiry, bounded by COUNT_CAP: time per scan
is bounded by the table's size.

The state of the stateful ops lives in one flat integer list ``mem`` that
the evaluator owns (offsets assigned by the compiler); the evaluator is
part of the core's state, so ``step()`` stays a pure function of its
arguments.  Times are wrapping ticks: the evaluator only takes differences,
through the ``ticks_diff`` function the host injects.

A rule is *raised* when its condition becomes true and *cleared* when it
becomes false again, or -- with ``clear_when`` -- when the clear condition
is true and the condition is false, or -- when latched -- when the condition
is false while the cabinet is disarmed or in a maintenance visit.  ``scan()`` reports only the
changes, as ``(rule index, severity, action bits, 1 raised / 0 cleared)``.
"""

import binascii

from rules.table_errors import TableError

FORMAT = 1

# Severities, lowest first.  info and warning are recorded; alarm sounds
# siren and strobe; critical also locks the battery output.
INFO = 0
WARNING = 1
ALARM = 2
CRITICAL = 3
SEVERITY_NAMES = ("info", "warning", "alarm", "critical")

# Extra actions a rule may ask for on top of what its severity implies.
ACT_LOCK = 1      # lock the battery output
ACT_SILENT = 2    # no local sound or light (upstream only)
ACT_FAULT = 4     # put the gateway into FAULT
ACT_UPLINK = 8    # send upstream at once, ahead of older telemetry
ACTION_BITS = (("lock", ACT_LOCK), ("silent", ACT_SILENT), ("fault", ACT_FAULT), ("uplink", ACT_UPLINK))


def severity_code(name):
    """The severity number for its name, or -1."""
    for i in range(len(SEVERITY_NAMES)):
        if SEVERITY_NAMES[i] == name:
            return i
    return -1


# Mode codes of table format 1 (the core's modes, in its order).  mode()
# compiles to a bit mask over them; bit GUARD stands for "armed": set while
# the cabinet is ARMED or in its ENTRY delay, and kept through an ALARM or
# FAULT that started from there; DISARMED, ARMING and MAINTENANCE end it.
MODES = ("disarmed", "arming", "armed", "entry", "maintenance", "alarm", "fault")
GUARD = 1 << 7
_GUARD_ON = (2, 3)
_GUARD_OFF = (0, 1, 4)
# A latched rule clears only once its condition is false while the cabinet
# is disarmed (0) or in a maintenance visit (4): scan() tests these inline.

# Rule flags.
FLAG_CLEAR_WHEN = 1
FLAG_LATCH = 2

# Opcodes and their operands (after the opcode, in the code list).
OP_SIG = 1        # idx            push image[idx]
OP_CONST = 2      # k              push k
OP_ADD = 3
OP_SUB = 4
OP_MUL = 5
OP_DIV = 6        # floor division; by zero gives 0
OP_NEG = 7
OP_ABS = 8
OP_MIN = 9
OP_MAX = 10
OP_LT = 11
OP_LE = 12
OP_GT = 13
OP_GE = 14
OP_EQ = 15
OP_NE = 16
OP_AND = 17
OP_OR = 18
OP_NOT = 19
OP_BIT = 20       # n              (x >> n) & 1
OP_MODE = 21      # mask           1 if the mode's bit (or GUARD) is in mask
OP_HELD = 22      # off ms         x true continuously for >= ms   mem: since, running
OP_WITHIN = 23    # off ms         x true at some scan in the last ms   mem: last, seen, now
OP_COUNT = 24     # off ms         rises of x in the last ms (<= COUNT_CAP)   mem: prev (as ROSE), n, tail, ring
OP_RATE = 25      # off ms         x now minus x about ms ago (0 until then)   mem: last, samples, pos, ring
OP_CHANGED = 26   # off            x differs from the previous scan   mem: prev, known
OP_ROSE = 27      # off            x became true   mem: prev (0 none, 1 false, 2 true)
OP_FELL = 28      # off            x became false   mem: prev (0 none, 1 false, 2 true)
# Fused "signal <op> constant" (the commonest term): idx k.
OP_SIG_GT_K = 30
OP_SIG_GE_K = 31
OP_SIG_LT_K = 32
OP_SIG_LE_K = 33
OP_SIG_EQ_K = 34
OP_SIG_NE_K = 35
# Fused boolean signal ops: idx (SIG_BIT: idx n).
OP_AND_SIG = 36   # idx            x and image[idx]
OP_OR_SIG = 37    # idx            x or image[idx]
OP_NOT_SIG = 38   # idx            push not image[idx]
OP_SIG_BIT = 39   # idx n          push (image[idx] >> n) & 1
# Fused "x <op> constant" for a computed x (a rate, an abs, a sum): k.
OP_GT_K = 40
OP_GE_K = 41
OP_LT_K = 42
OP_LE_K = 43
OP_EQ_K = 44
OP_NE_K = 45

# Operand count of every opcode: the table's code is checked against it.
OPERANDS = {
    OP_SIG: 1, OP_CONST: 1, OP_ADD: 0, OP_SUB: 0, OP_MUL: 0, OP_DIV: 0,
    OP_NEG: 0, OP_ABS: 0, OP_MIN: 0, OP_MAX: 0, OP_LT: 0, OP_LE: 0, OP_GT: 0,
    OP_GE: 0, OP_EQ: 0, OP_NE: 0, OP_AND: 0, OP_OR: 0, OP_NOT: 0, OP_BIT: 1,
    OP_MODE: 1, OP_HELD: 2, OP_WITHIN: 2, OP_COUNT: 2, OP_RATE: 2,
    OP_CHANGED: 1, OP_ROSE: 1, OP_FELL: 1, OP_SIG_GT_K: 2, OP_SIG_GE_K: 2,
    OP_SIG_LT_K: 2, OP_SIG_LE_K: 2, OP_SIG_EQ_K: 2, OP_SIG_NE_K: 2,
    OP_AND_SIG: 1, OP_OR_SIG: 1, OP_NOT_SIG: 1, OP_SIG_BIT: 2,
    OP_GT_K: 1, OP_GE_K: 1, OP_LT_K: 1, OP_LE_K: 1, OP_EQ_K: 1, OP_NE_K: 1,
}
# Opcodes whose first operand is a signal index.
_SIGNAL_OPS = (OP_SIG, OP_SIG_GT_K, OP_SIG_GE_K, OP_SIG_LT_K, OP_SIG_LE_K, OP_SIG_EQ_K,
               OP_SIG_NE_K, OP_AND_SIG, OP_OR_SIG, OP_NOT_SIG, OP_SIG_BIT)
# Stack effect (pushed minus popped) of every opcode.
_POP2 = (OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MIN, OP_MAX, OP_LT, OP_LE, OP_GT,
         OP_GE, OP_EQ, OP_NE, OP_AND, OP_OR)
_PUSH = (OP_SIG, OP_CONST, OP_MODE, OP_SIG_GT_K, OP_SIG_GE_K, OP_SIG_LT_K,
         OP_SIG_LE_K, OP_SIG_EQ_K, OP_SIG_NE_K, OP_NOT_SIG, OP_SIG_BIT)

# The longest window or duration: the longest tick difference the core trusts
# (controller.core.ticks.MAX_SPAN, about 6.2 days).
MAX_WINDOW_MS = (1 << 29) - 1
TICK_MASK = (1 << 30) - 1   # ticks wrap at 2**30 ms, as MicroPython's do
TICK_HALF = 1 << 29
COUNT_CAP = 16       # count() remembers at most this many rises
RATE_SAMPLES = 8     # rate() samples its signal every window // RATE_SAMPLES ms
# Words of mem each stateful op uses.  All zero is an op's fresh state: no
# history (how a scan starts, and what a guard resets it to, below).
MEM_WORDS = {
    OP_HELD: 2, OP_WITHIN: 3, OP_COUNT: 3 + COUNT_CAP, OP_RATE: 3 + RATE_SAMPLES + 1,
    OP_CHANGED: 2, OP_ROSE: 1, OP_FELL: 1,
}
# Guards (table key "guards"): a stateful op whose input reads a device's
# signals takes its samples only while that device is online (its
# ``<dev>.online`` twins are all 1).  Otherwise the values on the image are
# unknown -- never read, or the last reading of a silent device -- so the op
# is reset to its fresh state and gives 0 (false): its history starts again
# at the first scan the device is back.

_NONE = ()


def _bytes(v, what):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        try:
            return binascii.unhexlify(v)
        except ValueError:
            pass
    raise TableError("table field '{}' must be bytes or hex text".format(what))


def _check_code(code, where, image_size, mem):
    """Walk ``code`` once: operands present, indices in range, stack sane.
    Returns (final stack depth, 1 if it reads the mode)."""
    if not isinstance(code, list):
        raise TableError("{}: code must be a list of integers".format(where))
    pc = 0
    depth = 0
    uses_mode = 0
    n = len(code)
    while pc < n:
        op = code[pc]
        if op not in OPERANDS:
            raise TableError("{}: unknown opcode {} at {}".format(where, op, pc))
        k = OPERANDS[op]
        if pc + k >= n:
            raise TableError("{}: opcode {} at {} lacks its operands".format(where, op, pc))
        for j in range(1, k + 1):
            if not isinstance(code[pc + j], int):
                raise TableError("{}: operand at {} is not an integer".format(where, pc + j))
        if op in _SIGNAL_OPS:
            if not 0 <= code[pc + 1] < image_size:
                raise TableError("{}: signal index {} outside the image".format(where, code[pc + 1]))
        if op == OP_MODE:
            uses_mode = 1
        if op in MEM_WORDS:
            if not 0 <= code[pc + 1] <= mem - MEM_WORDS[op]:
                raise TableError("{}: state offset {} outside mem".format(where, code[pc + 1]))
            if op in (OP_HELD, OP_WITHIN, OP_COUNT, OP_RATE) and code[pc + 2] < 1:
                raise TableError("{}: window at {} must be > 0 ms".format(where, pc))
        if op in _PUSH:
            depth += 1
        elif op in _POP2:
            depth -= 1
        if depth < 1:
            raise TableError("{}: stack underflow at {}".format(where, pc))
        pc += k + 1
    return depth, uses_mode


# A *test* is how a rule may read a signal without needing its value: the
# result of (abs first, compare opcode, constant), the compare opcode being
# one of OP_GT_K .. OP_NE_K or OP_BIT (the constant is the bit number).
# Truthiness is the test (0, OP_NE_K, 0).
_TRUTH = (0, OP_NE_K, 0)


def _test_at(code, pc):
    """The test through which the signal read at ``pc`` is used, or None
    when the code uses its value (checked code: operands are present)."""
    op = code[pc]
    if OP_SIG_GT_K <= op <= OP_SIG_NE_K:
        return (0, op - OP_SIG_GT_K + OP_GT_K, code[pc + 2])
    if op == OP_SIG_BIT:
        return (0, OP_BIT, code[pc + 2])
    if op == OP_NOT_SIG or op == OP_AND_SIG or op == OP_OR_SIG:
        return _TRUTH
    # OP_SIG: a test when the next op, after an optional abs, is one.
    nxt = pc + 2
    absolute = 0
    if nxt < len(code) and code[nxt] == OP_ABS:
        absolute = 1
        nxt += 1
    if nxt + 1 < len(code) and (OP_GT_K <= code[nxt] <= OP_NE_K or code[nxt] == OP_BIT):
        return (absolute, code[nxt], code[nxt + 1])
    return None


def _reads(code):
    """How checked ``code`` reads each signal: {index: [test, ...]}, or
    {index: None} when it needs the signal's value."""
    reads = {}
    pc = 0
    n = len(code)
    while pc < n:
        op = code[pc]
        if op in _SIGNAL_OPS:
            i = code[pc + 1]
            test = _test_at(code, pc)
            if test is None:
                reads[i] = None
            elif i not in reads:
                reads[i] = [test]
            elif reads[i] is not None:
                reads[i].append(test)
        pc += OPERANDS[op] + 1
    return reads


def read_signals(code):
    """The signal indices checked ``code`` reads, in order."""
    return sorted(_reads(code))


def _guard_twins(code, guards):
    """The online twins that guard the stateful ops of checked ``code``."""
    twins = {}
    pc = 0
    n = len(code)
    while pc < n:
        op = code[pc]
        if op in MEM_WORDS and guards[code[pc + 1]] is not None:
            for g in guards[code[pc + 1]]:
                twins[g] = 1
        pc += OPERANDS[op] + 1
    return twins


def _known(image, guard):
    """1 if every device of ``guard`` (its online twins) is online."""
    for g in guard:
        if not image[g]:
            return 0
    return 1


def _signal_rates(code):
    """The rate() ops of checked ``code`` whose input is a plain signal:
    [(mem offset, window ms, signal index)]."""
    out = []
    pc = 0
    prev = -1
    n = len(code)
    while pc < n:
        op = code[pc]
        if op == OP_RATE and prev >= 0 and code[prev] == OP_SIG:
            out.append((code[pc + 1], code[pc + 2], code[prev + 1]))
        prev = pc
        pc += OPERANDS[op] + 1
    return out


def _rate_step(ms):
    """The sampling period of a rate() over ``ms``."""
    step = ms // RATE_SAMPLES
    return step if step > 0 else 1


def _append(lists, key, item):
    if key not in lists:
        lists[key] = []
    lists[key].append(item)


def _passes(test, v):
    """The result of ``test`` on the value ``v`` (as the rule's code computes it)."""
    absolute, op, k = test
    if absolute and v < 0:
        v = -v
    if op == OP_GT_K:
        return v > k
    if op == OP_GE_K:
        return v >= k
    if op == OP_LT_K:
        return v < k
    if op == OP_LE_K:
        return v <= k
    if op == OP_EQ_K:
        return v == k
    if op == OP_NE_K:
        return v != k
    return (v >> k) & 1


def _tests_moved(tests, old, new):
    """True if any of ``tests`` gives another result for ``new`` than for ``old``."""
    for test in tests:
        if _passes(test, old) != _passes(test, new):
            return True
    return False


class Table:
    """A checked table: parallel lists, one entry per rule.

    ``data`` is the decoded payload (docs/rules.md, "Table format"), from
    CBOR or from JSON (where the byte strings are hex text).
    """

    def __init__(self, data, image_size):
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TableError("not a rule table of format {}".format(FORMAT))
        self.catalog = _bytes(data.get("catalog"), "catalog")
        self.source = _bytes(data.get("source"), "source")
        mem = data.get("mem", 0)
        if not isinstance(mem, int) or mem < 0:
            raise TableError("table field 'mem' must be a whole number")
        self.mem = mem
        self.ids = []
        self.severities = []
        self.actions = []
        self.flags = []
        self.codes = []
        rules = data.get("rules")
        if not isinstance(rules, list):
            raise TableError("table field 'rules' must be a list")
        self.image_size = image_size
        self.guards = _guards(data.get("guards", []), mem, image_size)
        readers = {}
        tested = {}
        mode_rules = []
        samplers = []
        for r in range(len(rules)):
            uses_mode = self._add(rules[r], r, image_size)
            reads = _reads(self.codes[r])
            # A rule runs when a guard of one of its ops goes on or off line.
            for g in _guard_twins(self.codes[r], self.guards):
                if g not in reads:
                    reads[g] = [_TRUTH]
                elif reads[g] is not None:
                    reads[g].append(_TRUTH)
            for i in reads:
                if reads[i] is None:
                    _append(readers, i, r)
                else:
                    _append(tested, i, (r, tuple(reads[i])))
            if uses_mode or self.flags[r] & FLAG_LATCH:
                mode_rules.append(r)
            for o, ms, i in _signal_rates(self.codes[r]):
                # A plain signal is one device's: one twin guards it, or none.
                g = self.guards[o]
                samplers.append((r, o, _rate_step(ms), i, g[0] if g is not None else -1))
        self.size = len(self.ids)
        # For change-driven evaluation: the signals the rules read; for each,
        # the rules that need its value and the rules (with their tests) that
        # read it only through tests against constants; and the rules whose
        # value can change with the mode.
        self.readers = {}
        for i in readers:
            self.readers[i] = (tuple(readers[i]), tuple(tested.get(i, ())))
        for i in tested:
            if i not in readers:
                self.readers[i] = ((), tuple(tested[i]))
        self.watch = tuple(sorted(self.readers))
        self.mode_rules = tuple(mode_rules)
        # rate() of a signal: (rule, mem offset, sample step ms, signal, its
        # guard's online twin or -1).  The
        # evaluator takes their samples itself (Evaluator._sample_rates), so
        # such a rule need not run for a sample that leaves the rate's value.
        self.samplers = tuple(samplers)
        self.sampled = {}
        for sampler in samplers:
            self.sampled[sampler[1]] = 1

    def _add(self, rule, r, image_size):
        if not isinstance(rule, list) or len(rule) != 5:
            raise TableError("rule #{}: want [id, severity, actions, flags, code]".format(r))
        rid, sev, act, flags, code = rule
        where = "rule #{} ({})".format(r, rid)
        if not isinstance(rid, str) or not isinstance(sev, int) or not 0 <= sev < len(SEVERITY_NAMES):
            raise TableError("{}: bad id or severity".format(where))
        if not isinstance(act, int) or not isinstance(flags, int):
            raise TableError("{}: actions and flags must be integers".format(where))
        want = 2 if flags & FLAG_CLEAR_WHEN else 1
        depth, uses_mode = _check_code(code, where, image_size, self.mem)
        if depth != want:
            raise TableError("{}: code must leave {} value(s)".format(where, want))
        self.ids.append(rid)
        self.severities.append(sev)
        self.actions.append(act)
        self.flags.append(flags)
        self.codes.append(code)
        return uses_mode


def _guards(entries, mem, image_size):
    """The table's "guards" ``[[mem offset, online twin index, ...], ...]`` as
    a list over mem: the tuple of twins at an op's offset, else None."""
    if not isinstance(entries, list):
        raise TableError("table field 'guards' must be a list")
    guards = [None] * mem
    for entry in entries:
        if not isinstance(entry, list) or len(entry) < 2 or not _all_ints(entry):
            raise TableError("guard {!r}: want [mem offset, online twin index, ...]".format(entry))
        if not 0 <= entry[0] < mem:
            raise TableError("guard {!r}: state offset outside mem".format(entry))
        for i in entry[1:]:
            if not 0 <= i < image_size:
                raise TableError("guard {!r}: signal index {} outside the image".format(entry, i))
        guards[entry[0]] = tuple(entry[1:])
    return guards


def _all_ints(values):
    for v in values:
        if not isinstance(v, int):
            return False
    return True


class Evaluator:
    """Runs a Table every scan; holds every rule's state.

    ``ticks_diff(a, b)`` is the signed tick difference (controller.core.ticks.diff
    on the host, the same function under MicroPython).

    Evaluation is change-driven: a rule runs on a scan when a signal it reads
    changed (when it only tests the signal against constants -- ``x > k``,
    ``abs(x) > k``, a bit, truth -- when one of those tests changed its
    result), when the mode changed and it reads the mode (or is latched), or
    when its *wake* tick has come -- the earliest tick at which one of its
    timers, windows, counters, rates or edges can change by time alone (a
    rate() of a plain signal is sampled by the evaluator itself, and its
    rule runs when a sample changes the rate's value).  Any other rule
    would compute what it computed last time, so skipping it changes
    nothing.  ``every_scan`` runs every rule on every scan: the
    reference the tests hold the change-driven path to, and the bound on
    the time a scan can take.
    """

    def __init__(self, table, ticks_diff, every_scan=False):
        self.table = table
        self.diff = ticks_diff
        self.every_scan = every_scan
        self.mem = [0] * table.mem
        self.active = [0] * table.size
        self.wakes = {}      # rule index -> wake tick
        self.next_wake = -1  # the earliest of the wakes (-1: none), so a quiet scan skips them
        self.next_sample = -1  # the earliest sample of the table's samplers (-1: none)
        self.last = [0] * table.image_size
        self.last_mbit = -1
        self.stack = []
        self.guard = 0
        self.primed = 0
        self.prev_now = 0   # the previous scan's tick

    def _due(self, image, mbit, now):
        """The rules to run this scan, in index order (None: none)."""
        due = {}
        last = self.last
        readers = self.table.readers
        for i in self.table.watch:
            if image[i] != last[i]:
                old = last[i]
                v = last[i] = image[i]
                needs_value, tested = readers[i]
                for r in needs_value:
                    due[r] = 1
                # A rule that only tests the signal sees no change unless a test does.
                for r, tests in tested:
                    if _tests_moved(tests, old, v):
                        due[r] = 1
        if mbit != self.last_mbit:
            self.last_mbit = mbit
            for r in self.table.mode_rules:
                due[r] = 1
        diff = self.diff
        if self.next_wake >= 0 and diff(now, self.next_wake) >= 0:
            wakes = self.wakes
            for r in wakes:
                if diff(now, wakes[r]) >= 0:
                    due[r] = 1
        if self.next_sample >= 0 and diff(now, self.next_sample) >= 0:
            self._sample_rates(image, now, due)
        if not due:
            return None
        return sorted(due)

    def _sample_rates(self, image, now, due):
        """Take the samplers' samples that are due, as their rate() ops would
        when their rules ran this scan; a rule whose rate's value changes is
        due (its signal has not changed, or it is due already)."""
        m = self.mem
        first = -1
        # Tick differences inlined (as ticks.diff): this loop runs about every
        # other scan of `cabguard eval`, over every sampler.
        for r, o, step, i, g in self.table.samplers:
            if g >= 0 and not image[g]:
                continue   # its device is offline: no samples (its rule reset the ring)
            if ((now - m[o] + TICK_HALF) & TICK_MASK) - TICK_HALF >= step:
                v = image[i]
                before = self._rate_value(o, v)
                self._rate_sample(o, step, v, now)
                if self._rate_value(o, v) != before:
                    due[r] = 1
            nxt = (m[o] + step) & TICK_MASK
            if first < 0 or ((nxt - first + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                first = nxt
        self.next_sample = first

    def _earliest_wake(self):
        """The wake that comes first (ticks wrap: compare by their difference)."""
        diff = self.diff
        first = -1
        for w in self.wakes.values():
            if first < 0 or diff(w, first) < 0:
                first = w
        return first

    def scan(self, image, now, mode):
        """Evaluate the rules; an iterable of (index, severity, actions, raised)."""
        if mode in _GUARD_ON:
            self.guard = 1
        elif mode in _GUARD_OFF:
            self.guard = 0
        mbit = (1 << mode) | (GUARD if self.guard else 0)
        t = self.table
        if self.primed and not self.every_scan:
            due = self._due(image, mbit, now)
            if due is None:
                self.prev_now = now
                return _NONE
        else:
            self._due(image, mbit, now)
            due = range(t.size)
        codes = t.codes
        flags = t.flags
        active = self.active
        wakes = self.wakes
        s = self.stack
        push = s.append
        pop = s.pop
        mem = self.mem
        diff = self.diff
        sampled = t.sampled
        guards = t.guards
        changes = None
        for r in due:
            # The interpreter, inlined: a call per rule would cost a third.
            code = codes[r]
            pc = 0
            n = len(code)
            wake = -1   # the earliest tick at which time alone may change this rule
            while pc < n:
                op = code[pc]
                # Most frequent first (measured on the default packs over the noise
                # month of `cabguard eval`: rates and timers, seldom a test).
                if op == OP_SIG:
                    push(image[code[pc + 1]])
                    pc += 2
                elif op == OP_AND:
                    b = pop()
                    s[-1] = 1 if (s[-1] and b) else 0
                    pc += 1
                elif op == OP_HELD:
                    o = code[pc + 1]
                    g = guards[o]
                    if s[-1] and (g is None or _known(image, g)):
                        if not mem[o + 1]:
                            mem[o + 1] = 1
                            mem[o] = now
                        if diff(now, mem[o]) >= code[pc + 2]:
                            s[-1] = 1
                        else:
                            s[-1] = 0
                            due_at = (mem[o] + code[pc + 2]) & TICK_MASK
                            if wake < 0 or diff(due_at, wake) < 0:
                                wake = due_at
                    else:
                        mem[o + 1] = 0
                        s[-1] = 0
                    pc += 3
                elif op == OP_RATE:
                    o = code[pc + 1]
                    g = guards[o]
                    if g is None or _known(image, g):
                        due_at = self._rate(o, code[pc + 2], now)
                        if o in sampled:
                            # Back online, its first sample may be the rule's: the
                            # evaluator takes the next one.
                            if self.next_sample < 0 or diff(due_at, self.next_sample) < 0:
                                self.next_sample = due_at
                        elif wake < 0 or diff(due_at, wake) < 0:
                            wake = due_at
                    else:
                        mem[o + 1] = 0   # no samples: the ring starts again
                        s[-1] = 0
                    pc += 3
                elif op == OP_MODE:
                    push(1 if mbit & code[pc + 1] else 0)
                    pc += 2
                elif OP_GT_K <= op <= OP_NE_K:
                    v = s[-1]
                    k = code[pc + 1]
                    if op == OP_GT_K:
                        s[-1] = 1 if v > k else 0
                    elif op == OP_LT_K:
                        s[-1] = 1 if v < k else 0
                    elif op == OP_GE_K:
                        s[-1] = 1 if v >= k else 0
                    elif op == OP_LE_K:
                        s[-1] = 1 if v <= k else 0
                    elif op == OP_EQ_K:
                        s[-1] = 1 if v == k else 0
                    else:
                        s[-1] = 1 if v != k else 0
                    pc += 2
                elif op == OP_ABS:
                    if s[-1] < 0:
                        s[-1] = -s[-1]
                    pc += 1
                elif OP_SIG_GT_K <= op <= OP_SIG_NE_K:
                    v = image[code[pc + 1]]
                    k = code[pc + 2]
                    if op == OP_SIG_GT_K:
                        push(1 if v > k else 0)
                    elif op == OP_SIG_LT_K:
                        push(1 if v < k else 0)
                    elif op == OP_SIG_GE_K:
                        push(1 if v >= k else 0)
                    elif op == OP_SIG_LE_K:
                        push(1 if v <= k else 0)
                    elif op == OP_SIG_EQ_K:
                        push(1 if v == k else 0)
                    else:
                        push(1 if v != k else 0)
                    pc += 3
                elif op == OP_AND_SIG:
                    s[-1] = 1 if (s[-1] and image[code[pc + 1]]) else 0
                    pc += 2
                elif op == OP_NOT_SIG:
                    push(0 if image[code[pc + 1]] else 1)
                    pc += 2
                elif op == OP_OR:
                    b = pop()
                    s[-1] = 1 if (s[-1] or b) else 0
                    pc += 1
                elif op == OP_OR_SIG:
                    s[-1] = 1 if (s[-1] or image[code[pc + 1]]) else 0
                    pc += 2
                elif op == OP_SIG_BIT:
                    push((image[code[pc + 1]] >> code[pc + 2]) & 1)
                    pc += 3
                elif op == OP_NOT:
                    s[-1] = 0 if s[-1] else 1
                    pc += 1
                elif op == OP_CONST:
                    push(code[pc + 1])
                    pc += 2
                elif op <= OP_NE:
                    self._arith(op)
                    pc += 1
                elif op == OP_BIT:
                    s[-1] = (s[-1] >> code[pc + 1]) & 1
                    pc += 2
                else:
                    due_at = self._stateful(op, code, pc, now, image)
                    if due_at >= 0 and (wake < 0 or diff(due_at, wake) < 0):
                        wake = due_at
                    pc += 1 + OPERANDS[op]
            if wake >= 0:
                wakes[r] = wake
            elif r in wakes:
                del wakes[r]
            f = flags[r]
            c = pop() if f & FLAG_CLEAR_WHEN else 0
            w = pop()
            if not active[r]:
                if not w:
                    continue
                active[r] = 1
                raised = 1
            elif f & FLAG_LATCH:
                if w or (mode != 0 and mode != 4):   # reset by disarmed, maintenance
                    continue
                active[r] = 0
                raised = 0
            elif (c and not w) if f & FLAG_CLEAR_WHEN else not w:
                active[r] = 0
                raised = 0
            else:
                continue
            if changes is None:
                changes = []
            changes.append((r, t.severities[r], t.actions[r], raised))
        self.next_wake = self._earliest_wake()
        if not self.primed and t.samplers:
            # Every rule ran, so every sampler took its first sample: this
            # only finds the next one.
            self._sample_rates(image, now, {})
        self.primed = 1
        self.prev_now = now
        return changes if changes is not None else _NONE

    def _arith(self, op):
        s = self.stack
        if op == OP_NEG:
            s[-1] = -s[-1]
            return
        b = s.pop()
        a = s[-1]
        if op == OP_ADD:
            r = a + b
        elif op == OP_SUB:
            r = a - b
        elif op == OP_MUL:
            r = a * b
        elif op == OP_DIV:
            r = a // b if b else 0
        elif op == OP_MIN:
            r = a if a < b else b
        elif op == OP_MAX:
            r = a if a > b else b
        elif op == OP_LT:
            r = 1 if a < b else 0
        elif op == OP_LE:
            r = 1 if a <= b else 0
        elif op == OP_GT:
            r = 1 if a > b else 0
        elif op == OP_GE:
            r = 1 if a >= b else 0
        elif op == OP_EQ:
            r = 1 if a == b else 0
        else:
            r = 1 if a != b else 0
        s[-1] = r

    def _stateful(self, op, code, pc, now, image):
        """Run one stateful op (HELD is inlined, RATE has its own branch);
        returns the tick at which time alone may change its value, or -1 if
        only its input can."""
        s = self.stack
        m = self.mem
        v = s[-1]
        o = code[pc + 1]
        g = self.table.guards[o]
        if g is not None and not _known(image, g):
            for k in range(o, o + MEM_WORDS[op]):
                m[k] = 0
            s[-1] = 0
            return -1
        if op == OP_WITHIN:
            # mem: last tick it was true, seen within the window, true now.
            # When it turns false, it was last true at the previous scan.
            ms = code[pc + 2]
            if v:
                m[o] = now
                m[o + 1] = 1
                m[o + 2] = 1
                s[-1] = 1
                return -1
            if m[o + 2]:
                m[o] = self.prev_now
                m[o + 2] = 0
            if m[o + 1] and self.diff(now, m[o]) > ms:
                m[o + 1] = 0
            s[-1] = m[o + 1]
            return (m[o] + ms + 1) & TICK_MASK if m[o + 1] else -1
        if op == OP_COUNT:
            ms = code[pc + 2]
            n = self._count(o, ms, 1 if v else 0, now)
            s[-1] = n
            return (m[o + 3 + m[o + 2]] + ms) & TICK_MASK if n else -1
        prev = m[o]
        if op == OP_CHANGED:
            r = 1 if (m[o + 1] and v != prev) else 0
            m[o] = v
            m[o + 1] = 1
        else:
            m[o] = 2 if v else 1   # 0 stays "no previous": a first sample is no edge
            if op == OP_ROSE:
                r = 1 if (v and prev == 1) else 0
            else:
                r = 1 if (not v and prev == 2) else 0
        s[-1] = r
        return now if r else -1

    def _count(self, o, ms, v, now):
        m = self.mem
        prev = m[o]
        m[o] = 2 if v else 1   # as ROSE: 0 is "no previous", so a first sample is no rise
        n = m[o + 1]
        tail = m[o + 2]
        ring = o + 3
        while n and self.diff(now, m[ring + tail]) >= ms:
            tail = (tail + 1) % COUNT_CAP
            n -= 1
        if v and prev == 1:
            if n == COUNT_CAP:
                tail = (tail + 1) % COUNT_CAP
                n -= 1
            m[ring + (tail + n) % COUNT_CAP] = now
            n += 1
        m[o + 1] = n
        m[o + 2] = tail
        return n

    def _rate(self, o, ms, now):
        """Run a RATE op on the top of the stack; returns the tick of its next sample."""
        # A ring of RATE_SAMPLES + 1 samples taken every ms // RATE_SAMPLES on
        # a nominal schedule (so scan jitter does not stretch the window):
        # the oldest one is ms old.  mem: nominal time of the last sample,
        # samples taken (up to the ring size), next ring position, the ring.
        s = self.stack
        m = self.mem
        step = _rate_step(ms)
        if m[o + 1] == 0 or self.diff(now, m[o]) >= step:
            self._rate_sample(o, step, s[-1], now)
        s[-1] = self._rate_value(o, s[-1])
        return (m[o] + step) & TICK_MASK

    def _rate_sample(self, o, step, v, now):
        """Put ``v`` in the ring and move the nominal schedule on."""
        m = self.mem
        taken = m[o + 1]
        pos = m[o + 2]
        m[o + 3 + pos] = v
        m[o + 2] = (pos + 1) % (RATE_SAMPLES + 1)
        nominal = (m[o] + step) & TICK_MASK
        if taken == 0 or self.diff(now, nominal) >= step:
            nominal = now   # scans fell behind the schedule: restart it here
        m[o] = nominal
        if taken <= RATE_SAMPLES:
            m[o + 1] = taken + 1

    def _rate_value(self, o, v):
        """``v`` minus the oldest sample, 0 until the ring is full."""
        m = self.mem
        if m[o + 1] <= RATE_SAMPLES:
            return 0
        return v - m[o + 3 + m[o + 2]]


def evaluator_from_header(head, catalog_digest, image_size, ticks_diff):
    """The evaluator for a trace whose header carries a table under "rules",
    or None; TableError if the table was compiled for another catalog."""
    data = head.get("rules")
    if data is None:
        return None
    if not isinstance(data, dict) or _bytes(data.get("catalog"), "catalog") != catalog_digest:
        raise TableError("the trace's rule table was compiled for another signal catalog")
    return Evaluator(Table(data, image_size), ticks_diff)
