"""The import rule (docs/architecture.md): the head end depends on the wire contract
(link/wire.py, journal/records.py, console/commands.py), never on gateway internals;
the console reaches the gateway only through what run.py hands it (console/gatewayport.py)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALLOWED = ("controller.headend", "controller.link.wire", "controller.journal.records", "controller.console.commands",
           "controller.errors", "drivers")
# Of controller/gateway the console may import types and the config reader, not the running gateway.
CONSOLE_GATEWAY = ("controller.gateway.settings", "controller.gateway.health", "controller.gateway.config")


def _imports(folder: str):
    """(file, line, dotted name) of every import of ours in ``folder``."""
    for path in sorted((REPO / "controller" / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                ["{}.{}".format(node.module, a.name) for a in node.names] \
                if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.split(".")[0] in ("controller", "drivers", "rules", "simulator"):
                    yield path.name, node.lineno, name


def test_the_head_end_imports_only_the_wire_contract_and_drivers():
    bad = ["{}:{} imports {}".format(*i) for i in _imports("headend") if not i[2].startswith(ALLOWED)]
    assert not bad, bad


def test_the_console_never_imports_the_running_gateway():
    bad = ["{}:{} imports {}".format(*i) for i in _imports("console")
           if i[2].startswith("controller.gateway.") and not i[2].startswith(CONSOLE_GATEWAY)]
    assert not bad, bad
