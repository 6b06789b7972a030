"""The portable core: inside MicroPython's subset, and bit-identical there."""

import ast

import pytest

from controller import mpy
from controller.core.trace import replay_lines
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
            ours = top in ("controller", "rules") and (
                name.startswith("controller.core") or name.startswith("rules.table") or name.startswith("rules.anomaly"))
            assert ours or top in ALLOWED_MODULES, "{}:{} imports {}".format(path, node.lineno, name)


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
