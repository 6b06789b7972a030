"""The rule table's evaluator: runs a checked ``Table``
(controller/core/table.py, whose docstring is the theory of operation) once
per scan, change-driven (portable).  Each rule's postfix code is built once,
when the evaluator is made, into a tree of closures that computes what the
stack machine of the format would (see ``_rule_fn``).
"""

from controller.core import modes
from controller.core.errors import TableError
from controller.core.table import (
    BINARY_OPS, COUNT_CAP, FLAG_CLEAR_WHEN, FLAG_LATCH, GUARD, MEM_WORDS, OPERANDS, OP_ABS, OP_ADD, OP_AND,
    OP_AND_SIG, OP_BIT, OP_CHANGED, OP_CONST, OP_COUNT, OP_DIV, OP_EQ, OP_EQ_K, OP_GE, OP_GE_K,
    OP_GT, OP_GT_K, OP_HELD, OP_LE, OP_LE_K, OP_LT, OP_LT_K, OP_MIN, OP_MODE, OP_MOVED, OP_MUL, OP_NE,
    OP_NEG, OP_NOT, OP_NOT_SIG, OP_OR, OP_OR_SIG, OP_RATE, OP_ROSE, OP_SIG, OP_SIG_BIT,
    OP_SIG_EQ_K, OP_SIG_GE_K, OP_SIG_GT_K, OP_SIG_LE_K, OP_SIG_LT_K, OP_SUB, OP_WITHIN, PUSH_OPS,
    RATE_SAMPLES, TICK_HALF, TICK_MASK, Table, rate_step, table_bytes, cell_of, tests_moved,
)

# The GUARD bit of mode(): set while ARMED or in the ENTRY delay, kept
# through an ALARM or FAULT that started from there, ended by these.
_GUARD_ON = (modes.ARMED, modes.ENTRY)
_GUARD_OFF = (modes.DISARMED, modes.ARMING, modes.MAINTENANCE)
# A latched rule clears only once its condition is false while the cabinet
# is disarmed or in a maintenance visit: scan() tests these inline.
_DISARMED = modes.DISARMED
_MAINTENANCE = modes.MAINTENANCE
_NONE = ()
# The longest a sampler sleeps before its schedule is brought up to date
# (well inside the half tick period that tick differences are good for).
_SLEEP_MS = 3600000


