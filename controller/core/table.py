"""Compiled rule tables: the format and its checker (portable).

Theory of operation
-------------------
The host compiler (rules/compiler.py) turns rule files into a *table*: plain
data (lists, integers, text) that is CBOR-encoded and MAC'd for the gateway,
or carried as JSON in a trace header.  This module holds everything that
the table format fixes -- severities, action bits, mode codes, opcodes --
and ``Table``, a table checked against the image; controller/core/
evaluator.py runs one once per scan.

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
written out as ``controller.core.ticks.diff`` computes them (MicroPython's
``time.ticks_diff`` semantics).

A rule is *raised* when its condition becomes true and *cleared* when it
becomes false again, or -- with ``clear_when`` -- when the clear condition
is true and the condition is false, or -- when latched -- when the condition
is false while the cabinet is disarmed or in a maintenance visit.  ``scan()`` reports only the
changes, as ``(rule index, severity, action bits, 1 raised / 0 cleared)``.
"""

import binascii

from controller.core import modes
from controller.core.errors import TableError
# Severities and action bits are part of the table format; the core defines
# them once, with its other event values.
from controller.core.events import (  # noqa: F401  (part of the format)
    ACT_FAULT, ACT_LOCK, ACT_SILENT, ACT_UPLINK, ACTION_BITS, ALARM, CRITICAL,
    INFO, SEVERITY_NAMES, WARNING, severity_code,
)

FORMAT = 1

# Mode codes of table format 1 (the core's modes, in its order).  mode()
# compiles to a bit mask over them; bit GUARD stands for "armed": set while
# the cabinet is ARMED or in its ENTRY delay, and kept through an ALARM or
# FAULT that started from there; DISARMED, ARMING and MAINTENANCE end it.
MODES = modes.MODE_NAMES
GUARD = 1 << 7

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
OP_MOVED = 29     # off            x minus x at the last scan cond was true   mem: baseline, known
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
    OP_CHANGED: 1, OP_ROSE: 1, OP_FELL: 1, OP_MOVED: 1, OP_SIG_GT_K: 2, OP_SIG_GE_K: 2,
    OP_SIG_LT_K: 2, OP_SIG_LE_K: 2, OP_SIG_EQ_K: 2, OP_SIG_NE_K: 2,
    OP_AND_SIG: 1, OP_OR_SIG: 1, OP_NOT_SIG: 1, OP_SIG_BIT: 2,
    OP_GT_K: 1, OP_GE_K: 1, OP_LT_K: 1, OP_LE_K: 1, OP_EQ_K: 1, OP_NE_K: 1,
}
# Opcodes whose first operand is a signal index.
SIGNAL_OPS = (OP_SIG, OP_SIG_GT_K, OP_SIG_GE_K, OP_SIG_LT_K, OP_SIG_LE_K, OP_SIG_EQ_K,
               OP_SIG_NE_K, OP_AND_SIG, OP_OR_SIG, OP_NOT_SIG, OP_SIG_BIT)
# Stack effect (pushed minus popped) of every opcode.
BINARY_OPS = (OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MIN, OP_MAX, OP_LT, OP_LE, OP_GT,
         OP_GE, OP_EQ, OP_NE, OP_AND, OP_OR, OP_MOVED)
PUSH_OPS = (OP_SIG, OP_CONST, OP_MODE, OP_SIG_GT_K, OP_SIG_GE_K, OP_SIG_LT_K,
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
    OP_CHANGED: 2, OP_ROSE: 1, OP_FELL: 1, OP_MOVED: 2,
}
# Guards (table key "guards"): a stateful op whose input reads a device's
# signals takes its samples only while that device is online (its
# ``<dev>.online`` twins are all 1).  Otherwise the values on the image are
# unknown -- never read, or the last reading of a silent device -- so the op
# is reset to its fresh state and gives 0 (false): its history starts again
# at the first scan the device is back.


def table_bytes(v, what):
    """A table's byte-string field (bytes, or hex text in a JSON trace header)."""
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
        if op in SIGNAL_OPS:
            if not 0 <= code[pc + 1] < image_size:
                raise TableError("{}: signal index {} outside the image".format(where, code[pc + 1]))
        if op == OP_MODE:
            uses_mode = 1
        if op in MEM_WORDS:
            if not 0 <= code[pc + 1] <= mem - MEM_WORDS[op]:
                raise TableError("{}: state offset {} outside mem".format(where, code[pc + 1]))
            if op in (OP_HELD, OP_WITHIN, OP_COUNT, OP_RATE) and code[pc + 2] < 1:
                raise TableError("{}: window at {} must be > 0 ms".format(where, pc))
        if op in PUSH_OPS:
            depth += 1
        elif op in BINARY_OPS:
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
        if op in SIGNAL_OPS:
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


