"""Rule expressions (host only): one ``when`` or ``clear_when``, parsed with
``ast``, checked against a whitelist (docs/rules.md) -- integer literals,
signals, comparisons, ``and``/``or``/``not``, ``+ - * //``, unary minus and
a fixed set of functions -- type-checked against the signals' units and
scales, and emitted as postfix code for controller/core/table.py.

rules/compiler.py runs this over whole rule files.
"""

from __future__ import annotations

import ast

from controller.core import table as T
from controller.core.catalog import CAMERA_CLASS, GNSS_CLASS
from rules.language import DEV_NAME, parse_duration, suggest

FUNCTIONS = ("held", "within", "count", "rate", "moved", "changed", "rose", "fell", "mode",
             "schedule", "abs", "min", "max", "bit", "peers_mean", "peers_max", "class_max")
# Device classes of docs/signals.md; a site may add its own.
KNOWN_CLASSES = ("io", "battery", "relay", CAMERA_CLASS, GNSS_CLASS)

_CMP_OPS = {ast.Lt: T.OP_LT, ast.LtE: T.OP_LE, ast.Gt: T.OP_GT, ast.GtE: T.OP_GE,
            ast.Eq: T.OP_EQ, ast.NotEq: T.OP_NE}
_FUSED = {T.OP_LT: T.OP_SIG_LT_K, T.OP_LE: T.OP_SIG_LE_K, T.OP_GT: T.OP_SIG_GT_K,
          T.OP_GE: T.OP_SIG_GE_K, T.OP_EQ: T.OP_SIG_EQ_K, T.OP_NE: T.OP_SIG_NE_K}
_FUSED_K = {T.OP_LT: T.OP_LT_K, T.OP_LE: T.OP_LE_K, T.OP_GT: T.OP_GT_K,
            T.OP_GE: T.OP_GE_K, T.OP_EQ: T.OP_EQ_K, T.OP_NE: T.OP_NE_K}
_FLIPPED = {T.OP_LT: T.OP_GT, T.OP_LE: T.OP_GE, T.OP_GT: T.OP_LT, T.OP_GE: T.OP_LE,
            T.OP_EQ: T.OP_EQ, T.OP_NE: T.OP_NE}
_BIN_OPS = {ast.Add: T.OP_ADD, ast.Sub: T.OP_SUB, ast.Mult: T.OP_MUL, ast.FloorDiv: T.OP_DIV}
_OP_TEXT = {ast.Div: "/ (use // for whole-number division)", ast.Mod: "%", ast.Pow: "**",
            ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "& (use bit(signal, n))",
            ast.BitOr: "| (use or)", ast.BitXor: "^", ast.MatMult: "@"}


class CompileFailed(Exception):
    """One problem in one expression, at an AST node (collected by the caller)."""

    def __init__(self, node: ast.AST | None, message: str):
        Exception.__init__(self, message)
        self.node = node
        self.message = message


class Ty:
    """The type of a value: kind bool/num/code/bits/lit, and a unit and scale for num.

    ``unit`` or ``scale`` None means "free" (after multiplying), which
    compares with anything of a compatible unit.
    """

    def __init__(self, kind: str, unit: str | None = None, scale: int | None = None,
                 what: str = "", value: int = 0, cap: int = 0):
        self.kind = kind
        self.unit = unit
        self.scale = scale
        self.what = what        # how to name it in a message
        self.value = value      # for literals
        self.cap = cap          # for count(): the largest value it can have

    def describe(self) -> str:
        if self.kind == "num":
            unit = self.unit or "a number"
            scale = "" if self.scale in (None, 0) else " x 10^{}".format(self.scale)
            return "{} ({}{})".format(self.what, unit, scale)
        return "{} ({})".format(self.what, self.kind)


