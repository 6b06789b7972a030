"""The rule compiler (host only): rule files + a signal catalog -> a table.

Inputs are plain data, so that the compiler knows nothing of the controller:
signal specs ``[(name, unit, scale)]`` in image order, a ``{device: class}``
map, the catalog digest (controller.core.catalog.Catalog.digest()) and the
rule files.  Each rule is instantiated per device of its class and its
expressions compiled by rules/expr.py; the result is the table payload.

Every problem is collected, with file, line, column and rule id, and raised
at the end as one RuleSourceError, so a person fixes them in one pass.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from controller.core import table as T
from rules.errors import Diagnostic, RuleSourceError
from rules.expr import CompileFailed, ExprCompiler, Mem, SiteCatalog
from rules.language import DEV_NAME, RuleSpec, load_file, parse_source, suggest
from rules.payload import encode_payload

# -- whole files ------------------------------------------------------------

class CompiledRule:
    """One rule instance, ready for the table."""

    def __init__(self, rule_id: str, spec: RuleSpec, code: list[int], flags: int,
                 when_text: str, terms: list[tuple[str, list[int]]], signals: list[int]):
        self.id = rule_id
        self.spec = spec
        self.code = code
        self.flags = flags
        self.when_text = when_text
        self.terms = terms
        self.signals = signals


# Bounds on one expression, far above any real rule (the shipped packs' longest
# is 300 characters, 6 deep): Python's parser and this compiler recurse, and a
# 100,000-term chain would take minutes or end in RecursionError.
MAX_EXPR_CHARS = 4000
MAX_EXPR_DEPTH = 64


def _depth(tree: ast.AST) -> int:
    """How deep the tree nests (walked without recursion)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _parse(spec: RuleSpec, key: str, diags: list[Diagnostic]) -> ast.Expression | None:
    src = parse_source(spec, key)
    if not src.strip("()\n "):
        if key == "when":
            diags.append(spec.diag(key, "'when' is empty"))
        return None
    if len(src) > MAX_EXPR_CHARS:
        diags.append(spec.diag(key, "'{}' is {} characters long, more than {}: split the rule".format(
            key, len(src), MAX_EXPR_CHARS)))
        return None
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        lineno = min(e.lineno or 1, src.count("\n"))
        line, col = _position(spec, key, lineno, max((e.offset or 1) - 1, 0))
        diags.append(Diagnostic(spec.path, line, col, spec.id, "syntax error in '{}': {}".format(key, e.msg)))
        return None
    except (RecursionError, MemoryError):      # the parser's own recursion, on deep nesting
        tree = None
    if tree is None or _depth(tree) > MAX_EXPR_DEPTH:
        diags.append(spec.diag(key, "'{}' nests more than {} levels deep: simplify the rule".format(
            key, MAX_EXPR_DEPTH)))
        return None
    return tree


def _terms(node: ast.AST) -> list[ast.AST]:
    """The leaves of the and/or/not structure: what explain reports."""
    if isinstance(node, ast.BoolOp):
        return [t for v in node.values for t in _terms(v)]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not) and isinstance(node.operand, ast.BoolOp):
        return _terms(node.operand)
    return [node]


def _instance(spec: RuleSpec, device: str, trees: dict[str, ast.Expression], catalog: SiteCatalog,
              mem: Mem, explain_mem: Mem, diags: list[Diagnostic]) -> CompiledRule | None:
    rule_id = spec.id + ("." + device if device else "")
    comp = ExprCompiler(catalog, device, mem)
    code: list[int] = []
    flags = 0
    try:
        code = comp.condition(trees["when"].body)
        if spec.for_ms:
            code = comp._stateful(T.OP_HELD, code, spec.for_ms)
    except CompileFailed as e:
        diags.append(_located(spec, "when", e, rule_id))
        return None
    if "clear_when" in trees:
        try:
            code += comp.condition(trees["clear_when"].body)
            flags |= T.FLAG_CLEAR_WHEN
        except CompileFailed as e:
            diags.append(_located(spec, "clear_when", e, rule_id))
            return None
    if spec.latch:
        flags |= T.FLAG_LATCH
    src = parse_source(spec, "when")
    terms = []
    for node in _terms(trees["when"].body):
        text = (ast.get_source_segment(src, node) or ast.unparse(node)).replace(DEV_NAME, device)
        terms.append((text, ExprCompiler(catalog, device, explain_mem).condition(node)))
    when_text = " ".join(spec.when.replace("{dev}", device).split())
    if spec.for_ms:
        when_text += "  (for {} ms)".format(spec.for_ms)
    return CompiledRule(rule_id, spec, code, flags, when_text, terms, sorted(comp.signals))


