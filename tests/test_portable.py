"""The portable core: inside MicroPython's subset, and bit-identical there."""

import ast

import pytest

from controller.core.trace import replay_lines
from controller.devtools import mpy
from tests.traces import shared_traces

FORBIDDEN_MODULES = {"dataclasses", "enum", "typing", "abc", "functools", "itertools"}
ALLOWED_MODULES = {"hashlib", "json", "binascii", "struct", "gc", "time", "math"}


def portable_sources():
    return sorted(mpy.portable_files().items())


@pytest.mark.parametrize("path, source", portable_sources(), ids=lambda v: v if isinstance(v, str) and v.endswith(".py") else "")
def test_portable_module_stays_in_the_subset(path, source):
    tree = ast.parse(source, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the portable core
                continue
            names = [node.module or ""]
        else:
            if isinstance(node, ast.FormattedValue):
                seg = ast.get_source_segment(source, node) or ""
                assert "=}" not in seg and "=!" not in seg and "=:" not in seg, path
            if isinstance(node, ast.AnnAssign) or (isinstance(node, ast.FunctionDef) and node.returns):
                pytest.fail("{}:{}: annotations are not for the portable core".format(path, node.lineno))
            continue
        for name in names:
            top = name.split(".")[0]
            assert top not in FORBIDDEN_MODULES, "{}:{} imports {}".format(path, node.lineno, name)
            ours = name == "controller.core" or name.startswith("controller.core.")
            assert ours or top in ALLOWED_MODULES, "{}:{} imports {}".format(path, node.lineno, name)


def test_the_manifest_lists_every_module_of_the_core():
    on_disk = sorted(p.stem for p in mpy.CORE.glob("*.py") if p.name != "__init__.py")
    assert sorted(mpy.portable_modules()) == on_disk


@pytest.mark.skipif(not mpy.available(), reason="MicroPython not set up (make setup)")
def test_micropython_replays_the_shared_traces_bit_for_bit():
    traces = shared_traces()
    files = {"traces/{}.trace".format(k): "\n".join(v) + "\n" for k, v in traces.items()}
    code = "from controller.core.trace import replay_lines\n"
    for name in sorted(traces):
        code += "r = replay_lines(open('/app/traces/{0}.trace'), keep_timeline=False)\nprint('{0}', r.scans, r.digest())\n".format(name)
    (out,) = mpy.run([code], files)
    got = dict((line.split()[0], (int(line.split()[1]), line.split()[2])) for line in out.strip().splitlines())
    for name, lines in traces.items():
        r = replay_lines(lines, keep_timeline=False)
        assert got[name] == (r.scans, r.digest()), name


def rules_traces():
    """Traces whose header carries a rule table: the default packs and random tables."""
    from controller.devtools.bench.rules import compile_text, packs, random_rules, rules_trace
    traces = {"packs": rules_trace(packs(), 21, 4000)}
    for seed in (1, 2):
        traces["random_rules{}".format(seed)] = rules_trace(compile_text(random_rules(seed, 60)), seed, 3000)
    return traces


@pytest.mark.skipif(not mpy.available(), reason="MicroPython not set up (make setup)")
def test_micropython_evaluates_rule_tables_bit_for_bit():
    from controller.core import ticks
    from controller.core.table import evaluator_from_header

    def factory(catalog, head):
        return evaluator_from_header(head, catalog.digest(), catalog.size, ticks.diff)

    traces = rules_traces()
    files = {"traces/{}.trace".format(k): "\n".join(v) + "\n" for k, v in traces.items()}
    code = ("from controller.core import ticks\nfrom controller.core.trace import replay_lines\n"
            "from controller.core.table import evaluator_from_header\n"
            "def factory(catalog, head):\n"
            "    return evaluator_from_header(head, catalog.digest(), catalog.size, ticks.diff)\n")
    for name in sorted(traces):
        code += ("r = replay_lines(open('/app/traces/{0}.trace'), factory, keep_timeline=False)\n"
                 "print('{0}', r.scans, r.events, r.digest())\n").format(name)
    (out,) = mpy.run([code], files)
    got = dict((line.split()[0], tuple(line.split()[1:])) for line in out.strip().splitlines())
    for name, lines in traces.items():
        r = replay_lines(lines, factory, keep_timeline=False)
        assert r.events > 10, name
        assert got[name] == (str(r.scans), str(r.events), r.digest()), name