class SiteCatalog:
    """The compiler's view of the signal catalog, built from plain data."""

    def __init__(self, specs: list[tuple[str, str, int]], device_classes: dict[str, str], digest: bytes):
        self.index: dict[str, tuple[int, str, int]] = {}
        for i, (name, unit, scale) in enumerate(specs):
            self.index[name] = (i, unit, scale)
        self.names = [s[0] for s in specs]
        self.size = len(specs)
        self.device_classes = dict(device_classes)
        self.digest = bytes(digest)
        self.schedules = sorted(n[len("sched."):] for n in self.names if n.startswith("sched."))
        self.twin_of = self._online_twins()

    def _online_twins(self) -> dict[int, int]:
        """{signal index: its device's ``<dev>.online`` index} for every signal
        a device reports.  The link twins (``online``, ``comm_*``) are the
        bus driver's knowledge, never unknown; ``sys.*``, ``sched.*`` and
        ``anom.*`` belong to no device.  A camera's ``cam.<name>.*`` has its
        ``cam.<name>.online``."""
        twins = {}
        for name, (i, _unit, _scale) in self.index.items():
            camera = name.startswith("cam.")
            device, _dot, short = name.rpartition(".") if camera else name.partition(".")
            online = self.index.get(device + ".online")
            if (camera or device in self.device_classes) and online is not None \
                    and short != "online" and not short.startswith("comm_"):
                twins[i] = online[0]
        return twins

    def guard(self, code: list[int]) -> list[int]:
        """The online twins of the devices whose signals ``code`` reads."""
        return sorted(set(self.twin_of[i] for i in T.read_signals(code) if i in self.twin_of))

    def devices_of(self, cls: str) -> list[str]:
        return sorted(d for d, c in self.device_classes.items() if c == cls)

    def classes(self) -> list[str]:
        return sorted(set(KNOWN_CLASSES) | set(self.device_classes.values()))


class Mem:
    """Allocates words of evaluator state to stateful ops, and records the
    guard of each (the table's "guards")."""

    def __init__(self) -> None:
        self.size = 0
        self.guards: list[list[int]] = []

    def take(self, op: int, guard: list[int]) -> int:
        off = self.size
        self.size += T.MEM_WORDS[op]
        if guard:
            self.guards.append([off] + guard)
        return off


