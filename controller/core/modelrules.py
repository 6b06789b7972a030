"""The anomaly model as a rule: one code path for the gateway and ``cabguard eval``.

``ModelRules`` sits where the core expects a rules evaluator
(``scan(image, now, mode)`` -> rule changes).  Each scan it runs the
anomaly model first (controller/core/anomaly.py), puts ``anom.score`` and
``anom.top`` on the image so the table's rules can read them, runs the
table's evaluator, and raises the model's own rule, named ``anomaly``,
whose index is the one after the table's last rule.
"""

from controller.core import modes, ticks
from controller.core.anomaly import FEATURES, AnomalyModel, ModelTables
from controller.core.errors import CoreError, TraceError
from controller.core.evaluator import evaluator_from_header
from controller.core.events import ALARM, WARNING
from controller.core.step import CoreConfig

RULE_NAME = "anomaly"
VISIT_MS = dict(CoreConfig.DEFAULTS)["maint_max_ms"]   # the longest visit, unless a site says otherwise
ARMED_FAMILY = (modes.ARMING, modes.ARMED, modes.ENTRY)
_VOLT = FEATURES.index("volt")
EXPLAINED_KEEP = 8   # the latest raises' explanations kept: a gateway runs for years


class ModelRules:
    """The model, then the table's evaluator (``rules``, may be None), then
    the model's rule when the score reaches the model's threshold.

    Severity: an alarm needs evidence of loss -- points on ``current``
    (current that stopped), ``volt`` (pack voltage gone: modules pulled) or
    ``power`` (the supply fell); without it the rule is a warning.  With
    it: alarm in every mode for ``volt``, except while a person is at the
    cabinet (``attended``) or a ``sched.maintenance`` window is active;
    alarm in the armed family (exit delay, armed, entry delay) for any
    loss; warning otherwise.  A warning is raised again as an alarm when the
    conditions for an alarm arrive with another feature on top: the same
    feature still up when the cabinet is armed again (a cable left cut
    after the response team acknowledged it) was reported already.  The
    rule clears below half the threshold."""

    def __init__(self, tables, catalog, rules=None, visit_ms=VISIT_MS):
        self.model = AnomalyModel(tables, catalog.index, (modes.DISARMED,))
        self.rules = rules
        self.score_idx = catalog.index["anom.score"]
        self.top_idx = catalog.index["anom.top"]
        self.maint_idx = catalog.index.get("sched.maintenance", -1)
        self.threshold = tables.threshold
        self.alarm_on = tables.alarm_on   # the loss features that may make the rule an alarm
        self.raised = -1                 # severity raised, -1 when clear
        self.raised_as = -1              # the rule index it was raised under
        self.raised_top = -1             # the feature on top when it was raised
        self.visit_ms = visit_ms
        self.mode_prev = modes.DISARMED  # a start is nobody's visit
        self.disarmed_at = -1            # tick a guarding cabinet was disarmed, -1: not by a person
        self.explained = []              # (tick, the model's explanation) of the latest raises, oldest first

    @property
    def rule_index(self):
        """The index after the table's rules (0 without a table)."""
        return len(self.rules.table.ids) if self.rules is not None else 0

    def rule_names(self):
        """Rule names by index: the table's, then the model's."""
        return (tuple(self.rules.table.ids) if self.rules is not None else ()) + (RULE_NAME,)

    def attended(self, mode):
        """A person is at the cabinet: logged in (MAINTENANCE), or disarmed
        it from guarding less than ``visit_ms`` ago (a call-out disarms
        before it opens the door).  Pulling and swapping modules is then
        their work: a warning on the record (the theft pack judges a
        visit when it ends, modules_gone_after_visit).  A
        cabinet left disarmed, or disarmed by an acknowledged alarm, is
        nobody's visit."""
        if mode == modes.MAINTENANCE:
            return True
        return mode == modes.DISARMED and self.disarmed_at >= 0

    def _track(self, mode, now):
        if mode != self.mode_prev:
            self.disarmed_at = now if mode == modes.DISARMED and self.mode_prev in ARMED_FAMILY else -1
            self.mode_prev = mode
        elif self.disarmed_at >= 0 and ticks.diff(now, self.disarmed_at) >= self.visit_ms:
            self.disarmed_at = -1        # the visit is over: before the tick difference wraps

    def severity(self, top, mode, image):
        """Alarm only on evidence of loss: a loss feature the model file
        lets alarm (``alarm_on``: current that stopped, pack voltage that
        went, supply that fell) scored in this window.  Without it -- vibration, tilt, a door, a warm pack, gains
        of any kind -- the model only warns: the packs' rules alarm on those."""
        contrib = self.model.contrib
        loss = 0
        for f in self.alarm_on:
            if contrib[f] > 0:
                loss = 1
        if not loss:
            return WARNING
        if _VOLT in self.alarm_on and contrib[_VOLT] > 0 and not self.attended(mode) \
                and not (self.maint_idx >= 0 and image[self.maint_idx]):
            return ALARM
        if mode in ARMED_FAMILY:
            return ALARM
        return WARNING

    def rule_state(self):
        """The table's rules' state (``model_state`` is the model's)."""
        return self.rules.rule_state() if self.rules is not None else None

    def restore_rule_state(self, snap):
        if self.rules is not None:
            self.rules.restore_rule_state(snap)

    def model_state(self):
        """The model's adapted state and its rule's (raised, visit): with
        ``rule_state`` everything ``scan`` goes on from (docs/trace.md, "start")."""
        snap = self.model.state()
        snap["rule"] = [self.raised, self.raised_as, self.raised_top, self.mode_prev, self.disarmed_at]
        return snap

    def restore_model_state(self, snap):
        """Start from ``model_state()`` of the same model and catalog; CoreError names what does not fit."""
        try:
            rule = snap["rule"]
            if not isinstance(rule, list) or len(rule) != 5:
                raise ValueError("model state 'rule' must be a list of 5 whole numbers")
            self.model.restore(snap)
        except (ValueError, KeyError, TypeError) as e:
            raise CoreError("start: not the model's state ({})".format(e))
        self.raised, self.raised_as, self.raised_top, self.mode_prev, self.disarmed_at = rule

    def scan(self, image, now, mode):
        """-> an iterable of rule changes (index, severity, actions, raised)."""
        if mode != self.mode_prev or self.disarmed_at >= 0:
            self._track(mode, now)      # (else nothing to track: the common case, without the call)
        score, top = self.model.scan(image, now, mode)
        image[self.score_idx] = score
        image[self.top_idx] = top
        changes = self.rules.scan(image, now, mode) if self.rules is not None else ()
        if score >= self.threshold:
            severity = self.severity(top, mode, image)
            if severity > self.raised and (self.raised < 0 or top != self.raised_top):
                self.raised = severity
                self.raised_top = top
                self.raised_as = self.rule_index
                self.explained.append((now, self.model.explain()))
                if len(self.explained) > EXPLAINED_KEEP:
                    del self.explained[0]
                return list(changes) + [(self.raised_as, severity, 0, 1)]
        elif self.raised >= 0 and score * 2 < self.threshold:
            raised, self.raised = self.raised, -1
            return list(changes) + [(self.raised_as, raised, 0, 0)]
        return changes


def rules_from_header(head, catalog):
    """The rules a trace header describes (docs/trace.md): the table under
    "rules" (its evaluator, or None), behind the anomaly model when the header
    carries one under "model", as the gateway ran them."""
    table = evaluator_from_header(head, catalog.digest(), catalog.size)
    doc = head.get("model")
    if doc is None:
        return table
    for name in ("anom.score", "anom.top"):
        if name not in catalog.index:
            raise TraceError("the header has a model but its signals lack '{}'".format(name))
    try:
        tables = ModelTables(doc)
    except ValueError as e:
        raise TraceError("the header's model: {}".format(e))
    return ModelRules(tables, catalog, table, head.get("core", {}).get("maint_max_ms", VISIT_MS))
