"""The import rule (docs/architecture.md): the head end depends on the wire contract
(link/wire.py, journal/records.py, console/commands.py), never on gateway internals."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALLOWED = ("controller.headend", "controller.link.wire", "controller.journal.records", "controller.console.commands",
           "controller.errors", "drivers")


def test_the_head_end_imports_only_the_wire_contract_and_drivers():
    bad = []
    for path in sorted((REPO / "controller" / "headend").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                ["{}.{}".format(node.module, a.name) for a in node.names] \
                if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                ours = name.split(".")[0] in ("controller", "drivers", "rules", "simulator")
                if ours and not name.startswith(ALLOWED):
                    bad.append("{}:{} imports {}".format(path.name, node.lineno, name))
    assert not bad, bad