def _position(spec: RuleSpec, key: str, lineno: int, col: int) -> tuple[int, int]:
    """File position of a parse position (the source is wrapped in "(...)")."""
    return spec.expr_position(key, lineno, col - 1 if lineno == 1 else col)


def _located(spec: RuleSpec, key: str, e: CompileFailed, rule_id: str) -> Diagnostic:
    node = e.node
    if node is not None and hasattr(node, "lineno"):
        line, col = _position(spec, key, node.lineno, node.col_offset)
    else:
        line, col = spec.where(key)
    return Diagnostic(spec.path, line, col, rule_id, e.message)


class Compiled:
    """The result of compiling: the table payload (plain data) and its rules."""

    def __init__(self, data: dict, rules: list[CompiledRule], left_out: list[tuple[RuleSpec, str]]):
        self.data = data
        self.rules = rules
        # (rule, schedule): rules this site would run but for a schedule its calendar lacks
        self.left_out = left_out

    def encode(self) -> bytes:
        """The compact CBOR payload that gets MAC'd."""
        return encode_payload(self.data)


def compile_files(paths: list[str | Path], catalog: SiteCatalog) -> Compiled:
    """Compile rule files against ``catalog``; RuleSourceError lists every problem."""
    diags: list[Diagnostic] = []
    source = hashlib.sha256()
    specs: list[RuleSpec] = []
    for path in paths:
        file_specs, raw = load_file(path, diags)
        source.update(len(raw).to_bytes(8, "big") + raw)
        specs += file_specs
    rules, mem, explain_mem, left_out = _compile_specs(specs, catalog, diags)
    if diags:
        raise RuleSourceError(diags)
    return Compiled(_payload(rules, catalog, source.digest(), mem, explain_mem), rules, left_out)


def _compile_specs(specs: list[RuleSpec], catalog: SiteCatalog,
                   diags: list[Diagnostic]) -> tuple[list[CompiledRule], Mem, Mem, list[tuple[RuleSpec, str]]]:
    mem, explain_mem = Mem(), Mem()
    seen: dict[str, RuleSpec] = {}
    out: list[CompiledRule] = []
    left_out: list[tuple[RuleSpec, str]] = []
    for spec in specs:
        if spec.id in seen:
            first = seen[spec.id]
            diags.append(spec.diag("id", "duplicate rule id (first defined at {}:{})".format(
                first.path, first.header_line)))
            continue
        seen[spec.id] = spec
        if spec.needs_schedule and spec.needs_schedule not in catalog.schedules:
            # The site's calendar has no such window: no rule, as a class with no
            # device; worth a note only where the devices it watches are there.
            if not spec.devices or spec.devices in catalog.classes():
                left_out.append((spec, spec.needs_schedule))
            continue
        devices = [""]
        if spec.devices:
            if spec.devices not in catalog.classes():
                diags.append(spec.diag("devices", "unknown device class '{}'{} (classes: {})".format(
                    spec.devices, suggest(spec.devices, catalog.classes()), ", ".join(catalog.classes()))))
                continue
            devices = catalog.devices_of(spec.devices)
        trees = {}
        for key in ("when", "clear_when"):
            tree = _parse(spec, key, diags)
            if tree is not None:
                trees[key] = tree
        if "when" not in trees or (spec.clear_when and "clear_when" not in trees):
            continue
        for device in devices:
            rule = _instance(spec, device, trees, catalog, mem, explain_mem, diags)
            if rule is not None:
                out.append(rule)
    return out, mem, explain_mem, left_out


def _payload(rules: list[CompiledRule], catalog: SiteCatalog, source: bytes, mem: Mem, explain_mem: Mem) -> dict:
    used = sorted(set(i for r in rules for i in r.signals))
    return {
        "format": T.FORMAT,
        "catalog": catalog.digest,
        "source": source,
        "mem": mem.size,
        "guards": mem.guards,
        "signals": [[i, catalog.names[i]] for i in used],
        "rules": [[r.id, r.spec.severity, r.spec.actions, r.flags, r.code] for r in rules],
        "explain": {
            "mem": explain_mem.size,
            "guards": explain_mem.guards,
            "rules": [[r.when_text, [[text, code] for text, code in r.terms], r.signals] for r in rules],
        },
    }
