"""The rule table's evaluator: runs a checked ``Table``
(controller/core/table.py, whose docstring is the theory of operation) once
per scan, change-driven (portable).  Each rule's postfix code is turned
once, when the evaluator is made, into a Python function that computes what
the stack machine of the format would (see ``rules_source``).
"""

from controller.core import modes
from controller.core.errors import TableError
from controller.core.table import (
    BINARY_OPS, COUNT_CAP, FLAG_CLEAR_WHEN, FLAG_LATCH, GUARD, MEM_WORDS, OPERANDS, OP_ABS, OP_ADD, OP_AND,
    OP_AND_SIG, OP_BIT, OP_CHANGED, OP_CONST, OP_COUNT, OP_DIV, OP_EQ, OP_EQ_K, OP_FELL, OP_GE, OP_GE_K,
    OP_GT, OP_GT_K, OP_HELD, OP_LE, OP_LE_K, OP_LT, OP_LT_K, OP_MAX, OP_MIN, OP_MODE, OP_MOVED, OP_MUL,
    OP_NE, OP_NE_K, OP_NEG, OP_NOT, OP_NOT_SIG, OP_OR, OP_RATE, OP_ROSE, OP_SIG, OP_SIG_BIT,
    OP_SIG_EQ_K, OP_SIG_GE_K, OP_SIG_GT_K, OP_SIG_LE_K, OP_SIG_LT_K, OP_SIG_NE_K, OP_SUB, OP_WITHIN,
    PUSH_OPS, RATE_SAMPLES, SIGNAL_OPS, TICK_HALF, TICK_MASK, Table, rate_step, table_bytes, cell_of, tests_moved,
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
# group_next of a group whose samplers all sleep: nothing to look at until
# one wakes (``_wake``), so a walk of the groups that are due skips it.
_ALL_ASLEEP = -2
# The most signals ``_changes`` looks at alone (more: look at every one).
_HOT = 6


class Evaluator:
    """Runs a Table every scan; holds every rule's state.

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

    def __init__(self, table, every_scan=False):
        t = self.table = table
        self.every_scan = every_scan
        self.mem = [0] * table.mem
        self.active = [0] * table.size
        self.wakes = {}      # rule index -> wake tick, for wakes after their rule's scan
        self.next_wake = -1  # the earliest of those (-1: none), so a quiet scan skips them
        self.soon = {}       # rule index -> the tick of its scan, for wakes at once (an edge, a change)
        self.soon_late = 0   # 1: soon may hold a wake from before the previous scan (``_due``)
        self.next_sample = -1  # the earliest sample of the table's samplers (-1: none)
        self.group_next = [-1] * len(table.groups)   # the same per group of samplers (-1: look; _ALL_ASLEEP)
        self.last = [0] * table.image_size
        self.seen = None    # the previous scan's image, copied (None: not known)
        self.hot = ()       # the watched signals the last look at every one found changed (``_changes``)
        # The rules that need a signal's value, and the rules that read the
        # mode, as dicts {rule: 1}: ``_due`` adds each to its own in one call.
        self.needs = dict((i, dict((r, 1) for r in table.readers[i][0])) for i in table.readers)
        self.tested = dict((i, table.readers[i][1]) for i in table.readers)
        self.views = {}     # signal -> the rules of ``plans`` that read it, as a dict {rule: 1}
        self.mode_due = dict((r, 1) for r in table.mode_rules)
        # Per tested signal, the cell [lo, hi) around its last value in which
        # no test of it changes (table.cell_of; empty: not known yet).
        self.cell_lo = [1] * table.image_size
        self.cell_hi = [0] * table.image_size
        self.asleep = {}      # mem offset of a sleeping sampler -> the sampler
        self.sleep_until = -1  # the tick by which the sleepers are brought up to date
        self.last_mbit = -1
        self.guard = 0
        self.mode = -1      # the mode of the previous scan (-1: none) and its bits, as scan() made them
        self.mbit = 0
        self.primed = 0
        self.prev_now = 0   # the previous scan's tick
        self.cur = [0, 0]   # this scan's mode bits and the previous scan's tick, as the rules read them
        self.wk = [-1]      # the running rule's wake (-1: none), as its ops find it
        # (mem offset, the offset it repeats, words) of each stateful op that
        # repeats one computed before it in its rule (``_Shared``): rule_state()
        # copies its state, which it would hold had it run.
        self.copies = []
        names = {"mem": self.mem, "cur": self.cur, "wk": self.wk, "ev": self, "_count": _count,
                 "TICK_HALF": TICK_HALF, "TICK_MASK": TICK_MASK}
        # One rule's source at a time: a small board's heap holds one rule's text and code, not the table's.
        run = []
        # Rules that need not run at each change of a signal they watch in
        # pairs (``_quiet_plan``): rule -> (x, pairs, withins, views function or None).
        self.plans = {}
        quiet = {}    # signal -> the rules that read it only in pairs and views
        plan_views = {}
        for r in range(t.size):
            src = _RuleSource(t, self.copies, r)
            exec("\n".join(src.lines) + "\n", names)
            run.append(names["rule_{}".format(r)])
            if src.plan is not None:
                plan_views[r] = src.views
                self.plans[r] = (src.plan[0], tuple(src.pairs), tuple(src.withins), names.get("views_{}".format(r)),
                                 src.plan[1])
                for i in src.plan[1]:
                    quiet.setdefault(i, []).append(r)
        self.run = tuple(run)
        # The rules of ``plans`` by the signal of their pairs and its guard, with
        # the views of them all: a group whose pairs all stay true is left to
        # change alone (``lazy``), its rules' writes put off (``_put``).
        groups = {}
        for r in self.plans:
            key = (self.plans[r][0], t.guards[self.plans[r][1][0][1]])
            groups.setdefault(key, []).append(r)
        self.quiet_groups = []
        for key in groups:
            views = []
            for r in groups[key]:
                for view in plan_views[r]:
                    if view not in views:
                        views.append(view)
            fn = None
            if views:
                exec("def group_views(im):\n    return ({},)\n".format(", ".join(views)), names)
                fn = names.pop("group_views")
            ms = min(self.plans[r][1][0][2] for r in groups[key])
            # Its other signals, each with the rules that read it: their change runs those.
            others = {}
            for r in groups[key]:
                for i in self.plans[r][4]:
                    if i != key[0]:
                        others.setdefault(i, []).append(r)
            others = tuple((i, tuple(others[i])) for i in sorted(others))
            self.quiet_groups.append((key[0], tuple(groups[key]), fn, ms, others))
        # group index -> [tick of its signal's last change, its value then, its views, its
        # rules' earliest timer (-1 none), the tick of their last run, 1 if the pairs are true,
        # the values of its other signals, {rule: the tick of a later run, made by one of those}]
        self.lazy = {}
        self.lazy_rules = {}  # rule of a lazy group -> the group's index
        for i in quiet:   # such a rule is looked at (``_quiet``), not run, when the signal changes
            rules = quiet[i]
            if i in self.needs:
                for r in rules:
                    self.needs[i].pop(r, None)
            self.tested[i] = tuple(x for x in self.tested[i] if x[0] not in rules)
            self.views[i] = dict((r, 1) for r in rules)
        self.look = {}     # the rules of ``plans`` a change of their signals concerns this scan
        self.streak = {}   # rule of ``plans`` whose pairs were true at the previous scan -> its tick
        self.timers = {}   # rule of ``plans`` -> the wake of its ops but its pairs, from its last run
        self.seen_views = {}   # rule of ``plans`` -> its views' results at its last run

    def rule_state(self):
        """Every rule's state (timers, windows, counters, rate samples, latches, the
        last values seen), plain integers and lists: an evidence window starts with
        it so a replay reaches the decisions the gateway made (docs/trace.md)."""
        self._wake_all(self.prev_now)   # the samples a sleeping sampler skipped, as taken
        for k in self.lazy:   # and the writes a lazy group put off, as made
            self._put(self.quiet_groups[k][1], self.lazy[k])
        m = self.mem
        for o, first, words in self.copies:
            for k in range(words):
                m[o + k] = m[first + k]
        wakes = dict(self.wakes)
        wakes.update(self.soon)
        wakes.update(self.streak)   # (their pairs' changed() fired: a wake at once, as they run)
        for k in self.lazy:
            st = self.lazy[k]
            for r in self.quiet_groups[k][1]:
                wakes[r] = st[0] if st[5] else self._pair_wake(r, st[0])
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
            self.soon_late = 0
            self.last_mbit, self.guard, self.primed = snap["mbit"], snap["guard"], snap["primed"]
            self.mode = -1   # the bits again from the guard restored
            self.next_sample, self.prev_now = snap["sample"], snap["prev"]
        except (KeyError, TypeError, IndexError) as e:
            raise TableError("start: not a rules' state ({!r} missing or malformed)".format(e.args[0] if e.args else e))
        m = self.mem   # filled in place: the rules' functions hold this list
        for k in range(len(m)):
            m[k] = mem[k]
        self.active = list(active)
        self.last = list(last)
        self.seen = None
        self.hot = ()
        for r in self.lazy_rules:   # (their writes are in the state restored)
            for i in self.plans[r][4]:
                self.views[i][r] = 1
        self.look = {}
        self.streak = {}
        self.timers = {}
        self.seen_views = {}
        self.lazy = {}
        self.lazy_rules = {}
        self.cell_lo = [1] * t.image_size
        self.cell_hi = [0] * t.image_size
        self.asleep = {}
        self.sleep_until = -1
        self.next_wake = self._earliest_wake()
        self.group_next = [-1] * len(t.groups)   # each group looks at its rings' schedules again

    def _due(self, image, mbit, now, quiet=1):
        """The rules to run this scan, a dict {rule: 1} (None: none); with
        ``quiet``, the rules of ``plans`` that this scan leaves as they were
        are not among them (``_quiet``)."""
        # Tick differences inlined, as ticks.diff: this runs every scan.
        t = self.table
        asleep = self.asleep
        prev = self.prev_now
        if asleep and (((now - prev + TICK_HALF) & TICK_MASK) - TICK_HALF >= t.min_step
                       or ((now - self.sleep_until + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0):
            self._wake_all(prev)
        due = {}
        # A whole image compared at once costs less than a look at each signal
        # the rules watch, and many scans change none.
        if image != self.seen:
            self._changes(image, due, prev)
        if mbit != self.last_mbit:
            self.last_mbit = mbit
            due.update(self.mode_due)
        soon = self.soon
        if soon:
            if self.soon_late or ((now - prev + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                late = 0
                for r in soon:
                    if ((now - soon[r] + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
                        due[r] = 1
                    else:
                        late = 1
                self.soon_late = late
            else:
                # Every wake in soon is of the previous scan: one not due at a
                # scan stays (soon_late), and every one due ran then, its wake
                # dropped or made that scan's.  So all are due now.
                due.update(soon)
        w = self.next_wake
        if w >= 0 and ((now - w + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
            wakes = self.wakes
            for r in wakes:
                if ((now - wakes[r] + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
                    due[r] = 1
        w = self.next_sample
        if w >= 0 and ((now - w + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
            self._sample_rates(image, now, due)
        if self.lazy:
            self._lazy(image, now, due, quiet)
        if self.look or self.streak:
            if quiet:
                self._quiet(image, now, due)
            self.look = {}
        if not due:
            return None
        # In no set order: each rule's state is its own (the samplers'
        # schedules take the earliest of the wakes, whatever their order),
        # so only scan()'s changes are sorted, when more than one.
        return due

    def _changes(self, image, due, prev):
        """Mark due the rules a change of a signal they watch concerns; wake
        the samplers of changed signals.  Most scans change the signals the
        scan before changed (the vibration readings): when the image differs
        from the previous one in those alone (``hot``, a few), only they are
        looked at, else every watched signal is."""
        t = self.table
        seen = self.seen
        hot = self.hot
        every = 1
        if seen is not None and hot:
            for i in hot:
                seen[i] = image[i]
            every = image != seen
        if every:
            self.seen = list(image)
            signals = t.watch
            found = []
        else:
            signals = hot   # seen is the image now
        asleep = self.asleep
        last = self.last
        readers = self.tested
        needs = self.needs
        views = self.views
        wakers = t.wakers
        lo = self.cell_lo
        hi = self.cell_hi
        for i in signals:
            if image[i] != last[i]:
                if every:
                    found.append(i)
                old = last[i]
                v = last[i] = image[i]
                if asleep and i in wakers:
                    self._wake(wakers[i], prev)
                due.update(needs[i])
                if i in views:
                    self.look.update(views[i])
                tested = readers[i]
                # A rule that only tests the signal sees no change unless a
                # test does, and none does while it stays in its cell.
                if tested and not lo[i] <= v < hi[i]:
                    for r, tests in tested:
                        if tests_moved(tests, old, v):
                            due[r] = 1
                    lo[i], hi[i] = cell_of(t.tests_of[i], v)
        if every:
            self.hot = tuple(found) if len(found) <= _HOT else ()

    def _quiet(self, image, now, due):
        """Of the rules of ``plans`` that a change of their signals concerns
        (``look``) or whose pairs were true at the previous scan (``streak``),
        and that nothing else makes due, mark due those whose run could
        change their value or wake; for the others, write what their run
        would: a pair that stays true takes this scan's tick and value, one
        that turns false keeps the previous scan's tick and wakes its rule
        as its within() would, a within() that stays true takes the tick."""
        look = self.look
        streak = self.streak
        m = self.mem
        plans = self.plans
        timers = self.timers
        if streak:
            rules = dict(streak)   # (streak changes as they are looked at)
            rules.update(look)
        else:
            rules = look
        lazy = self.lazy_rules
        for r in rules:
            if r in due or r in lazy:
                continue
            t = timers.get(r, -2)
            views = plans[r][3]
            if t == -2 or (t >= 0 and ((now - t + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0) \
                    or (views is not None and r in look and views(image) != self.seen_views[r]):
                due[r] = 1   # (-2: not run since the start: its wakes are not known)
                continue
            x, pairs, withins, _v, _s = plans[r]
            o, w, ms = pairs[0]
            if not m[o + 1]:
                due[r] = 1   # its device offline, or just back: the run resets or starts its pairs
                continue
            v = image[x]
            if v != m[o]:
                if r not in streak:
                    if not m[w + 1]:
                        due[r] = 1   # the pairs turn true
                        continue
                    self._unwake(r)
                for o, w, ms in pairs:
                    m[o] = v
                    m[w] = now
                    m[w + 2] = 1
                streak[r] = now
            elif r in streak:
                prev = self.prev_now
                if ((now - prev + TICK_HALF) & TICK_MASK) - TICK_HALF > ms:
                    due[r] = 1   # the pairs turn false
                    continue
                del streak[r]
                for o, w, ms in pairs:
                    m[w] = prev
                    m[w + 2] = 0
                    d = (prev + ms + 1) & TICK_MASK
                    if t < 0 or ((d - t + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                        t = d
                self._wake_at(r, t)
            for o in withins:
                if m[o + 2]:
                    m[o] = now

    def _lazy(self, image, now, due, quiet):
        """A lazy group stays so while none of its rules is due, no timer of
        theirs comes, its views keep their results and its signal last
        changed within the shortest window of its pairs: they stay true (the
        writes of this scan's runs are put off: ``_put``).  Else its rules
        are in ``streak`` or ``wakes`` again, as their runs left them, for
        ``_quiet`` or their runs."""
        lazy = self.lazy
        groups = self.quiet_groups
        ended = None
        for k in lazy:
            st = lazy[k]
            x, rules, views, ms, others = groups[k]
            go = quiet
            if due:
                for r in rules:
                    if r in due:
                        go = 0
                        break
            t = st[3]
            if go and (t < 0 or ((now - t + TICK_HALF) & TICK_MASK) - TICK_HALF < 0) \
                    and (views is None or views(image) == st[2]):
                if others:
                    self._others(others, st, image, now)
                if image[x] != st[1]:   # changed: the pairs' changed() fires, its rules run
                    st[0] = st[4] = now
                    st[1] = image[x]
                    st[5] = 1
                    if st[7]:
                        st[7] = {}
                    continue
                if ((now - st[0] + TICK_HALF) & TICK_MASK) - TICK_HALF <= ms:
                    if st[5]:   # the run after a change: the pairs' changed() is false again
                        st[4] = now
                        st[5] = 0
                        if st[7]:
                            st[7] = {}
                    continue
            if ended is None:
                ended = []
            ended.append(k)
        if ended is not None:
            for k in ended:
                self._wake_group(k, now, due)

    def _others(self, others, st, image, now):
        """Note the runs a change of a lazy group's other signals makes."""
        values = st[6]
        for n in range(len(others)):
            v = image[others[n][0]]
            if v != values[n]:
                values[n] = v
                for r in others[n][1]:
                    st[7][r] = now

    def _wake_group(self, k, now, due):
        """End lazy group ``k``: its writes made, its rules in ``streak`` or
        ``wakes`` as their runs left them, due if that wake has come, else
        looked at this scan (``_quiet``)."""
        st = self.lazy.pop(k)
        x, rules, _v, _ms, others = self.quiet_groups[k]
        self._put(rules, st)
        views = self.views
        moved = {}   # the rules a change of their signals concerns this scan
        if self.last[x] != st[1]:   # (``last`` is this scan's image: ``_changes``)
            moved = dict((r, 1) for r in rules)
        for n in range(len(others)):
            if self.last[others[n][0]] != st[6][n]:
                for r in others[n][1]:
                    moved[r] = 1
        self.look.update(moved)
        for r in rules:
            del self.lazy_rules[r]
            for i in self.plans[r][4]:
                views[i][r] = 1
            if st[5]:
                self.streak[r] = st[0]
            else:
                t = self._pair_wake(r, st[0])
                self._wake_at(r, t)
                if ((now - t + TICK_HALF) & TICK_MASK) - TICK_HALF >= 0:
                    due[r] = 1

    def _pair_wake(self, r, changed):
        """The wake of rule ``r`` whose pairs are false, last true at tick ``changed``."""
        d = (changed + self.plans[r][1][0][2] + 1) & TICK_MASK
        t = self.timers[r]
        return d if t < 0 or ((d - t + TICK_HALF) & TICK_MASK) - TICK_HALF < 0 else t

    def _wake_at(self, r, t):
        self.wakes[r] = t
        if self.next_wake < 0 or ((t - self.next_wake + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
            self.next_wake = t

    def _put(self, rules, st):
        """Make the writes a lazy group put off: those of its rules' runs at
        the last scan its signal changed (``st[0]``, with ``st[1]``), and at
        their last run (``st[4]``: the scan after, if it came)."""
        m = self.mem
        changed = st[0]
        v = st[1]
        on = st[5]
        for r in rules:
            x, pairs, withins, _v, _s = self.plans[r]
            for o, w, ms in pairs:
                m[o] = v
                m[w] = changed
                m[w + 2] = on
            ran = st[7].get(r, st[4])
            for o in withins:
                if m[o + 2]:
                    m[o] = ran

    def _settle(self, image, now):
        """Make lazy each group whose rules all are in ``streak`` from this scan."""
        streak = self.streak
        groups = self.quiet_groups
        for k in range(len(groups)):
            if k in self.lazy:
                continue
            x, rules, views, ms, others = groups[k]
            t = -1
            for r in rules:
                if streak.get(r, -1) != now:
                    break
                d = self.timers[r]
                if d >= 0 and (t < 0 or ((d - t + TICK_HALF) & TICK_MASK) - TICK_HALF < 0):
                    t = d
            else:
                self.lazy[k] = [now, image[x], views(image) if views is not None else None, t, now, 1,
                                [image[i] for i, _r in others], {}]
                for r in rules:
                    del streak[r]
                    self.lazy_rules[r] = k
                    for i in self.plans[r][4]:
                        self.views[i].pop(r)   # (``_lazy`` looks at the group's signals)

    def _unwake(self, r):
        """Take rule ``r``'s wake out of ``wakes``."""
        wakes = self.wakes
        if r in wakes and wakes.pop(r) == self.next_wake:
            self.next_wake = self._earliest_wake()

    def _ran(self, r, image, now, wake):
        """After a run of rule ``r`` of ``plans`` whose ops but its pairs
        left ``wake``: the rule's wake as it runs (-1 none; ``now`` an edge),
        its pairs' own kept here: true, the rule is in ``streak`` (its next
        scan looks at it); else their within()s' wakes join ``wake``."""
        self.timers[r] = wake
        x, pairs, withins, views, _s = self.plans[r]
        if views is not None:
            self.seen_views[r] = views(image)
        m = self.mem
        if m[pairs[0][1] + 2]:
            self.streak[r] = now
            return now if wake == now else -1
        self.streak.pop(r, None)
        for o, w, ms in pairs:
            if m[w + 1]:
                d = (m[w] + ms + 1) & TICK_MASK
                if wake < 0 or ((d - wake + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                    wake = d
        return wake

    def _sample_rates(self, image, now, due):
        """Take the samplers' samples that are due, as their rate() ops would
        when their rules ran this scan; a rule whose rate's value changes is
        due (its signal has not changed, or it is due already).  A sampler
        whose ring then holds one value, its signal's, sleeps: its rate stays
        0 and every sample it skips would write that value again, so a wake
        (``_wake``) only moves its schedule on."""
        m = self.mem
        first = -1
        closest = -TICK_HALF - 1   # first's tick difference from now
        groups = self.table.groups
        group_next = self.group_next
        asleep = self.asleep
        full = RATE_SAMPLES + 1
        # Tick differences inlined (as ticks.diff): this loop runs about every
        # other scan of `cabguard eval`; it walks only the groups that are due.
        # Every next sample it leaves is ahead of now, by less than a half
        # tick period: the earliest is the one the least ahead.
        for k in range(len(groups)):
            gn = group_next[k]
            if gn >= 0:
                behind = ((now - gn + TICK_HALF) & TICK_MASK) - TICK_HALF
                if behind < 0:
                    if behind > closest:
                        closest = behind
                        first = gn
                    continue
            elif gn != -1:
                continue   # _ALL_ASLEEP
            gn = _ALL_ASLEEP
            for sampler in groups[k]:
                r, o, step, i, g = sampler
                if o in asleep:
                    continue
                if g >= 0 and not image[g]:
                    if gn == _ALL_ASLEEP:
                        gn = -1   # its device is offline: no samples (its rule reset the ring)
                    continue
                if ((now - m[o] + TICK_HALF) & TICK_MASK) - TICK_HALF >= step:
                    # _rate_sample written out (it runs about once a scan): the
                    # value in the ring, its position and schedule moved on.
                    v = image[i]
                    taken = m[o + 1]
                    pos = m[o + 2]
                    before = v - m[o + 3 + pos] if taken == full else 0
                    m[o + 3 + pos] = v
                    pos = m[o + 2] = pos + 1 if pos < RATE_SAMPLES else 0
                    nominal = (m[o] + step) & TICK_MASK
                    if taken == 0 or ((now - nominal + TICK_HALF) & TICK_MASK) - TICK_HALF >= step:
                        nominal = now   # scans fell behind the schedule: restart it here
                    m[o] = nominal
                    if taken < full:
                        taken = m[o + 1] = taken + 1
                    if taken == full:
                        after = v - m[o + 3 + pos]
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
            if gn >= 0:
                behind = ((now - gn + TICK_HALF) & TICK_MASK) - TICK_HALF
                if behind > closest:
                    closest = behind
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
            gn = group_next[k]
            if gn == _ALL_ASLEEP or (gn >= 0 and ((nxt - gn + TICK_HALF) & TICK_MASK) - TICK_HALF < 0):
                group_next[k] = nxt
            if self.next_sample < 0 or ((nxt - self.next_sample + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                self.next_sample = nxt

    def _wake_all(self, upto):
        if self.asleep:
            self._wake(list(self.asleep.values()), upto)

    def _earliest_wake(self):
        """The wake that comes first (ticks wrap: compare by their difference,
        inlined as ticks.diff: this runs on about one scan in five)."""
        first = -1
        for w in self.wakes.values():
            if first < 0 or ((w - first + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                first = w
        return first

    def scan(self, image, now, mode):
        """Evaluate the rules; an iterable of (index, severity, actions, raised)."""
        if mode != self.mode:   # (the guard, and so the bits, change only with the mode)
            if mode in _GUARD_ON:
                self.guard = 1
            elif mode in _GUARD_OFF:
                self.guard = 0
            self.mode = mode
            self.mbit = (1 << mode) | (GUARD if self.guard else 0)
        mbit = self.mbit
        t = self.table
        if self.primed and not self.every_scan:
            due = self._due(image, mbit, now, 1)
            if due is None:
                if self.streak:
                    self._settle(image, now)
                self.prev_now = now
                return _NONE
        else:
            self._due(image, mbit, now, 0)
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
        plans = self.plans
        first = self.next_wake
        stale = 0   # 1: the earliest wake went away, look again
        changes = None
        for r in due:
            v = run[r](image, now)
            # A rule's wake is in soon or in wakes, never both (or in streak: ``_ran``).
            wake = wk[0]
            if r in plans:
                wake = self._ran(r, image, now, wake)
            if wake == now:
                soon[r] = now   # an edge or change: looked at next scan
                if r in wakes and wakes.pop(r) == first:
                    stale = 1
            else:
                if r in soon:
                    del soon[r]
                elif r in wakes and wakes.pop(r) == first:
                    stale = 1
                if wake >= 0:
                    wakes[r] = wake
                    if first < 0 or ((wake - first + TICK_HALF) & TICK_MASK) - TICK_HALF < 0:
                        first = wake
            if not active[r]:
                # v is 0 when neither the condition nor a clear_when holds (most runs)
                if not v or (flags[r] & FLAG_CLEAR_WHEN and not v & 1):
                    continue
                active[r] = 1
                raised = 1
            else:
                f = flags[r]
                if f & FLAG_CLEAR_WHEN:
                    c = v & 2
                    w = v & 1
                else:
                    c = 0
                    w = v
                if f & FLAG_LATCH:
                    if w or (mode != _DISARMED and mode != _MAINTENANCE):   # reset by disarmed, maintenance
                        continue
                elif not ((c and not w) if f & FLAG_CLEAR_WHEN else not w):
                    continue
                active[r] = 0
                raised = 0
            if changes is None:
                changes = []
            changes.append((r, t.severities[r], t.actions[r], raised))
        self.next_wake = self._earliest_wake() if stale else first
        if self.streak and self.primed and not self.every_scan:
            self._settle(image, now)
        if changes is not None and len(changes) > 1:
            changes.sort()   # in rule order (their indices differ)
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


def evaluator_from_header(head, catalog_digest, image_size):
    """The evaluator for a trace whose header carries a table under "rules",
    or None; TableError if the table was compiled for another catalog."""
    data = head.get("rules")
    if data is None:
        return None
    if not isinstance(data, dict) or table_bytes(data.get("catalog"), "catalog") != catalog_digest:
        raise TableError("the trace's rule table was compiled for another signal catalog")
    return Evaluator(Table(data, image_size))


# Each rule's code is turned once, when the evaluator is made, into one
# straight-line Python function (source text compiled with exec: a tree
# of closures spends more on its calls than on its ops).  ``rules_source``
# gives that text for audit (`cabguard rules compile --emit-python`).
# Every op with state runs on every run of its rule, in code order (its
# state stays current): each is a block of statements that leaves its
# value in a local ``vN``.  The ops without state are expressions over
# those, so Python's ``and``/``or`` may skip one whose result is decided:
# it would give the same value and change nothing.  Ops keep their state
# in ``mem``; the earliest tick at which time alone may change one of them
# goes in the local ``w``, the rule's wake (``wk[0]`` when it returns).
#
# A term with state written twice in one rule (sensor_fault_at_arming's
# fault, three times) is two copies of the same ops on the same inputs,
# run on the same scans, from the same start: they hold the same state and
# give the same value at every run.  So the first copy in code order (the
# one that runs first) is computed, and the others read its value
# (``_Shared``).

def rules_source(table):
    """The Python source the evaluator runs for ``table`` (a ``Table``): one
    function per rule, ``rule_<index>(im, now)``, and ``RULES``, the tuple of
    them.  It reads the globals ``mem`` (the ops' state), ``cur`` (this
    scan's mode bits, the previous scan's tick), ``wk`` (the wake it
    leaves), ``ev`` (the evaluator, for rate()'s rings and samplers),
    ``_count``, ``TICK_HALF`` and ``TICK_MASK``.  The evaluator compiles
    each function alone, from the same text."""
    copies = []
    return ("# The rules as the evaluator runs them (controller/core/evaluator.py, rules_source).\n"
            + "".join(_rule_source(table, copies, r) for r in range(table.size))
            + "\n\nRULES = ({})\n".format("".join("rule_{}, ".format(r) for r in range(table.size))))


def _rule_source(table, copies, r):
    """The source of rule ``r``'s function; the state copies of its
    repeated terms are added to ``copies``."""
    return "\n".join(_RuleSource(table, copies, r).lines) + "\n"


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


# A rule that reads a signal x only through ``within(changed(x), W)`` (its
# *pairs*) and through comparisons of signals (its *views*: ``x > y + 10``,
# ``y == 0``) need not run at every change of x: while x keeps changing, or
# stops for less than W, every pair stays true and every view keeps its
# result, so the run would only write the ticks and values its pairs and
# withins keep.  The evaluator writes those itself (``Evaluator._quiet``).
_ARITH_OPS = (OP_SIG, OP_CONST, OP_ADD, OP_SUB, OP_MUL, OP_NEG, OP_ABS)


def _quiet_plan(guards, roots):
    """(x, the signals the rule reads only in pairs and views, its views) for
    a rule whose pairs all watch the one signal x, under one guard, with no
    count(), rate() or moved() and no changed() outside a pair; else None."""
    reads = {}      # signal -> 1 while read only in pairs and views, 0 once read otherwise
    views = []
    pairs = []
    twins = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        op, args, kids = node
        if op in MEM_WORDS:
            if op == OP_COUNT or op == OP_RATE or op == OP_MOVED or op == OP_CHANGED:
                return None
            for g in guards[args[0]] or ():
                twins[g] = 1
        if op in _COMPARE and _signals_only(node):
            views.append(node)
            for i in _signals_of(node):
                reads[i] = reads.get(i, 1)
            continue
        if op == OP_WITHIN and kids[0][0] == OP_CHANGED and kids[0][2][0][0] == OP_SIG:
            changed = kids[0]
            if guards[changed[1][0]] != guards[args[0]]:
                return None
            pairs.append((changed[2][0][1][0], args[1]))
            for g in guards[args[0]] or ():
                twins[g] = 1
            reads[pairs[-1][0]] = reads.get(pairs[-1][0], 1)
            continue
        if op in SIGNAL_OPS:
            reads[args[0]] = 0
        stack.extend(kids)
    if not pairs or len(set(pairs)) != 1:
        return None   # (one window: a rule's pairs are then one term, computed once: ``_Shared``)
    x = pairs[0][0]
    seen = [i for i in reads if reads[i] and i not in twins]
    if x not in seen:
        return None
    views = [v for v in views if any(i in seen for i in _signals_of(v))]
    return x, tuple(sorted(seen)), views


def _signals_only(node):
    """True if ``node`` is a comparison over signals, constants and arithmetic alone."""
    for kid in node[2]:
        if kid[0] not in _ARITH_OPS and not (kid[0] in _COMPARE and not kid[2]) or not _signals_only(kid):
            return False
    return True


def _signals_of(node):
    out = [node[1][0]] if node[0] in SIGNAL_OPS else []
    for kid in node[2]:
        out += _signals_of(kid)
    return out


def _pure(node):
    """True if ``node`` holds no stateful op: skipping it changes nothing."""
    if node[0] in MEM_WORDS:
        return False
    for kid in node[2]:
        if not _pure(kid):
            return False
    return True


class _Shared:
    """The terms with state that one rule repeats, found before its source
    is written: the same walk in code order as ``_RuleSource``'s, which
    computes the first copy of each (its value kept in a local) and none of
    the copies after it (each reads that local)."""

    def __init__(self, guards, copies, roots):
        self.guards = guards
        self.copies = copies
        self.shapes = {}     # tree -> its shape, the tree without its mem offsets
        self.repeats = {}    # shape -> copies met (a copy's insides are not walked)
        self.first = {}      # shape -> (the first copy, the local holding its value)
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

    def keep(self, node, name):
        """``name`` holds the value of the first copy of ``node``."""
        self.first[self.shape(node)] = (node, name)

    def reader(self, node):
        """A later copy of a term computed already: the local holding its
        value, its state noted for rule_state() (``Evaluator.copies``);
        None if it is the first."""
        found = self.first.get(self.shape(node))
        if found is None:
            return None
        for o, first in zip(_offsets(node), _offsets(found[0])):
            # The first copy may hold a later copy of a smaller term: its op's state is that term's first copy's.
            source = self.source.get(first[0], first[0])
            if o[0] != source:
                self.source[o[0]] = source
                self.copies.append((o[0], source, o[1]))
        return found[1]


def _offsets(node):
    """(mem offset, words) of each stateful op of ``node``, in code order."""
    out = []
    for kid in node[2]:
        out += _offsets(kid)
    if node[0] in MEM_WORDS:
        out.append((node[1][0], MEM_WORDS[node[0]]))
    return out


# Python's spelling of the comparisons, by opcode.
_COMPARE = {
    OP_LT: "<", OP_LE: "<=", OP_GT: ">", OP_GE: ">=", OP_EQ: "==", OP_NE: "!=",
    OP_GT_K: ">", OP_GE_K: ">=", OP_LT_K: "<", OP_LE_K: "<=", OP_EQ_K: "==", OP_NE_K: "!=",
    OP_SIG_GT_K: ">", OP_SIG_GE_K: ">=", OP_SIG_LT_K: "<", OP_SIG_LE_K: "<=", OP_SIG_EQ_K: "==",
    OP_SIG_NE_K: "!=",
}
_ARITH = {OP_ADD: "+", OP_SUB: "-", OP_MUL: "*"}
# A tick difference (ticks.diff) written out: a call would cost more.
_DIFF = "((({} - {} + TICK_HALF) & TICK_MASK) - TICK_HALF)"


class _RuleSource:
    """The source lines of rule ``r``'s function.

    ``expr(node, number)`` is a node's value as a Python expression: with
    ``number`` its exact integer (a comparison 1 or 0, as the table's
    ops give it), else only its truth (``a and b`` may be ``b``'s value).
    A stateful op's block is added to ``body`` first: an expression only
    reads the locals it left."""

    def __init__(self, table, copies, r):
        self.guards = table.guards
        self.sampled = table.sampled
        self.body = []
        self.n = 0          # locals v0, v1, ... so far
        self.timed = 0      # 1 once an op may set a wake
        self.open = None    # (guard, index of its else line) of the guarded block the body ends with
        roots = _tree(table.codes[r])
        self.shared = _Shared(table.guards, copies, roots)
        self.plan = _quiet_plan(table.guards, roots)
        self.pair = None    # (changed's mem offset) while a pair's changed() is written
        self.pairs = []     # (changed's mem offset, within's, window ms) of each pair written
        self.withins = []   # mem offsets of the other within()s written
        values = [self.expr(root, 0) for root in roots]
        # The lists it reads most are bound as defaults: a local costs less than a
        # global.  The id as repr(): one line whatever it holds (explain's terms span lines).
        head = ["", "", "def rule_{}(im, now, mem=mem, cur=cur, wk=wk):".format(r), "    # {!r}".format(table.ids[r])]
        if self.timed:
            head.append("    w = -1")
        if len(values) == 1:
            ret = "    return " + values[0]
        else:   # clear_when: bit 0 for when, bit 1 for clear_when
            ret = "    return (1 if {} else 0) | (2 if {} else 0)".format(values[0], values[1])
        self.lines = head + self.body + ["    wk[0] = {}".format("w" if self.timed else -1), ret]
        self.views = []
        if self.plan is not None and self.plan[2]:
            # Its views' results, for the evaluator to see whether a change of their signals changes one.
            for node in self.plan[2]:
                view = self.pure(node[0], node[1], node[2], 0)
                if view not in self.views:   # (a term written twice, as sensor_fault_at_arming's)
                    self.views.append(view)
            self.lines += ["", "", "def views_{}(im):".format(r), "    return ({},)".format(", ".join(self.views))]

    def put(self, line, depth=0):
        if depth == 0:
            self.open = None   # a line after a guarded block ends it
        self.body.append("    " * (depth + 1) + line)

    def local(self):
        v = "v{}".format(self.n)
        self.n += 1
        return v

    def wake(self, due_at, depth):
        """Make ``due_at`` the rule's wake if it comes first."""
        self.timed = 1
        self.put("d = " + due_at, depth)
        self.put("if w < 0 or {} < 0:".format(_DIFF.format("d", "w")), depth)
        self.put("    w = d", depth)

    def expr(self, node, number):
        shared = self.shared
        repeated = shared.repeated(node)
        if repeated:
            name = shared.reader(node)
            if name is not None:
                return name
        op, args, kids = node
        if op in MEM_WORDS:
            v = self.stateful(node)
        elif repeated:   # a term over stateful ops, computed once
            x = self.pure(op, args, kids, 1)
            v = self.local()
            self.put("{} = {}".format(v, x))
        else:
            return self.pure(op, args, kids, number)
        if repeated:
            shared.keep(node, v)
        return v

    def pure(self, op, args, kids, number):
        """An op without state (its operands may have some) as an expression."""
        if not kids:
            return self.leaf(op, args, number)
        if op == OP_AND or op == OP_OR:
            a = self.expr(kids[0], 0)
            b = self.expr(kids[1], 0)
            return _truth("({} {} {})".format(a, "and" if op == OP_AND else "or", b), number)
        if op in _COMPARE:
            if len(kids) == 2:
                return _truth("({} {} {})".format(self.expr(kids[0], 1), _COMPARE[op], self.expr(kids[1], 1)), number)
            return _truth("({} {} {})".format(self.expr(kids[0], 1), _COMPARE[op], args[0]), number)
        if op in _ARITH:
            return "({} {} {})".format(self.expr(kids[0], 1), _ARITH[op], self.expr(kids[1], 1))
        if op == OP_DIV or op == OP_MIN or op == OP_MAX:
            a = self.local()
            self.put("{} = {}".format(a, self.expr(kids[0], 1)))
            b = self.local()
            self.put("{} = {}".format(b, self.expr(kids[1], 1)))
            if op == OP_DIV:
                return "({} // {} if {} else 0)".format(a, b, b)   # by zero gives 0
            return "({} if {} {} {} else {})".format(a, a, "<" if op == OP_MIN else ">", b, b)
        if op == OP_NOT:
            x = self.expr(kids[0], 0)
            return "(0 if {} else 1)".format(x) if number else "(not {})".format(x)
        if op == OP_NEG:
            return "(-{})".format(self.expr(kids[0], 1))
        if op == OP_ABS:
            return "abs({})".format(self.expr(kids[0], 1))
        if op == OP_BIT:
            return "(({} >> {}) & 1)".format(self.expr(kids[0], 1), args[0])
        # OP_AND_SIG, OP_OR_SIG
        x = self.expr(kids[0], 0)
        return _truth("({} {} im[{}])".format(x, "and" if op == OP_AND_SIG else "or", args[0]), number)

    def leaf(self, op, args, number):
        i = args[0]
        if op == OP_SIG:
            return "im[{}]".format(i)
        if op == OP_CONST:
            return "({})".format(i) if i < 0 else str(i)
        if op == OP_MODE:
            return _truth("(cur[0] & {})".format(i), number)
        if op == OP_NOT_SIG:
            return "(0 if im[{}] else 1)".format(i) if number else "(not im[{}])".format(i)
        if op == OP_SIG_BIT:
            return "((im[{}] >> {}) & 1)".format(i, args[1])
        return _truth("(im[{}] {} {})".format(i, _COMPARE[op], args[1]), number)

    def stateful(self, node):
        """The block of a stateful op; the local holding its value."""
        op, args, kids = node
        o = args[0]
        g = self.guards[o]
        # Its guard: the online twins of the devices its input reads.
        off = None if g is None else "not " + ("im[{}]".format(g[0]) if len(g) == 1 else
                                               "({})".format(" and ".join("im[{}]".format(i) for i in g)))
        if op == OP_MOVED:
            x = self.expr(kids[0], 1)
            c = self.expr(kids[1], 0)
            v = self.local()
            self.put("# moved(), state at mem[{}]".format(o))
            self.put("u = " + x)
            depth = self._reset(off, v, None, "mem[{}] = mem[{}] = 0".format(o, o + 1))
            self.put("if {} or not mem[{}]:".format(c, o + 1), depth)
            self.put("    mem[{}] = u".format(o), depth)
            self.put("    mem[{}] = 1".format(o + 1), depth)
            self.put("{} = u - mem[{}]".format(v, o), depth)
            return v
        number = op == OP_CHANGED or op == OP_RATE
        if op == OP_WITHIN and self.plan is not None and kids[0][0] == OP_CHANGED:
            self.pair = -1   # its changed() is the pair's: the evaluator keeps the wakes of both
            x = self.expr(kids[0], number)
            self.pairs.append((self.pair, o, args[1]))
            self.pair = None
        else:
            x = self.expr(kids[0], number)
            if op == OP_WITHIN:
                self.withins.append(o)
        v = self.local()
        ms = args[1] if len(args) > 1 else 0
        if op == OP_HELD:
            self.put("# held(), state at mem[{}]".format(o))
            self.put("if {}{}:".format(x, "" if off is None else " and " + off[4:]))
            self.put("if not mem[{}]:".format(o + 1), 1)
            self.put("    mem[{}] = 1".format(o + 1), 1)
            self.put("    mem[{}] = now".format(o), 1)
            self.put("if {} >= {}:".format(_DIFF.format("now", "mem[{}]".format(o)), ms), 1)
            self.put("    {} = 1".format(v), 1)
            self.put("else:", 1)
            self.put("    {} = 0".format(v), 1)
            self.wake("(mem[{}] + {}) & TICK_MASK".format(o, ms), 2)
            self.put("else:")
            self.put("mem[{}] = 0".format(o + 1), 1)
            self.put("{} = 0".format(v), 1)
            return v
        comment = "# {}(), state at mem[{}]".format(_NAMES[op], o)
        pair = op == OP_WITHIN and self.plan is not None and kids[0][0] == OP_CHANGED
        if op == OP_WITHIN:
            # mem: last tick it was true, seen within the window, true now.
            # When it turns false, it was last true at the previous scan.
            depth = self._reset(off, v, comment, "mem[{}] = mem[{}] = mem[{}] = 0".format(o, o + 1, o + 2))
            self.put("if {}:".format(x), depth)
            self.put("    mem[{}] = now".format(o), depth)
            self.put("    mem[{}] = 1".format(o + 1), depth)
            self.put("    mem[{}] = 1".format(o + 2), depth)
            self.put("    {} = 1".format(v), depth)
            self.put("else:", depth)
            self.put("    if mem[{}]:".format(o + 2), depth)
            self.put("        mem[{}] = cur[1]".format(o), depth)
            self.put("        mem[{}] = 0".format(o + 2), depth)
            self.put("    if mem[{}] and {} > {}:".format(o + 1, _DIFF.format("now", "mem[{}]".format(o)), ms), depth)
            self.put("        mem[{}] = 0".format(o + 1), depth)
            self.put("    if mem[{}]:".format(o + 1), depth)
            self.put("        {} = 1".format(v), depth)
            if not pair:
                self.wake("(mem[{}] + {}) & TICK_MASK".format(o, ms + 1), depth + 2)
            self.put("    else:", depth)
            self.put("        {} = 0".format(v), depth)
        elif op == OP_CHANGED:
            # mem: the previous value, known.
            depth = self._reset(off, v, comment, "mem[{}] = mem[{}] = 0".format(o, o + 1))
            self.put("u = " + x, depth)
            self.put("if mem[{}] and u != mem[{}]:".format(o + 1, o), depth)
            self.put("    {} = 1".format(v), depth)
            if self.pair is None:
                self.put("    w = now   # false again at the next scan, unless it changes", depth)
                self.timed = 1
            else:   # (a pair's wakes are the evaluator's: Evaluator._ran)
                self.pair = o
            self.put("else:", depth)
            self.put("    {} = 0".format(v), depth)
            self.put("mem[{}] = u".format(o), depth)
            self.put("mem[{}] = 1".format(o + 1), depth)
        elif op == OP_RATE:
            depth = self._reset(off, v, comment, "mem[{}] = 0   # no samples: the ring starts again".format(o + 1))
            step = rate_step(ms)
            self.rate(v, o, step, x, depth)
        elif op == OP_COUNT:
            depth = self._reset(off, v, comment, "for k in range({}, {}):\n{}mem[k] = 0".format(
                o, o + MEM_WORDS[op], "    " * 3))
            self.put("{} = _count(mem, {}, {}, 1 if {} else 0, now)".format(v, o, ms, x), depth)
            self.put("if {}:".format(v), depth)
            self.wake("(mem[{}] + {}) & TICK_MASK".format("{} + mem[{}]".format(o + 3, o + 2), ms), depth + 1)
        else:   # OP_ROSE, OP_FELL; mem: 0 no previous (a first sample is no edge), 1 false, 2 true
            depth = self._reset(off, v, comment, "mem[{}] = 0".format(o))
            self.put("p = mem[{}]".format(o), depth)
            self.put("if {}:".format(x), depth)
            self.put("    mem[{}] = 2".format(o), depth)
            self.put("    {} = {}".format(v, "1 if p == 1 else 0" if op == OP_ROSE else "0"), depth)
            self.put("else:", depth)
            self.put("    mem[{}] = 1".format(o), depth)
            self.put("    {} = {}".format(v, "0" if op == OP_ROSE else "1 if p == 2 else 0"), depth)
            self.put("if {} and (w < 0 or {} < 0):".format(v, _DIFF.format("now", "w")), depth)
            self.put("    w = now", depth)
            self.timed = 1
        return v

    def rate(self, v, o, step, x, depth):
        """A rate() op's block, its device online (ring at ``o``, sampled
        every ``step`` ms): a ring of RATE_SAMPLES + 1 samples taken on a
        nominal schedule (so scan jitter does not stretch the window): the
        oldest one is the window old.  mem: nominal time of the last sample,
        samples taken (up to the ring size), next ring position, the ring.
        A ring of a plain signal is the evaluator's sampler's (group ``k``
        of ``table.groups``): the op then moves the samplers' schedule; else
        its rule's wake is the next sample."""
        k = self.sampled.get(o, -1)
        self.put("u = " + x, depth)
        if k >= 0:   # only a sampler sleeps
            self.put("if {} in ev.asleep:".format(o), depth)
            self.put("    ev._wake((ev.asleep[{}],), now)   # with this scan's sample".format(o), depth)
        self.put("if not mem[{}] or {} >= {}:".format(o + 1, _DIFF.format("now", "mem[{}]".format(o)), step), depth)
        self.put("    ev._rate_sample({}, {}, u, now)".format(o, step), depth)
        self.put("{} = u - mem[{} + mem[{}]] if mem[{}] > {} else 0".format(v, o + 3, o + 2, o + 1, RATE_SAMPLES), depth)
        if k < 0:
            self.wake("(mem[{}] + {}) & TICK_MASK".format(o, step), depth)
            return
        # Back online, its first sample may be the rule's: the evaluator takes the next one.
        self.put("d = (mem[{}] + {}) & TICK_MASK".format(o, step), depth)
        self.put("gn = ev.group_next", depth)
        self.put("if gn[{}] < 0 or {} < 0:".format(k, _DIFF.format("d", "gn[{}]".format(k))), depth)
        self.put("    gn[{}] = d".format(k), depth)
        self.put("if ev.next_sample < 0 or {} < 0:".format(_DIFF.format("d", "ev.next_sample")), depth)
        self.put("    ev.next_sample = d", depth)

    def _reset(self, off, v, comment, reset):
        """The op's ``comment``, then with a guard, the block that resets an op
        whose device is offline (its value 0); the depth of the rest, its
        ``else``.  An op right after another under the same guard shares its
        ``if`` (one test fewer a run): the twins do not change during a run,
        so both take the same branch, and each still runs in code order."""
        opened = self.open
        if off is not None and opened is not None and opened[0] == off:
            at = opened[1]
            self.body[at:at] = ["        " + reset, "        {} = 0".format(v)]
            self.open = (off, at + 2)
            if comment is not None:
                self.put(comment, 1)
            return 1
        if comment is not None:
            self.put(comment)
        if off is None:
            return 0
        self.put("if {}:".format(off))
        self.put(reset, 1)
        self.put("{} = 0".format(v), 1)
        self.put("else:")
        self.open = (off, len(self.body) - 1)
        return 1


_NAMES = {OP_WITHIN: "within", OP_CHANGED: "changed", OP_RATE: "rate", OP_COUNT: "count",
          OP_ROSE: "rose", OP_FELL: "fell"}


def _truth(cond, number):
    """``cond`` as 1 or 0 when an exact value is wanted (``number``)."""
    return "(1 if {} else 0)".format(cond) if number else cond


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
