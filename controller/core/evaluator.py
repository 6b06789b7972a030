"""The rule table's evaluator: a small stack machine that runs a checked
``Table`` (controller/core/table.py, whose docstring is the theory of
operation) once per scan, change-driven (portable).
"""

from controller.core import modes
from controller.core.errors import TableError
from controller.core.table import (
    COUNT_CAP, FLAG_CLEAR_WHEN, FLAG_LATCH, GUARD, MEM_WORDS, OPERANDS, OP_ABS, OP_ADD, OP_AND,
    OP_AND_SIG, OP_BIT, OP_CHANGED, OP_CONST, OP_COUNT, OP_DIV, OP_EQ, OP_EQ_K, OP_GE, OP_GE_K,
    OP_GT, OP_GT_K, OP_HELD, OP_LE, OP_LE_K, OP_LT, OP_LT_K, OP_MAX, OP_MIN, OP_MODE, OP_MUL, OP_NE,
    OP_NEG, OP_NE_K, OP_NOT, OP_NOT_SIG, OP_OR, OP_OR_SIG, OP_RATE, OP_ROSE, OP_SIG, OP_SIG_BIT,
    OP_SIG_EQ_K, OP_SIG_GE_K, OP_SIG_GT_K, OP_SIG_LE_K, OP_SIG_LT_K, OP_SIG_NE_K, OP_SUB, OP_WITHIN,
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
        self.table = table
        self.diff = ticks_diff
        self.every_scan = every_scan
        self.mem = [0] * table.mem
        self.active = [0] * table.size
        self.wakes = {}      # rule index -> wake tick
        self.next_wake = -1  # the earliest of the wakes (-1: none), so a quiet scan skips them
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
        self.stack = []
        self.guard = 0
        self.primed = 0
        self.prev_now = 0   # the previous scan's tick

    def rule_state(self):
        """Every rule's state (timers, windows, counters, rate samples, latches, the
        last values seen), plain integers and lists: an evidence window starts with
        it so a replay reaches the decisions the gateway made (docs/trace.md)."""
        self._wake_all(self.prev_now)   # the samples a sleeping sampler skipped, as taken
        return {"mem": list(self.mem), "active": list(self.active),
                "wakes": [[r, self.wakes[r]] for r in sorted(self.wakes)], "last": list(self.last),
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
            self.last_mbit, self.guard, self.primed = snap["mbit"], snap["guard"], snap["primed"]
            self.next_sample, self.prev_now = snap["sample"], snap["prev"]
        except (KeyError, TypeError, IndexError) as e:
            raise TableError("start: not a rules' state ({!r} missing or malformed)".format(e.args[0] if e.args else e))
        self.mem = list(mem)
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
        diff = self.diff
        if self.asleep and (diff(now, self.prev_now) >= self.table.min_step or diff(now, self.sleep_until) >= 0):
            self._wake_all(self.prev_now)
        due = {}
        last = self.last
        t = self.table
        readers = t.readers
        lo = self.cell_lo
        hi = self.cell_hi
        for i in t.watch:
            if image[i] != last[i]:
                old = last[i]
                v = last[i] = image[i]
                if self.asleep and i in t.wakers:
                    self._wake(t.wakers[i], self.prev_now)
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
        for sampler in samplers:
            o = sampler[1]
            if o not in asleep:
                continue
            del asleep[o]
            step = sampler[2]
            n = self.diff(upto, m[o]) // step
            if n > 0:
                m[o] = (m[o] + n * step) & TICK_MASK
                m[o + 2] = (m[o + 2] + n) % (RATE_SAMPLES + 1)
            nxt = (m[o] + step) & TICK_MASK
            k = self.table.sampled[o]
            if self.group_next[k] >= 0 and self.diff(nxt, self.group_next[k]) < 0:
                self.group_next[k] = nxt
            if self.next_sample < 0 or self.diff(nxt, self.next_sample) < 0:
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
                # month of `cabguard eval`: the rules that read the vibration at
                # every reading -- edges, windows, timers -- then rates).  Tick
                # differences inlined, as ticks.diff.
                if op == OP_SIG:
                    push(image[code[pc + 1]])
                    pc += 2
                elif op == OP_AND:
                    b = pop()
                    s[-1] = 1 if (s[-1] and b) else 0
                    pc += 1
                elif op == OP_MODE:
                    push(1 if mbit & code[pc + 1] else 0)
                    pc += 2
                elif op == OP_HELD:
                    o = code[pc + 1]
                    g = guards[o]
                    if s[-1] and (g is None or _known(image, g)):
                        if not mem[o + 1]:
                            mem[o + 1] = 1
                            mem[o] = now
                        if ((now - mem[o] + TICK_HALF) & TICK_MASK) - TICK_HALF >= code[pc + 2]:
                            s[-1] = 1
                        else:
                            s[-1] = 0
                            due_at = (mem[o] + code[pc + 2]) & TICK_MASK
                            if wake < 0 or ((due_at - wake + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                                wake = due_at
                    else:
                        mem[o + 1] = 0
                        s[-1] = 0
                    pc += 3
                elif op == OP_WITHIN:
                    # mem: last tick it was true, seen within the window, true now.
                    # When it turns false, it was last true at the previous scan.
                    o = code[pc + 1]
                    g = guards[o]
                    if g is not None and not _known(image, g):
                        mem[o] = mem[o + 1] = mem[o + 2] = s[-1] = 0
                    elif s[-1]:
                        mem[o] = now
                        mem[o + 1] = 1
                        mem[o + 2] = 1
                        s[-1] = 1
                    else:
                        if mem[o + 2]:
                            mem[o] = self.prev_now
                            mem[o + 2] = 0
                        ms = code[pc + 2]
                        if mem[o + 1] and ((now - mem[o] + TICK_HALF) & TICK_MASK) - TICK_HALF > ms:
                            mem[o + 1] = 0
                        s[-1] = mem[o + 1]
                        if mem[o + 1]:
                            due_at = (mem[o] + ms + 1) & TICK_MASK
                            if wake < 0 or ((due_at - wake + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                                wake = due_at
                    pc += 3
                elif op == OP_CHANGED:
                    # mem: the previous value, known.
                    o = code[pc + 1]
                    g = guards[o]
                    if g is not None and not _known(image, g):
                        mem[o] = mem[o + 1] = s[-1] = 0
                    else:
                        v = s[-1]
                        if mem[o + 1] and v != mem[o]:
                            s[-1] = 1
                            wake = now   # false again at the next scan, unless it changes
                        else:
                            s[-1] = 0
                        mem[o] = v
                        mem[o + 1] = 1
                    pc += 2
                elif op == OP_AND_SIG:
                    s[-1] = 1 if (s[-1] and image[code[pc + 1]]) else 0
                    pc += 2
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
                elif op == OP_NOT:
                    s[-1] = 0 if s[-1] else 1
                    pc += 1
                elif op == OP_OR:
                    b = pop()
                    s[-1] = 1 if (s[-1] or b) else 0
                    pc += 1
                elif op == OP_RATE:
                    o = code[pc + 1]
                    g = guards[o]
                    if g is None or _known(image, g):
                        if o in self.asleep:
                            self._wake((self.asleep[o],), now)   # with this scan's sample
                        due_at = self._rate(o, code[pc + 2], now)
                        if o in sampled:
                            # Back online, its first sample may be the rule's: the
                            # evaluator takes the next one.
                            k = sampled[o]
                            if self.group_next[k] < 0 or diff(due_at, self.group_next[k]) < 0:
                                self.group_next[k] = due_at
                            if self.next_sample < 0 or diff(due_at, self.next_sample) < 0:
                                self.next_sample = due_at
                        elif wake < 0 or diff(due_at, wake) < 0:
                            wake = due_at
                    else:
                        mem[o + 1] = 0   # no samples: the ring starts again
                        s[-1] = 0
                    pc += 3
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
                elif op == OP_CONST:
                    push(code[pc + 1])
                    pc += 2
                elif op <= OP_NE:
                    self._arith(op)
                    pc += 1
                elif op == OP_NOT_SIG:
                    push(0 if image[code[pc + 1]] else 1)
                    pc += 2
                elif op == OP_OR_SIG:
                    s[-1] = 1 if (s[-1] or image[code[pc + 1]]) else 0
                    pc += 2
                elif op == OP_SIG_BIT:
                    push((image[code[pc + 1]] >> code[pc + 2]) & 1)
                    pc += 3
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
        """Run one stateful op (HELD, WITHIN and CHANGED are inlined, RATE has its own branch);
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
        if op == OP_COUNT:
            ms = code[pc + 2]
            n = self._count(o, ms, 1 if v else 0, now)
            s[-1] = n
            return (m[o + 3 + m[o + 2]] + ms) & TICK_MASK if n else -1
        prev = m[o]
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
        step = rate_step(ms)
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
    if not isinstance(data, dict) or table_bytes(data.get("catalog"), "catalog") != catalog_digest:
        raise TableError("the trace's rule table was compiled for another signal catalog")
    return Evaluator(Table(data, image_size), ticks_diff)