def rate_step(ms):
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


def tests_moved(tests, old, new):
    """True if any of ``tests`` gives another result for ``new`` than for ``old``."""
    for test in tests:
        if _passes(test, old) != _passes(test, new):
            return True
    return False


# The widest cell cell_of gives (a small int on every MicroPython port).
_FAR = (1 << 30) - 1


def _cut(op, k, u):
    """The run of integers [lo, hi) around ``u`` over which ``(op, k)`` of a
    test gives the result it gives for ``u``."""
    if op == OP_BIT:
        lo = (u >> k) << k
        return lo, lo + (1 << k)
    if op == OP_GT_K or op == OP_LE_K:
        k += 1                           # u > k is u >= k + 1
    elif op == OP_EQ_K or op == OP_NE_K:
        if u == k:
            return k, k + 1
        return (-_FAR, k) if u < k else (k + 1, _FAR)
    return (-_FAR, k) if u < k else (k, _FAR)


def cell_of(tests, v):
    """The run of integers [lo, hi) around ``v`` in which every one of
    ``tests`` gives the result it gives for ``v``: a signal that moves within
    it moves no test (the evaluator's cheap check before tests_moved)."""
    lo = -_FAR
    hi = _FAR
    for test in tests:
        absolute, op, k = test
        if absolute:
            u = -v if v < 0 else v
            a, b = _cut(op, k, u)
            if a <= 0:                   # the cell holds 0: both signs, up to its end
                a, b = 1 - b, b
            elif v < 0:                  # the negative mirror of [a, b)
                a, b = 1 - b, 1 - a
        else:
            a, b = _cut(op, k, v)
        if a > lo:
            lo = a
        if b < hi:
            hi = b
    return lo, hi


class Table:
    """A checked table: parallel lists, one entry per rule.

    ``data`` is the decoded payload (docs/rules.md, "Table format"), from
    CBOR or from JSON (where the byte strings are hex text).
    """

    def __init__(self, data, image_size):
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TableError("not a rule table of format {}".format(FORMAT))
        self.catalog = table_bytes(data.get("catalog"), "catalog")
        self.source = table_bytes(data.get("source"), "source")
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
        taken = {}
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
                if o in taken:
                    continue   # one ring read twice by its rule: one sampler
                taken[o] = 1
                # A plain signal is one device's: one twin guards it, or none.
                g = self.guards[o]
                samplers.append((r, o, rate_step(ms), i, g[0] if g is not None else -1))
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
        # Every test the rules make of a signal (for Evaluator's cells).
        self.tests_of = {}
        for i in tested:
            self.tests_of[i] = tuple(t for _r, tests in tested[i] for t in tests)
        self.mode_rules = tuple(mode_rules)
        # rate() of a signal: (rule, mem offset, sample step ms, signal, its
        # guard's online twin or -1).  The
        # evaluator takes their samples itself (Evaluator._sample_rates), so
        # such a rule need not run for a sample that leaves the rate's value.
        # Grouped by sample step, so a scan that is due for the 2 s samplers
        # does not walk the 75 s ones: ``groups`` holds each step's samplers,
        # ``sampled`` maps a sampled ring's mem offset to its group.
        self.samplers = tuple(samplers)
        steps = []
        for sampler in samplers:
            if sampler[2] not in steps:
                steps.append(sampler[2])
        self.groups = tuple(tuple(x for x in samplers if x[2] == step) for step in steps)
        self.sampled = {}
        for k in range(len(self.groups)):
            for sampler in self.groups[k]:
                self.sampled[sampler[1]] = k
        # A sampler whose ring holds one value sleeps (Evaluator._sample_rates):
        # a change of its signal or of its guard's twin wakes it (``wakers``:
        # signal index -> those samplers), as does any scan more than its
        # shortest step (``min_step``) after the one before.
        self.wakers = {}
        for sampler in samplers:
            _append(self.wakers, sampler[3], sampler)
            if sampler[4] >= 0:
                _append(self.wakers, sampler[4], sampler)
        self.min_step = min(steps) if steps else 0

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
