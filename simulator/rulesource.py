"""Rule files compiled for each scenario cabinet, as the gateway runs them.

``RuleSource(paths)`` is a ``rules_factory`` for ``simulator.evaluate``:
called with a cabinet's catalog it compiles the rule files (default: the
packs in rules/packs/) against that catalog and its device classes (``io``
and ``battery``), encodes the table payload and loads it with the
gateway's own loader (rules/payload.py ``load_payload``), so eval runs
the very table a gateway of that cabinet would.  A compiled payload is
reused for every cabinet with the same catalog.

The default packs name schedules (``maintenance``, ``shift_change``) that
a scenario need not define; ``schedules`` lists every schedule the rules
name, and the evaluator adds the missing ones to the cabinet's catalog as
never active.  A rule with ``needs_schedule`` is left out of that list:
it is compiled only for a scenario that defines its schedule, as a
gateway compiles it only for a site whose calendar does.
"""

from __future__ import annotations

import ast

from controller.core.catalog import Catalog
from controller.core.evaluator import Evaluator
from rules.compiler import SiteCatalog, compile_files
from rules.errors import RuleError
from rules.language import default_sources, load_file
from rules.payload import load_payload
from simulator.decodepath import device_class
from simulator.errors import EvalError


class RuleSource:
    def __init__(self, paths: list[str] | None = None):
        self.paths = default_sources(list(paths or []))
        self.schedules = tuple(sorted(_schedules_named(self.paths)))
        self._payloads: dict[bytes, bytes] = {}

    def __call__(self, catalog: Catalog) -> Evaluator:
        digest = catalog.digest()
        payload = self._payloads.get(digest)
        if payload is None:
            classes = {dev: device_class(dev) for dev in catalog.devices}
            try:
                compiled = compile_files(self.paths, SiteCatalog(catalog.specs(), classes, digest))
            except RuleError as e:
                raise EvalError(str(e)) from None
            payload = self._payloads[digest] = compiled.encode()
        return load_payload(payload, catalog, "compiled rules")[1]


def _schedules_named(paths: list[str]) -> set[str]:
    """Names given to ``schedule("...")`` in the rules' conditions."""
    diags: list = []
    names = set()
    for path in paths:
        specs, _raw = load_file(path, diags)
        for spec in specs:
            if spec.needs_schedule:
                continue    # compiled only where the scenario defines it, as on a gateway
            for text in (spec.when, spec.clear_when):
                names |= _schedule_calls(text)
    return names


def _schedule_calls(text: str) -> set[str]:
    try:
        tree = ast.parse("(" + (text.strip() or "0") + ")", mode="eval")
    except SyntaxError:
        return set()    # the compiler reports it, with file and line
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "schedule"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}