def _known(image, guard):
    """1 if every device of ``guard`` (its online twins) is online."""
    for g in guard:
        if not image[g]:
            return 0
    return 1



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
        t = self.table = table
        self.diff = ticks_diff
        self.every_scan = every_scan
        self.mem = [0] * table.mem
        self.active = [0] * table.size
        self.wakes = {}      # rule index -> wake tick, for wakes after their rule's scan
        self.next_wake = -1  # the earliest of those (-1: none), so a quiet scan skips them
        self.soon = {}       # rule index -> the tick of its scan, for wakes at once (an edge, a change)
        self.next_sample = -1  # the earliest sample of the table's samplers (-1: none)
        self.group_next = [-1] * len(table.groups)   # the same per group of samplers (-1: look)
        self.last = [0] * table.image_size
        # Per tested signal, the cell [lo, hi) around its last value in which
        # no test of it changes (table.cell_of; empty: not known yet).
        self.cell_lo = [1] * table.image_size
        self.cell_hi = [0] * table.image_size
        self.asleep = {}      # mem offset of a sleeping sampler -> the sampler
        self.sleep_until = -1  # the tick by which the sleepers are brought up to date
        self.last_mbit = -1
        self.guard = 0
        self.primed = 0
        self.prev_now = 0   # the previous scan's tick
        self.cur = [0, 0]   # this scan's mode bits and the previous scan's tick, as the rules read them
        self.wk = [-1]      # the running rule's wake (-1: none), as its ops find it
        built = {}   # one closure per distinct tree (the same term in many rules, or twice in one)
        # (mem offset, the offset it repeats, words) of each stateful op that
        # repeats one run before it in its rule (``_rule_fn``): rule_state()
        # copies its state, which it would hold had it run.
        self.copies = []
        self.run = [_rule_fn(self, t.codes[r], t.flags[r] & FLAG_CLEAR_WHEN, built) for r in range(t.size)]

    def rule_state(self):
        """Every rule's state (timers, windows, counters, rate samples, latches, the
        last values seen), plain integers and lists: an evidence window starts with
        it so a replay reaches the decisions the gateway made (docs/trace.md)."""
        self._wake_all(self.prev_now)   # the samples a sleeping sampler skipped, as taken
        m = self.mem
        for o, first, words in self.copies:
            for k in range(words):
                m[o + k] = m[first + k]
        wakes = dict(self.wakes)
        wakes.update(self.soon)
        return {"mem": list(self.mem), "active": list(self.active),
                "wakes": [[r, wakes[r]] for r in sorted(wakes)], "last": list(self.last),
                "mbit": self.last_mbit, "guard": self.guard, "primed": self.primed,
                "sample": self.next_sample, "prev": self.prev_now}

    def restore_rule_state(self, snap):
        """Start from ``rule_state()`` of the same table; TableError names what does not fit."""
        t = self.table
        try:
            mem, active, last, wakes = snap["mem"], snap["active"], snap["last"], snap["wakes"]
            if len(mem) != t.mem or len(active) != t.size or len(last) != t.image_size:
                raise TableError("start: the rules' state is for another table ({} memory cells, {} rules, {} "
                                 "signals; this one has {}, {}, {})".format(len(mem), len(active), len(last),
                                                                           t.mem, t.size, t.image_size))
            self.wakes = dict((w[0], w[1]) for w in wakes)
            self.soon = {}
            self.last_mbit, self.guard, self.primed = snap["mbit"], snap["guard"], snap["primed"]
            self.next_sample, self.prev_now = snap["sample"], snap["prev"]
        except (KeyError, TypeError, IndexError) as e:
            raise TableError("start: not a rules' state ({!r} missing or malformed)".format(e.args[0] if e.args else e))
        m = self.mem   # filled in place: the rules' closures hold this list
        for k in range(len(m)):
            m[k] = mem[k]
        self.active = list(active)
        self.last = list(last)
        self.cell_lo = [1] * t.image_size
        self.cell_hi = [0] * t.image_size
        self.asleep = {}
        self.sleep_until = -1
        self.next_wake = self._earliest_wake()
        self.group_next = [-1] * len(t.groups)   # each group looks at its rings' schedules again

    def _due(self, image, mbit, now):
        """The rules to run this scan, in index order (None: none)."""
        # Tick differences inlined, as ticks.diff: this runs every scan.
        t = self.table
        asleep = self.asleep
        prev = self.prev_now
        if asleep and (((now - prev + TICK_HALF) & TICK_MASK) - TICK_HALF >= t.min_step
                       or ((now - self.sleep_until + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0):
            self._wake_all(prev)
        due = {}
        last = self.last
        readers = t.readers
        wakers = t.wakers
        lo = self.cell_lo
        hi = self.cell_hi
        for i in t.watch:
            if image[i] != last[i]:
                old = last[i]
                v = last[i] = image[i]
                if asleep and i in wakers:
                    self._wake(wakers[i], prev)
                needs_value, tested = readers[i]
                for r in needs_value:
                    due[r] = 1
                # A rule that only tests the signal sees no change unless a
                # test does, and none does while it stays in its cell.
                if tested and not lo[i] <= v < hi[i]:
                    for r, tests in tested:
                        if tests_moved(tests, old, v):
                            due[r] = 1
                    lo[i], hi[i] = cell_of(t.tests_of[i], v)
        if mbit != self.last_mbit:
            self.last_mbit = mbit
            for r in t.mode_rules:
                due[r] = 1
        soon = self.soon
        for r in soon:
            if ((now - soon[r] + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
                due[r] = 1
        w = self.next_wake
        if w >= 0 and ((now - w + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
            wakes = self.wakes
            for r in wakes:
                if ((now - wakes[r] + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
                    due[r] = 1
        w = self.next_sample
        if w >= 0 and ((now - w + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
            self._sample_rates(image, now, due)
        if not due:
            return None
        return sorted(due)

    def _sample_rates(self, image, now, due):
        """Take the samplers' samples that are due, as their rate() ops would
        when their rules ran this scan; a rule whose rate's value changes is
        due (its signal has not changed, or it is due already).  A sampler
        whose ring then holds one value, its signal's, sleeps: its rate stays
        0 and every sample it skips would write that value again, so a wake
        (``_wake``) only moves its schedule on."""
        m = self.mem
        first = -1
        groups = self.table.groups
        group_next = self.group_next
        asleep = self.asleep
        full = RATE_SAMPLES + 1
        # Tick differences inlined (as ticks.diff): this loop runs about every
        # other scan of `cabguard eval`; it walks only the groups that are due.
        for k in range(len(groups)):
            gn = group_next[k]
            if gn < 0 or ((now - gn + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
                gn = -1
                for sampler in groups[k]:
                    r, o, step, i, g = sampler
                    if o in asleep or (g >= 0 and not image[g]):
                        continue   # asleep, or its device is offline: no samples (its rule reset the ring)
                    if ((now - m[o] + TICK_HALF) & TICK_MASK) - TICK_HALF >= step:
                        v = image[i]
                        before = v - m[o + 3 + m[o + 2]] if m[o + 1] == full else 0
                        self._rate_sample(o, step, v, now)
                        if m[o + 1] == full:
                            after = v - m[o + 3 + m[o + 2]]
                            if after == 0 and m[o + 3:o + 3 + full].count(v) == full:
                                if not asleep:
                                    self.sleep_until = (now + _SLEEP_MS) & TICK_MASK
                                asleep[o] = sampler
                        else:
                            after = 0
                        if after != before:
                            due[r] = 1
                        if o in asleep:
                            continue
                    nxt = (m[o] + step) & TICK_MASK
                    if gn < 0 or ((nxt - gn + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                        gn = nxt
                group_next[k] = gn
            if gn >= 0 and (first < 0 or ((gn - first + TICK_HALF) & TICK_MASK) - TICK_HALF < 0):
                first = gn
        self.next_sample = first

    def _wake(self, samplers, upto):
        """Wake those of ``samplers`` that sleep, their schedules moved on as
        if they had sampled at every scan up to ``upto``: every scan since
        they slept came less than a step after the one before (else
        ``_due`` woke them), so each took its sample on the nominal
        schedule, and with the value the ring holds."""
        m = self.mem
        asleep = self.asleep
        sampled = self.table.sampled
        group_next = self.group_next
        for sampler in samplers:
            o = sampler[1]
            if o not in asleep:
                continue
            del asleep[o]
            step = sampler[2]
            n = (((upto - m[o] + TICK_HALF) & TICK_MASK) - TICK_HALF) // step
            if n > 0:
                m[o] = (m[o] + n * step) & TICK_MASK
                m[o + 2] = (m[o + 2] + n) % (RATE_SAMPLES + 1)
            nxt = (m[o] + step) & TICK_MASK
            k = sampled[o]
            if group_next[k] >= 0 and ((nxt - group_next[k] + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                group_next[k] = nxt
            if self.next_sample < 0 or ((nxt - self.next_sample + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                self.next_sample = nxt

    def _wake_all(self, upto):
        if self.asleep:
            self._wake(list(self.asleep.values()), upto)

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
        cur = self.cur
        cur[0] = mbit
        cur[1] = self.prev_now
        run = self.run
        flags = t.flags
        active = self.active
        wakes = self.wakes
        soon = self.soon
        wk = self.wk
        first = self.next_wake
        stale = 0   # 1: the earliest wake went away, look again
        changes = None
        for r in due:
            wk[0] = -1   # the earliest tick at which time alone may change this rule
            v = run[r](image, now)
            if r in soon:
                del soon[r]
            elif r in wakes:
                if wakes.pop(r) == first:
                    stale = 1
            wake = wk[0]
            if wake == now:
                soon[r] = wake   # an edge or change: looked at next scan
            elif wake >= 0:
                wakes[r] = wake
                if first < 0 or ((wake - first + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                    first = wake
            f = flags[r]
            if f & FLAG_CLEAR_WHEN:
                c = v & 2
                w = v & 1
            else:
                c = 0
                w = v
            if not active[r]:
                if not w:
                    continue
                active[r] = 1
                raised = 1
            elif f & FLAG_LATCH:
                if w or (mode != _DISARMED and mode != _MAINTENANCE):   # reset by disarmed, maintenance
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
        self.next_wake = self._earliest_wake() if stale else first
        if not self.primed and t.samplers:
            # Every rule ran, so every sampler took its first sample: this
            # only finds the next one.
            self._sample_rates(image, now, {})
        self.primed = 1
        self.prev_now = now
        return changes if changes is not None else _NONE

    def _rate_sample(self, o, step, v, now):
        """Put ``v`` in the ring and move the nominal schedule on."""
        m = self.mem
        taken = m[o + 1]
        pos = m[o + 2]
        m[o + 3 + pos] = v
        m[o + 2] = (pos + 1) % (RATE_SAMPLES + 1)
        nominal = (m[o] + step) & TICK_MASK
        if taken == 0 or ((now - nominal + TICK_HALF) & TICK_MASK) - TICK_HALF >= step:
            nominal = now   # scans fell behind the schedule: restart it here
        m[o] = nominal
        if taken <= RATE_SAMPLES:
            m[o + 1] = taken + 1


def evaluator_from_header(head, catalog_digest, image_size, ticks_diff):
    """The evaluator for a trace whose header carries a table under "rules",
    or None; TableError if the table was compiled for another catalog."""
    data = head.get("rules")
    if data is None:
        return None
    if not isinstance(data, dict) or table_bytes(data.get("catalog"), "catalog") != catalog_digest:
        raise TableError("the trace's rule table was compiled for another signal catalog")
    return Evaluator(Table(data, image_size), ticks_diff)


# Each rule's code is built once into closures, a tree of them (postfix code
# is a tree written out): running a rule is then calls, not an interpreter's
# dispatch per op.  Every op still runs on every run of its rule, in code
# order (its state stays current), except ops without state under an
# ``and`` or ``or`` whose result is already decided: they would give the
# same value and change nothing.  A closure takes (image, now) and returns
# the op's value; stateful ops keep their state in ``ev.mem`` and put the
# earliest tick at which time alone may change them in ``ev.wk[0]``.
#
# A term with state written twice in one rule (sensor_fault_at_arming's
# fault, three times) is two copies of the same ops on the same inputs,
# run on the same scans, from the same start: they hold the same state and
# give the same value at every run.  So the first copy in code order (the
# one that runs first) keeps its value, and the others read it instead of
# running (``_Shared``).

def _rule_fn(ev, code, clear_when, built):
    """The closure that runs one rule: its ``when`` value, or with a
    ``clear_when`` bit 0 for ``when`` and bit 1 for ``clear_when``."""
    roots = _tree(code)
    shared = _Shared(ev, roots)
    w = _fn(ev, roots[0], built, shared)
    if not clear_when:
        return w
    c = _fn(ev, roots[1], built, shared)

    def both(im, now):
        x = w(im, now)
        return (1 if x else 0) | (2 if c(im, now) else 0)
    return both


def _tree(code):
    """Checked ``code`` as the trees it computes, [(op, operands, children)],
    the values it leaves in stack order."""
    stack = []
    pc = 0
    n = len(code)
    while pc < n:
        op = code[pc]
        k = OPERANDS[op]
        if op in PUSH_OPS:
            kids = ()
        elif op in BINARY_OPS:
            b = stack.pop()
            kids = (stack.pop(), b)
        else:
            kids = (stack.pop(),)
        stack.append((op, tuple(code[pc + 1:pc + 1 + k]), kids))
        pc += 1 + k
    return stack


def _pure(node):
    """True if ``node`` holds no stateful op: skipping it changes nothing."""
    if node[0] in MEM_WORDS:
        return False
    for kid in node[2]:
        if not _pure(kid):
            return False
    return True


class _Shared:
    """The terms with state that one rule repeats, found before its closures
    are built: the same walk in code order as ``_fn``'s, which builds the
    first copy of each (its value kept) and none of the copies after it
    (each reads that value)."""

    def __init__(self, ev, roots):
        self.guards = ev.table.guards
        self.copies = ev.copies
        self.shapes = {}     # tree -> its shape, the tree without its mem offsets
        self.repeats = {}    # shape -> copies met (a copy's insides are not walked)
        self.first = {}      # shape -> (the first copy, the cell holding its value)
        self.source = {}     # mem offset of an op of a later copy -> the first copy's
        for root in roots:
            self._count(root)

    def shape(self, node):
        s = self.shapes.get(node)
        if s is None:
            op, args, kids = node
            if op in MEM_WORDS and op != OP_RATE:   # a rule's rate() rings are one per term already
                args = (self.guards[args[0]],) + args[1:]
            s = self.shapes[node] = (op, args, tuple(self.shape(kid) for kid in kids))
        return s

    def _count(self, node):
        if _pure(node):
            return
        s = self.shape(node)
        if s in self.repeats:
            self.repeats[s] += 1
            return
        self.repeats[s] = 1
        for kid in node[2]:
            self._count(kid)

    def repeated(self, node):
        """True if ``node`` is a term with state that its rule repeats."""
        return not _pure(node) and self.repeats[self.shape(node)] > 1

    def keep(self, node, f):
        """The first copy's closure ``f``, keeping its value for the others."""
        cell = [0]
        self.first[self.shape(node)] = (node, cell)

        def first(im, now):
            v = cell[0] = f(im, now)
            return v
        return first

    def reader(self, node):
        """A later copy of a term built already: its value, and its state
        for rule_state() (``Evaluator.copies``); None if it is the first."""
        found = self.first.get(self.shape(node))
        if found is None:
            return None
        cell = found[1]
        for o, first in zip(_offsets(node), _offsets(found[0])):
            # The first copy may hold a later copy of a smaller term: its op's state is that term's first copy's.
            source = self.source.get(first[0], first[0])
            if o[0] != source:
                self.source[o[0]] = source
                self.copies.append((o[0], source, o[1]))
        return lambda im, now: cell[0]


def _offsets(node):
    """(mem offset, words) of each stateful op of ``node``, in code order."""
    out = []
    for kid in node[2]:
        out += _offsets(kid)
    if node[0] in MEM_WORDS:
        out.append((node[1][0], MEM_WORDS[node[0]]))
    return out


def _fn(ev, node, built, shared):
    """The closure of ``node``; equal trees share one (``built``): a closure's
    state is in ``ev.mem`` at its operands' offsets, so two calls of one are
    two calls of equal ones.  A term with state repeated in its rule is run
    once (``shared``)."""
    repeated = shared.repeated(node)
    if repeated:
        f = shared.reader(node)
        if f is not None:
            return f
    f = built.get(node)
    if f is not None:
        return f
    op, args, kids = node
    if op == OP_MOVED:
        f = _moved_fn(ev, args[0], _fn(ev, kids[0], built, shared), _fn(ev, kids[1], built, shared))
    elif op in MEM_WORDS:
        f = _stateful_of(ev, node, built, shared, 0)
    elif op == OP_NOT and kids[0][0] in _NEGATED and not shared.repeated(kids[0]):
        f = _stateful_of(ev, kids[0], built, shared, 1)
    elif not kids:
        f = _leaf_fn(ev, op, args)
    else:
        f = _fused_fn(ev, op, args, kids, built, shared)
        if f is None and len(kids) == 2:
            f = _binary_fn(op, _fn(ev, kids[0], built, shared), _fn(ev, kids[1], built, shared),
                           _pure(kids[0]), _pure(kids[1]))
        elif f is None:
            f = _unary_fn(op, args, _fn(ev, kids[0], built, shared))
    if repeated:
        return shared.keep(node, f)
    built[node] = f
    return f


def _stateful_of(ev, node, built, shared, neg):
    """The closure of the stateful op ``node`` (negated: ``neg``)."""
    op, args, kids = node
    # A plain signal's value is read inline: one call less.
    si = kids[0][1][0] if kids[0][0] == OP_SIG else -1
    return _stateful_fn(ev, op, args, _fn(ev, kids[0], built, shared), si, neg)


# Leaf fusion: an op whose operand is a signal, a constant or the mode
# reads it inline instead of calling the leaf's closure (a call costs more
# than the op).  Only the shapes the packs run every scan are fused:
# ``x + k`` and ``x - k``, a comparison with a signal on its right
# (``peak + 10 < rms``, ``peak >= rms``), ``abs(x) > k`` and ``abs(x) < k``,
# and ``and``/``or`` with a mode().
# A leaf has no state, so skipping its closure changes nothing.
_COMPARE_OPS = (OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE)


def _fused_fn(ev, op, args, kids, built, shared):
    """The closure of ``op`` over ``kids`` with a leaf read inline, or None."""
    if op == OP_AND_SIG or op == OP_OR_SIG:
        if kids[0][0] == OP_MODE:
            return _mode_sig_fn(ev.cur, kids[0][1][0], op == OP_AND_SIG, args[0])
        return None
    if (op == OP_GT_K or op == OP_LT_K) and kids[0][0] == OP_ABS:
        y = kids[0][2][0]
        if y[0] == OP_SIG:
            return _abs_sig_k_fn(op == OP_GT_K, y[1][0], args[0])
        return _abs_k_fn(op == OP_GT_K, _fn(ev, y, built, shared), args[0])
    if len(kids) != 2:
        return None
    a, b = kids
    if (op == OP_ADD or op == OP_SUB) and b[0] == OP_CONST:
        k = b[1][0] if op == OP_ADD else -b[1][0]
        if a[0] == OP_SIG:
            i = a[1][0]
            return lambda im, now: im[i] + k
        x = _fn(ev, a, built, shared)
        return lambda im, now: x(im, now) + k
    if op in _COMPARE_OPS and b[0] == OP_SIG:
        j = b[1][0]
        if a[0] == OP_SIG:
            return _compare_sigs_fn(op, a[1][0], j)
        return _compare_sig_fn(op, _fn(ev, a, built, shared), j)
    if (op == OP_AND or op == OP_OR) and (a[0] == OP_MODE or b[0] == OP_MODE):
        mode, other = (a, b) if a[0] == OP_MODE else (b, a)
        return _mode_logic_fn(ev.cur, mode[1][0], op == OP_AND, _fn(ev, other, built, shared), _pure(other))
    return None


def _mode_sig_fn(cur, mask, conj, k):
    """``mode(mask) and image[k]`` (``conj``) or ``mode(mask) or image[k]``."""
    if conj:
        return lambda im, now: 1 if (cur[0] & mask and im[k]) else 0
    return lambda im, now: 1 if (cur[0] & mask or im[k]) else 0


def _mode_logic_fn(cur, mask, conj, x, pure):
    """``mode(mask) and x`` (``conj``) or ``mode(mask) or x``: a stateless
    ``x`` is skipped once the mode decides, one with state always runs."""
    if pure:
        if conj:
            return lambda im, now: 1 if (cur[0] & mask and x(im, now)) else 0
        return lambda im, now: 1 if (cur[0] & mask or x(im, now)) else 0
    if conj:
        return lambda im, now: 1 if (x(im, now) and cur[0] & mask) else 0
    return lambda im, now: 1 if (x(im, now) or cur[0] & mask) else 0


def _abs_sig_k_fn(gt, i, k):
    """``abs(image[i]) > k`` (``gt``) or ``abs(image[i]) < k``."""
    if gt:
        return lambda im, now: 1 if abs(im[i]) > k else 0
    return lambda im, now: 1 if abs(im[i]) < k else 0


def _abs_k_fn(gt, x, k):
    """``abs(x) > k`` (``gt``) or ``abs(x) < k``."""
    if gt:
        return lambda im, now: 1 if abs(x(im, now)) > k else 0
    return lambda im, now: 1 if abs(x(im, now)) < k else 0


def _compare_sigs_fn(op, i, j):
    """``image[i] <op> image[j]``."""
    if op == OP_LT:
        return lambda im, now: 1 if im[i] < im[j] else 0
    if op == OP_LE:
        return lambda im, now: 1 if im[i] <= im[j] else 0
    if op == OP_GT:
        return lambda im, now: 1 if im[i] > im[j] else 0
    if op == OP_GE:
        return lambda im, now: 1 if im[i] >= im[j] else 0
    if op == OP_EQ:
        return lambda im, now: 1 if im[i] == im[j] else 0
    return lambda im, now: 1 if im[i] != im[j] else 0


def _compare_sig_fn(op, x, j):
    """``x <op> image[j]``."""
    if op == OP_LT:
        return lambda im, now: 1 if x(im, now) < im[j] else 0
    if op == OP_LE:
        return lambda im, now: 1 if x(im, now) <= im[j] else 0
    if op == OP_GT:
        return lambda im, now: 1 if x(im, now) > im[j] else 0
    if op == OP_GE:
        return lambda im, now: 1 if x(im, now) >= im[j] else 0
    if op == OP_EQ:
        return lambda im, now: 1 if x(im, now) == im[j] else 0
    return lambda im, now: 1 if x(im, now) != im[j] else 0


def _leaf_fn(ev, op, args):
    i = args[0]
    if op == OP_SIG:
        return lambda im, now: im[i]
    if op == OP_CONST:
        return lambda im, now: i
    if op == OP_MODE:
        cur = ev.cur
        return lambda im, now: 1 if cur[0] & i else 0
    if op == OP_NOT_SIG:
        return lambda im, now: 0 if im[i] else 1
    k = args[1]
    if op == OP_SIG_BIT:
        return lambda im, now: (im[i] >> k) & 1
    if op == OP_SIG_GT_K:
        return lambda im, now: 1 if im[i] > k else 0
    if op == OP_SIG_LT_K:
        return lambda im, now: 1 if im[i] < k else 0
    if op == OP_SIG_GE_K:
        return lambda im, now: 1 if im[i] >= k else 0
    if op == OP_SIG_LE_K:
        return lambda im, now: 1 if im[i] <= k else 0
    if op == OP_SIG_EQ_K:
        return lambda im, now: 1 if im[i] == k else 0
    return lambda im, now: 1 if im[i] != k else 0


def _binary_fn(op, a, b, pure_a, pure_b):
    if op == OP_AND or op == OP_OR:
        return _logic_fn(op == OP_AND, a, b, pure_a, pure_b)
    if op == OP_ADD:
        return lambda im, now: a(im, now) + b(im, now)
    if op == OP_SUB:
        return lambda im, now: a(im, now) - b(im, now)
    if op == OP_MUL:
        return lambda im, now: a(im, now) * b(im, now)
    if op == OP_LT:
        return lambda im, now: 1 if a(im, now) < b(im, now) else 0
    if op == OP_LE:
        return lambda im, now: 1 if a(im, now) <= b(im, now) else 0
    if op == OP_GT:
        return lambda im, now: 1 if a(im, now) > b(im, now) else 0
    if op == OP_GE:
        return lambda im, now: 1 if a(im, now) >= b(im, now) else 0
    if op == OP_EQ:
        return lambda im, now: 1 if a(im, now) == b(im, now) else 0
    if op == OP_NE:
        return lambda im, now: 1 if a(im, now) != b(im, now) else 0

    def arith(im, now):
        x = a(im, now)
        y = b(im, now)
        if op == OP_DIV:
            return x // y if y else 0
        if op == OP_MIN:
            return x if x < y else y
        return x if x > y else y   # OP_MAX
    return arith


def _logic_fn(conj, a, b, pure_a, pure_b):
    """``a and b`` (``conj``) or ``a or b``: a stateless side is skipped once the other decides."""
    if pure_b:
        if conj:
            return lambda im, now: 1 if (a(im, now) and b(im, now)) else 0
        return lambda im, now: 1 if (a(im, now) or b(im, now)) else 0
    if pure_a:
        if conj:
            return lambda im, now: 1 if (b(im, now) and a(im, now)) else 0
        return lambda im, now: 1 if (b(im, now) or a(im, now)) else 0

    def both(im, now):
        x = a(im, now)
        y = b(im, now)
        if conj:
            return 1 if (x and y) else 0
        return 1 if (x or y) else 0
    return both


def _unary_fn(op, args, x):
    if op == OP_NOT:
        return lambda im, now: 0 if x(im, now) else 1
    if op == OP_NEG:
        return lambda im, now: -x(im, now)
    if op == OP_ABS:
        return lambda im, now: abs(x(im, now))
    k = args[0]
    if op == OP_BIT:
        return lambda im, now: (x(im, now) >> k) & 1
    if op == OP_AND_SIG:
        return lambda im, now: 1 if (x(im, now) and im[k]) else 0
    if op == OP_OR_SIG:
        return lambda im, now: 1 if (x(im, now) or im[k]) else 0
    if op == OP_GT_K:
        return lambda im, now: 1 if x(im, now) > k else 0
    if op == OP_LT_K:
        return lambda im, now: 1 if x(im, now) < k else 0
    if op == OP_GE_K:
        return lambda im, now: 1 if x(im, now) >= k else 0
    if op == OP_LE_K:
        return lambda im, now: 1 if x(im, now) <= k else 0
    if op == OP_EQ_K:
        return lambda im, now: 1 if x(im, now) == k else 0
    return lambda im, now: 1 if x(im, now) != k else 0


def _wake_at(wk, due_at):
    """Make ``due_at`` the running rule's wake if it comes first."""
    w = wk[0]
    if w < 0 or ((due_at - w + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
        wk[0] = due_at


# The stateful ops that give their value negated (``neg``) for a ``not``
# over them (``not within(changed(x), '5m')``): one call less.
_NEGATED = (OP_HELD, OP_WITHIN)


def _stateful_fn(ev, op, args, x, si, neg):
    """A stateful op over ``x``, or over the signal ``si`` when that is ``x``
    (-1: it is not).  Its guard (the online twins of the devices its input
    reads) is tested inline: none (``gk`` 0), one (1), several (2).  An op
    of ``_NEGATED`` gives ``off`` for false and ``on`` for true."""
    on = 0 if neg else 1
    off = 1 - on
    o = args[0]
    g = ev.table.guards[o]
    gk = 0 if g is None else (1 if len(g) == 1 else 2)
    g0 = g[0] if gk else 0
    mem = ev.mem
    wk = ev.wk
    if op == OP_HELD:
        ms = args[1]

        def held(im, now):
            if (im[si] if si >= 0 else x(im, now)) and (gk == 0 or (im[g0] if gk == 1 else _known(im, g))):
                if not mem[o + 1]:
                    mem[o + 1] = 1
                    mem[o] = now
                if ((now - mem[o] + TICK_HALF) & TICK_MASK) - TICK_HALF >= ms:
                    return on
                due_at = (mem[o] + ms) & TICK_MASK
                w = wk[0]
                if w < 0 or ((due_at - w + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                    wk[0] = due_at
                return off
            mem[o + 1] = 0
            return off
        return held
    if op == OP_WITHIN:
        ms = args[1]
        cur = ev.cur

        def within(im, now):
            # mem: last tick it was true, seen within the window, true now.
            # When it turns false, it was last true at the previous scan.
            v = im[si] if si >= 0 else x(im, now)
            if gk and not (im[g0] if gk == 1 else _known(im, g)):
                mem[o] = mem[o + 1] = mem[o + 2] = 0
                return off
            if v:
                mem[o] = now
                mem[o + 1] = 1
                mem[o + 2] = 1
                return on
            if mem[o + 2]:
                mem[o] = cur[1]
                mem[o + 2] = 0
            if mem[o + 1] and ((now - mem[o] + TICK_HALF) & TICK_MASK) - TICK_HALF > ms:
                mem[o + 1] = 0
            if mem[o + 1]:
                due_at = (mem[o] + ms + 1) & TICK_MASK
                w = wk[0]
                if w < 0 or ((due_at - w + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                    wk[0] = due_at
                return on
            return off
        return within
    if op == OP_CHANGED:
        def changed(im, now):
            # mem: the previous value, known.
            v = im[si] if si >= 0 else x(im, now)
            if gk and not (im[g0] if gk == 1 else _known(im, g)):
                mem[o] = mem[o + 1] = 0
                return 0
            r = 0
            if mem[o + 1] and v != mem[o]:
                r = 1
                wk[0] = now   # false again at the next scan, unless it changes
            mem[o] = v
            mem[o + 1] = 1
            return r
        return changed
    if op == OP_RATE:
        return _rate_fn(ev, x, si, o, args[1], gk, g0, g)
    if op == OP_COUNT:
        ms = args[1]
        words = MEM_WORDS[op]

        def count(im, now):
            v = im[si] if si >= 0 else x(im, now)
            if gk and not (im[g0] if gk == 1 else _known(im, g)):
                for k in range(o, o + words):
                    mem[k] = 0
                return 0
            n = _count(mem, o, ms, 1 if v else 0, now)
            if n:
                _wake_at(wk, (mem[o + 3 + mem[o + 2]] + ms) & TICK_MASK)
            return n
        return count
    rose = op == OP_ROSE

    def edge(im, now):
        v = im[si] if si >= 0 else x(im, now)
        if gk and not (im[g0] if gk == 1 else _known(im, g)):
            mem[o] = 0
            return 0
        prev = mem[o]
        mem[o] = 2 if v else 1   # 0 stays "no previous": a first sample is no edge
        if (prev == 1 and v) if rose else (prev == 2 and not v):
            w = wk[0]
            if w < 0 or ((now - w + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                wk[0] = now
            return 1
        return 0
    return edge


def _moved_fn(ev, o, x, cond):
    """A MOVED op: ``x`` now minus its baseline, the value ``x`` had at the
    last scan ``cond`` was true.  mem: the baseline, 1 once there is one.
    With no baseline (a device not read since it came online, and ``cond``
    not true since) the first value read is the baseline: a device's first
    reading is no movement.  The rule runs whenever ``x`` or what ``cond``
    reads changes, so the last run with ``cond`` true saw the value ``x``
    had at the last scan it was true: change-driven, it keeps the baseline
    running every scan keeps."""
    mem = ev.mem
    g = ev.table.guards[o]

    def moved(im, now):
        v = x(im, now)
        c = cond(im, now)
        if g is not None and not _known(im, g):
            mem[o] = mem[o + 1] = 0
            return 0
        if c or not mem[o + 1]:
            mem[o] = v
            mem[o + 1] = 1
        return v - mem[o]
    return moved


def _count(m, o, ms, v, now):
    """A COUNT op's rises in its window, its ring brought up to date."""
    prev = m[o]
    m[o] = 2 if v else 1   # as ROSE: 0 is "no previous", so a first sample is no rise
    n = m[o + 1]
    tail = m[o + 2]
    ring = o + 3
    while n and ((now - m[ring + tail] + TICK_HALF) & TICK_MASK) - TICK_HALF >= ms:
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


def _rate_fn(ev, x, si, o, ms, gk, g0, g):
    """A RATE op: a ring of RATE_SAMPLES + 1 samples taken every ms //
    RATE_SAMPLES on a nominal schedule (so scan jitter does not stretch the
    window): the oldest one is ms old.  mem: nominal time of the last
    sample, samples taken (up to the ring size), next ring position, the
    ring.  A ring of a plain signal is the evaluator's sampler's
    (``ev.table.sampled``): the op then moves the samplers' schedule."""
    mem = ev.mem
    wk = ev.wk
    step = rate_step(ms)
    k = ev.table.sampled.get(o, -1)

    def rate(im, now):
        v = im[si] if si >= 0 else x(im, now)
        if gk and not (im[g0] if gk == 1 else _known(im, g)):
            mem[o + 1] = 0   # no samples: the ring starts again
            return 0
        asleep = ev.asleep
        if o in asleep:
            ev._wake((asleep[o],), now)   # with this scan's sample
        if mem[o + 1] == 0 or ((now - mem[o] + TICK_HALF) & TICK_MASK) - TICK_HALF >= step:
            ev._rate_sample(o, step, v, now)
        r = v - mem[o + 3 + mem[o + 2]] if mem[o + 1] > RATE_SAMPLES else 0
        due_at = (mem[o] + step) & TICK_MASK
        if k >= 0:
            # Back online, its first sample may be the rule's: the
            # evaluator takes the next one.
            group_next = ev.group_next
            if group_next[k] < 0 or ((due_at - group_next[k] + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                group_next[k] = due_at
            if ev.next_sample < 0 or ((due_at - ev.next_sample + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                ev.next_sample = due_at
        else:
            _wake_at(wk, due_at)
        return r
    return rate
