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
    from controller.core.evaluator import evaluator_from_header

    def factory(catalog, head):
        return evaluator_from_header(head, catalog.digest(), catalog.size)

    traces = rules_traces()
    files = {"traces/{}.trace".format(k): "\n".join(v) + "\n" for k, v in traces.items()}
    code = ("from controller.core.trace import replay_lines\n"
            "from controller.core.evaluator import evaluator_from_header\n"
            "def factory(catalog, head):\n"
            "    return evaluator_from_header(head, catalog.digest(), catalog.size)\n")
    for name in sorted(traces):
        code += ("r = replay_lines(open('/app/traces/{0}.trace'), factory, keep_timeline=False)\n"
                 "print('{0}', r.scans, r.events, r.digest())\n").format(name)
    (out,) = mpy.run([code], files)
    got = dict((line.split()[0], tuple(line.split()[1:])) for line in out.strip().splitlines())
    for name, lines in traces.items():
        r = replay_lines(lines, factory, keep_timeline=False)
        assert r.events > 10, name
        assert got[name] == (str(r.scans), str(r.events), r.digest()), name


def model_trace():
    """A world's quarter hour (a forced door, a module out, heat, a power cut)
    as a trace whose header carries the default packs, and a model sensitive
    enough to raise its rule: all of the core runs, model rules included."""
    from controller.core.events import COMMAND_NAMES
    from controller.core.step import DEFAULT_ENTRY_ZONES, CoreConfig
    from controller.core.trace import header_line, scan_line
    from rules.compiler import SiteCatalog, compile_files
    from rules.language import default_sources
    from rules.payload import json_data
    from simulator.decodepath import device_class
    from simulator.rulesource import RuleSource
    from simulator.world import CabinetWorld, cabinet_catalog
    from tests.scen_helpers import scenario

    scn = scenario('\n[[process]]\nkind = "wind"\n[[process]]\nkind = "truck"\nper_hour = 40.0\n'
                   '\n[[action]]\nkind = "door_forced"\nat = "+5m"\n\n[[action]]\nkind = "module_remove"\nat = "+6m"\n'
                   '\n[[action]]\nkind = "thermal_ramp"\nat = "+8m"\nduration = "2m"\n'
                   '\n[[action]]\nkind = "power_cut"\nat = "+11m"\nduration = "1m"\n', "15m")
    catalog = cabinet_catalog(scn, scn.cabinets[0], RuleSource([]).schedules)
    world = CabinetWorld(scn, scn.cabinets[0], catalog)
    classes = {dev: device_class(dev) for dev in catalog.devices}
    compiled = compile_files(default_sources([]), SiteCatalog(catalog.specs(), classes, catalog.digest()))
    config = CoreConfig({}, tuple(catalog.zone(z) for z in DEFAULT_ENTRY_ZONES))
    lines = [header_line(catalog, config, DEFAULT_ENTRY_ZONES, {"rules": json_data(compiled.data)})]
    for t, changes, commands in world.stream():
        lines.append(scan_line(t, {catalog.names[i]: v for i, v in changes},
                               [(COMMAND_NAMES[c], a) for c, a in commands]))
    return lines


MODEL_FACTORY = (
    "def factory(catalog, head):\n"
    "    return ModelRules(ModelTables(MODEL), catalog,\n"
    "                      evaluator_from_header(head, catalog.digest(), catalog.size))\n")


@pytest.mark.skipif(not mpy.available(), reason="MicroPython not set up (make setup)")
def test_micropython_runs_the_model_rules_bit_for_bit():
    import json

    from controller.core.anomaly import ModelTables
    from controller.core.modelrules import ModelRules
    from controller.core.evaluator import evaluator_from_header
    from tests.test_anomaly import tables

    MODEL = tables(level=30)
    lines = model_trace()
    scope = {"ModelTables": ModelTables, "ModelRules": ModelRules, "MODEL": MODEL,
             "evaluator_from_header": evaluator_from_header}
    exec(MODEL_FACTORY, scope)
    r = replay_lines(lines, scope["factory"], keep_timeline=False)
    model = r.state.rules
    assert model.explained, "the model's rule never raised: the test would prove nothing"
    files = {"model.trace": "\n".join(lines) + "\n", "model.json": json.dumps(MODEL)}
    code = ("import json\nfrom controller.core.anomaly import ModelTables\n"
            "from controller.core.modelrules import ModelRules\nfrom controller.core.evaluator import evaluator_from_header\n"
            "from controller.core.trace import replay_lines\nMODEL = json.load(open('/app/model.json'))\n"
            + MODEL_FACTORY +
            "r = replay_lines(open('/app/model.trace'), factory, keep_timeline=False)\n"
            "print(r.scans, r.events, r.digest(), len(r.state.rules.explained))\n")
    (out,) = mpy.run([code], files)
    assert out.split() == [str(r.scans), str(r.events), r.digest(), str(len(model.explained))]