class ExprCompiler:
    """Type-checks one expression and emits its postfix code."""

    def __init__(self, catalog: SiteCatalog, device: str, mem: Mem):
        self.catalog = catalog
        self.device = device
        self.mem = mem
        self.signals: set[int] = set()
        self.rates: dict[tuple[tuple[int, ...], int | None], int] = {}   # one ring per distinct rate()

    def condition(self, node: ast.AST) -> list[int]:
        code, ty = self.emit(node)
        if ty.kind != "bool":
            raise CompileFailed(node, "the expression must be a condition (true/false), but it is "
                                "{}; compare it with a threshold".format(ty.describe()))
        return code

    def emit(self, node: ast.AST) -> tuple[list[int], Ty]:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise CompileFailed(node, _disallowed(node))
        return method(node)

    # -- leaves ---------------------------------------------------------
    def _Constant(self, node: ast.Constant) -> tuple[list[int], Ty]:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float):
                raise CompileFailed(node, "float literal {!r}: values are whole numbers in the "
                                    "signal's scaled unit (e.g. 45.5 C at scale -1 is 455)".format(v))
            raise CompileFailed(node, "{!r} is not allowed here: only whole-number literals; text is "
                                "only for durations, mode and schedule names".format(v))
        return [T.OP_CONST, v], Ty("lit", value=v, what=str(v))

    def _signal(self, node: ast.AST, name: str) -> tuple[list[int], Ty]:
        entry = self.catalog.index.get(name)
        if entry is None:
            raise CompileFailed(node, "unknown signal '{}'{}".format(name, suggest(name, self.catalog.names)))
        idx, unit, scale = entry
        self.signals.add(idx)
        if unit == "bool":
            ty = Ty("bool", what=name)
        elif unit in ("code", "bits"):
            ty = Ty(unit, what=name)
        else:
            ty = Ty("num", unit, scale, what=name)
        return [T.OP_SIG, idx], ty

    def _Attribute(self, node: ast.Attribute) -> tuple[list[int], Ty]:
        # device.signal, or a camera's cam.<name>.signal
        parts = [node.attr]
        base = node.value
        if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "cam":
            parts.insert(0, base.attr)
            base = base.value
        if not isinstance(base, ast.Name):
            raise CompileFailed(node, "attribute access is not allowed: a signal is written "
                                "device.signal (e.g. io.door_open) or cam.<camera>.signal")
        name = base.id
        if name == DEV_NAME:
            name = self.device
        return self._signal(node, ".".join([name] + parts))

    def _Name(self, node: ast.Name) -> tuple[list[int], Ty]:
        if node.id in ("True", "False"):
            raise CompileFailed(node, "write conditions, not True/False")
        return self._signal(node, node.id)

    # -- operators ------------------------------------------------------
    def _UnaryOp(self, node: ast.UnaryOp) -> tuple[list[int], Ty]:
        code, ty = self.emit(node.operand)
        if isinstance(node.op, ast.Not):
            _need_bool(node.operand, ty, "'not'")
            if len(code) == 2 and code[0] == T.OP_SIG:
                return [T.OP_NOT_SIG, code[1]], Ty("bool", what="not ...")
            return code + [T.OP_NOT], Ty("bool", what="not ...")
        if isinstance(node.op, ast.USub):
            if ty.kind == "lit":
                return [T.OP_CONST, -ty.value], Ty("lit", value=-ty.value, what=str(-ty.value))
            _need_num(node.operand, ty, "unary minus")
            return code + [T.OP_NEG], ty
        if isinstance(node.op, ast.UAdd):
            _need_num(node.operand, ty, "unary plus")
            return code, ty
        raise CompileFailed(node, "operator ~ is not allowed")

    def _BoolOp(self, node: ast.BoolOp) -> tuple[list[int], Ty]:
        op = T.OP_AND if isinstance(node.op, ast.And) else T.OP_OR
        word = "'and'" if op == T.OP_AND else "'or'"
        code: list[int] = []
        for k, value in enumerate(node.values):
            part, ty = self.emit(value)
            _need_bool(value, ty, word)
            if k and len(part) == 2 and part[0] == T.OP_SIG:
                code += [T.OP_AND_SIG if op == T.OP_AND else T.OP_OR_SIG, part[1]]
            else:
                code += part + ([op] if k else [])
        return code, Ty("bool", what=word)

    def _BinOp(self, node: ast.BinOp) -> tuple[list[int], Ty]:
        op = _BIN_OPS.get(type(node.op))
        if op is None:
            raise CompileFailed(node, "operator {} is not allowed (allowed: + - * //)".format(
                _OP_TEXT.get(type(node.op), type(node.op).__name__)))
        self._float_check(node.left, node.right)
        lc, lt = self.emit(node.left)
        rc, rt = self.emit(node.right)
        _need_num(node.left, lt, "arithmetic")
        _need_num(node.right, rt, "arithmetic")
        if lt.kind == "lit" and rt.kind == "lit":
            v = _fold(op, lt.value, rt.value)
            return [T.OP_CONST, v], Ty("lit", value=v, what=str(v))
        if op in (T.OP_ADD, T.OP_SUB):
            ty = _same_unit(node, lt, rt, "+" if op == T.OP_ADD else "-")
        elif lt.kind == "lit" or rt.kind == "lit":
            base = rt if lt.kind == "lit" else lt
            ty = Ty("num", base.unit, None, what=base.what + " scaled")
        else:
            ty = Ty("num", None, None, what="a product")
        return lc + rc + [op], ty

    def _Compare(self, node: ast.Compare) -> tuple[list[int], Ty]:
        code: list[int] = []
        left = node.left
        for k, (cmp, right) in enumerate(zip(node.ops, node.comparators)):
            op = _CMP_OPS.get(type(cmp))
            if op is None:
                raise CompileFailed(node, "comparison '{}' is not allowed (allowed: < <= > >= == !=)".format(
                    {ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}.get(type(cmp), "?")))
            code += self._compare_pair(node, left, op, right)
            if k:
                code.append(T.OP_AND)
            left = right
        return code, Ty("bool", what="a comparison")

    def _compare_pair(self, node: ast.AST, left: ast.AST, op: int, right: ast.AST) -> list[int]:
        self._float_check(left, right)
        lc, lt = self.emit(left)
        rc, rt = self.emit(right)
        _check_compare(node, lt, op, rt)
        # Fuse "signal <op> constant", the commonest term, into one instruction.
        if lc[0] == T.OP_SIG and len(lc) == 2 and rt.kind == "lit":
            return [_FUSED[op], lc[1], rt.value]
        if rc[0] == T.OP_SIG and len(rc) == 2 and lt.kind == "lit":
            return [_FUSED[_FLIPPED[op]], rc[1], lt.value]
        # ... and "computed value <op> constant".
        if rt.kind == "lit" and rc == [T.OP_CONST, rt.value]:
            return lc + [_FUSED_K[op], rt.value]
        if lt.kind == "lit" and lc == [T.OP_CONST, lt.value]:
            return rc + [_FUSED_K[_FLIPPED[op]], lt.value]
        return lc + rc + [op]

    def _float_check(self, left: ast.AST, right: ast.AST) -> None:
        """A float literal next to a signal: say which whole number to write."""
        for lit, other in ((left, right), (right, left)):
            if not (isinstance(lit, ast.Constant) and isinstance(lit.value, float)):
                continue
            hint = ""
            try:
                _code, ty = self.emit(other)
            except CompileFailed:
                ty = None
            if ty is not None and ty.kind == "num" and ty.scale is not None:
                hint = ": {} is integer-scaled ({} x 10^{}), write {}".format(
                    ty.what, ty.unit, ty.scale, round(lit.value * 10 ** -ty.scale))
            raise CompileFailed(lit, "float literal {!r} is not allowed{}".format(lit.value, hint or
                                ": values are whole numbers in the signal's scaled unit"))

    # -- functions ------------------------------------------------------
    def _Call(self, node: ast.Call) -> tuple[list[int], Ty]:
        if not isinstance(node.func, ast.Name):
            raise CompileFailed(node, "calls outside the rule language's functions are not allowed "
                                "(allowed: {})".format(", ".join(FUNCTIONS)))
        name = node.func.id
        if name not in FUNCTIONS:
            raise CompileFailed(node, "function '{}' is not part of the rule language{} (allowed: {})".format(
                name, suggest(name, FUNCTIONS), ", ".join(FUNCTIONS)))
        if node.keywords:
            raise CompileFailed(node, "{}() takes no keyword arguments".format(name))
        return getattr(self, "_fn_" + name)(node, node.args)

    def _window(self, node: ast.Call, args: list[ast.expr], name: str, what: str) -> tuple[list[int], Ty, int]:
        if len(args) != 2:
            raise CompileFailed(node, "{}() takes two arguments: {}() and a duration like \"30s\"".format(
                name, what))
        dur = args[1]
        if not isinstance(dur, ast.Constant) or not isinstance(dur.value, str):
            raise CompileFailed(dur, "{}()'s second argument is a duration in quotes, like \"30s\"".format(name))
        try:
            ms = parse_duration(dur.value, allow_zero=False)
        except ValueError as e:
            raise CompileFailed(dur, str(e)) from None
        code, ty = self.emit(args[0])
        return code, ty, ms

    def _stateful(self, op: int, code: list[int], ms: int | None) -> list[int]:
        if op == T.OP_RATE:
            # The same rate() twice in a rule (a rise compared with several
            # bounds) reads one ring: evaluated on the same scans, it would
            # hold the same samples.
            key = (tuple(code), ms)
            off = self.rates.get(key)
            if off is None:
                off = self.rates[key] = self.mem.take(op, self.catalog.guard(code))
        else:
            off = self.mem.take(op, self.catalog.guard(code))
        return code + [op, off] + ([] if ms is None else [ms])

    def _fn_held(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        code, ty, ms = self._window(node, args, "held", "a condition")
        _need_bool(args[0], ty, "held()")
        return self._stateful(T.OP_HELD, code, ms), Ty("bool", what="held(...)")

    def _fn_within(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        code, ty, ms = self._window(node, args, "within", "a condition")
        _need_bool(args[0], ty, "within()")
        return self._stateful(T.OP_WITHIN, code, ms), Ty("bool", what="within(...)")

    def _fn_count(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        code, ty, ms = self._window(node, args, "count", "a condition")
        _need_bool(args[0], ty, "count()")
        return self._stateful(T.OP_COUNT, code, ms), Ty("num", "count", 0, what="count(...)", cap=T.COUNT_CAP)

    def _fn_rate(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        code, ty, ms = self._window(node, args, "rate", "a number")
        _need_num(args[0], ty, "rate()")
        if ms < 100:
            raise CompileFailed(args[1], "rate()'s window must be at least 100ms")
        what = "rate({})".format(ty.what)
        return self._stateful(T.OP_RATE, code, ms), Ty("num", ty.unit, ty.scale, what=what)

    def _fn_moved(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        if len(args) != 2:
            raise CompileFailed(node, "moved() takes two arguments: a number and the condition under which "
                                "it sets its baseline, like moved(io.tilt_mdeg, not mode(\"armed\"))")
        code, ty = self.emit(args[0])
        _need_num(args[0], ty, "moved()")
        if ty.kind == "lit":
            raise CompileFailed(args[0], "moved() of a constant is always 0")
        cond, cty = self.emit(args[1])
        _need_bool(args[1], cty, "moved()'s second argument")
        both = code + cond
        off = self.mem.take(T.OP_MOVED, self.catalog.guard(both))
        return both + [T.OP_MOVED, off], Ty("num", ty.unit, ty.scale, what="moved({})".format(ty.what))

    def _edge(self, op: int, node: ast.Call, args: list[ast.expr], name: str, need_bool: bool) -> tuple[list[int], Ty]:
        if len(args) != 1:
            raise CompileFailed(node, "{}() takes one argument".format(name))
        code, ty = self.emit(args[0])
        if need_bool:
            _need_bool(args[0], ty, name + "()")
        elif ty.kind == "lit":
            raise CompileFailed(args[0], "changed() of a constant is never true")
        return self._stateful(op, code, None), Ty("bool", what=name + "(...)")

    def _fn_changed(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        return self._edge(T.OP_CHANGED, node, args, "changed", False)

    def _fn_rose(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        return self._edge(T.OP_ROSE, node, args, "rose", True)

    def _fn_fell(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        return self._edge(T.OP_FELL, node, args, "fell", True)

    def _names(self, node: ast.Call, args: list[ast.expr], name: str) -> list[tuple[ast.AST, str]]:
        if not args:
            raise CompileFailed(node, "{}() needs at least one name in quotes".format(name))
        out = []
        for a in args:
            if not isinstance(a, ast.Constant) or not isinstance(a.value, str):
                raise CompileFailed(a, "{}() takes names in quotes, like {}(\"{}\")".format(
                    name, name, "armed" if name == "mode" else "night"))
            out.append((a, a.value))
        return out

    def _fn_mode(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        mask = 0
        for a, text in self._names(node, args, "mode"):
            if text == "armed":
                mask |= T.GUARD
            elif text in T.MODES:
                mask |= 1 << T.MODES.index(text)
            else:
                raise CompileFailed(a, "unknown mode '{}'{} (modes: {})".format(
                    text, suggest(text, T.MODES), ", ".join(T.MODES)))
        return [T.OP_MODE, mask], Ty("bool", what="mode(...)")

    def _fn_schedule(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        names = self._names(node, args, "schedule")
        if len(names) != 1:
            raise CompileFailed(node, "schedule() takes one name")
        a, text = names[0]
        if text not in self.catalog.schedules:
            defined = ", ".join(self.catalog.schedules) or "none"
            raise CompileFailed(a, "schedule '{}' is never defined{} (defined: {}; add [schedules.{}] to the "
                                   "site config, docs/config.md)".format(
                                       text, suggest(text, self.catalog.schedules), defined, text))
        return self._signal(a, "sched." + text)

    def _fn_abs(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        if len(args) != 1:
            raise CompileFailed(node, "abs() takes one argument")
        code, ty = self.emit(args[0])
        _need_num(args[0], ty, "abs()")
        return code + [T.OP_ABS], _computed(ty)

    def _minmax(self, node: ast.Call, args: list[ast.expr], op: int, name: str) -> tuple[list[int], Ty]:
        if len(args) != 2:
            raise CompileFailed(node, "{}() takes two arguments".format(name))
        lc, lt = self.emit(args[0])
        rc, rt = self.emit(args[1])
        _need_num(args[0], lt, name + "()")
        _need_num(args[1], rt, name + "()")
        return lc + rc + [op], _computed(_same_unit(node, lt, rt, name + "()"))

    def _fn_min(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        return self._minmax(node, args, T.OP_MIN, "min")

    def _fn_max(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        return self._minmax(node, args, T.OP_MAX, "max")

    def _peers(self, node: ast.Call, args: list[ast.expr], name: str) -> tuple[list[int], list[list[int]], Ty]:
        """``x``'s own code and, for each other device of its device's class,
        the code of "that device's ``x`` while it is online, else ours": an
        offline peer, or none at all, never makes ``x`` stand out."""
        if len(args) != 1 or not isinstance(args[0], ast.Attribute):
            raise CompileFailed(node, "{}() takes one device signal, like {}({{dev}}.temp_max_dc)".format(name, name))
        own, ty = self.emit(args[0])
        _need_num(args[0], ty, name + "()")
        device, _dot, short = self.catalog.names[own[1]].partition(".")
        cls = self.catalog.device_classes.get(device)
        if cls is None:
            raise CompileFailed(args[0], "{}() reads a device's signal; '{}' belongs to no device class".format(
                name, self.catalog.names[own[1]]))
        peers = []
        for other in self.catalog.devices_of(cls):
            if other == device:
                continue
            on = self.catalog.index[other + ".online"][0]
            v = self.catalog.index[other + "." + short][0]
            self.signals.add(v)
            peers.append([T.OP_SIG, on, T.OP_SIG, v, T.OP_MUL, T.OP_CONST, 1, T.OP_SIG, on, T.OP_SUB]
                         + own + [T.OP_MUL, T.OP_ADD])
        return own, peers, _computed(ty)

    def _fn_peers_mean(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        own, peers, ty = self._peers(node, args, "peers_mean")
        if not peers:
            return own, ty
        code = peers[0]
        for p in peers[1:]:
            code = code + p + [T.OP_ADD]
        return code + [T.OP_CONST, len(peers), T.OP_DIV], ty

    def _fn_peers_max(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        own, peers, ty = self._peers(node, args, "peers_max")
        code = peers[0] if peers else own
        for p in peers[1:]:
            code = code + p + [T.OP_MAX]
        return code, ty

    def _fn_class_max(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        """The highest ``x`` over the devices of class ``C``; one that is
        offline counts with the lowest reading of the class, so it never
        raises the highest.  One device: its plain signal.  None: 0.  For a
        bool signal: 1 when any of them reads 1 (a condition)."""
        names = self._names(node, args, "class_max")
        if len(names) != 2:
            raise CompileFailed(node, 'class_max() takes a device class and a signal name, like '
                                      'class_max("io", "temp_dc")')
        (ca, cls), (sa, short) = names
        if cls not in self.catalog.classes():
            raise CompileFailed(ca, "unknown device class '{}'{} (classes: {})".format(
                cls, suggest(cls, self.catalog.classes()), ", ".join(self.catalog.classes())))
        devices = self.catalog.devices_of(cls)
        if not devices:
            return [T.OP_CONST, 0], Ty("num", what='class_max("{}", "{}")'.format(cls, short))
        values = []
        for d in devices:
            if d + "." + short not in self.catalog.index:
                raise CompileFailed(sa, "devices of class '{}' have no signal '{}' ({} has none)".format(
                    cls, short, d))
            code, ty = self._signal(sa, d + "." + short)
            if ty.kind != "bool":       # a bool's highest is "any of them": a door of the cabinet open
                _need_num(sa, ty, "class_max()")
            values.append(code)
        if len(values) == 1:
            return values[0], _computed(ty)
        lowest = values[0]
        for v in values[1:]:
            lowest = lowest + v + [T.OP_MIN]
        code = []
        for d, v in zip(devices, values):
            on = self.catalog.index[d + ".online"][0]
            self.signals.add(on)
            term = [T.OP_SIG, on] + v + [T.OP_MUL, T.OP_CONST, 1, T.OP_SIG, on, T.OP_SUB] + lowest + [T.OP_MUL, T.OP_ADD]
            code = term if not code else code + term + [T.OP_MAX]
        return code, _computed(ty)

    def _fn_bit(self, node: ast.Call, args: list[ast.expr]) -> tuple[list[int], Ty]:
        if len(args) != 2 or not isinstance(args[1], ast.Constant) or isinstance(args[1].value, bool) \
                or not isinstance(args[1].value, int) or not 0 <= args[1].value <= 30:
            raise CompileFailed(node, "bit() takes a signal and a bit number from 0 to 30, like "
                                "bit(bms1.alarm_bits, 23)")
        code, ty = self.emit(args[0])
        if ty.kind not in ("bits", "code"):
            raise CompileFailed(args[0], "bit() reads a bits or code signal, not {}".format(ty.describe()))
        if len(code) == 2 and code[0] == T.OP_SIG:
            return [T.OP_SIG_BIT, code[1], args[1].value], Ty("bool", what="bit(...)")
        return code + [T.OP_BIT, args[1].value], Ty("bool", what="bit(...)")


def _disallowed(node: ast.AST) -> str:
    reasons = {
        "Subscript": "subscripts ([...]) are not allowed",
        "Lambda": "lambdas are not allowed",
        "IfExp": "'x if c else y' is not allowed: write two rules or use and/or",
        "NamedExpr": "':=' is not allowed",
        "JoinedStr": "f-strings are not allowed",
        "List": "lists are not allowed", "Tuple": "tuples are not allowed",
        "Dict": "dicts are not allowed", "Set": "sets are not allowed",
        "ListComp": "comprehensions are not allowed", "GeneratorExp": "comprehensions are not allowed",
        "SetComp": "comprehensions are not allowed", "DictComp": "comprehensions are not allowed",
        "Await": "await is not allowed", "Starred": "'*' unpacking is not allowed",
    }
    return reasons.get(type(node).__name__, "{} is not part of the rule language".format(type(node).__name__))


def _computed(ty: Ty) -> Ty:
    """A function's result is computed at run time: never a literal."""
    return Ty("num", None, None, what="a computed number") if ty.kind == "lit" else ty


def _need_bool(node: ast.AST, ty: Ty, where: str) -> None:
    if ty.kind != "bool":
        raise CompileFailed(node, "{} needs a condition, but {} is {}; compare it with a threshold".format(
            where, ast.unparse(node), "a number" if ty.kind in ("num", "lit") else "a " + ty.kind + " value"))


def _need_num(node: ast.AST, ty: Ty, where: str) -> None:
    if ty.kind not in ("num", "lit"):
        raise CompileFailed(node, "{} needs a number, but {} is a {} value".format(where, ast.unparse(node), ty.kind))


def _fold(op: int, a: int, b: int) -> int:
    if op == T.OP_ADD:
        return a + b
    if op == T.OP_SUB:
        return a - b
    if op == T.OP_MUL:
        return a * b
    return a // b if b else 0


def _same_unit(node: ast.AST, a: Ty, b: Ty, word: str) -> Ty:
    if a.kind == "lit":
        return b
    if b.kind == "lit":
        return a
    if a.unit and b.unit and a.unit != b.unit:
        raise CompileFailed(node, "{} mixes units: {} and {}".format(word, a.describe(), b.describe()))
    if a.scale is not None and b.scale is not None and a.scale != b.scale:
        raise CompileFailed(node, "{} mixes scales: {} and {}; multiply one side to match".format(
            word, a.describe(), b.describe()))
    return a if a.scale is not None else b


def _check_compare(node: ast.AST, a: Ty, op: int, b: Ty) -> None:
    if a.kind == "lit" and b.kind == "lit":
        raise CompileFailed(node, "this comparison of two constants is always the same")
    if b.kind == "lit":
        sig, lit = a, b
    elif a.kind == "lit":
        sig, lit = b, a
    else:
        sig, lit = None, None
    if sig is not None and lit is not None:
        _check_threshold(node, sig, op, lit.value)
        return
    if a.kind != b.kind:
        raise CompileFailed(node, "cannot compare {} with {}".format(a.describe(), b.describe()))
    if a.kind in ("code", "bits") and op not in (T.OP_EQ, T.OP_NE):
        raise CompileFailed(node, "{} values have no order: use == or !=".format(a.kind))
    if a.kind == "num":
        _same_unit(node, a, b, "comparison")


def _check_threshold(node: ast.AST, sig: Ty, op: int, value: int) -> None:
    if sig.kind == "bool" and value not in (0, 1):
        raise CompileFailed(node, "{} is a bool (0 or 1): comparing it with {} makes no sense; "
                            "write the signal itself, or 'not' it".format(sig.what, value))
    if sig.kind in ("code", "bits") and op not in (T.OP_EQ, T.OP_NE):
        raise CompileFailed(node, "{} is a {} value and has no order: use == or !=".format(sig.what, sig.kind))
    if sig.cap and value > sig.cap:
        raise CompileFailed(node, "count() saturates at {}: a threshold of {} can never be reached".format(
            sig.cap, value))
