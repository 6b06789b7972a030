"""Each process imports what it uses (docs/architecture.md, "The import rule"): every
module an interpreter loads is memory it keeps for good (issue 15: all the gateway's
processes together within 60 MB of PSS), and the uplink process is a second interpreter."""

import json
import subprocess
import sys


def _loaded(module: str) -> set[str]:
    """Every module a fresh interpreter holds after importing ``module``."""
    out = subprocess.run([sys.executable, "-c", "import json, sys, {}; print(json.dumps(sorted(sys.modules)))".format(
        module)], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _under(loaded: set[str], packages: tuple[str, ...]) -> list[str]:
    """The loaded modules that are one of ``packages`` or inside one."""
    return sorted(m for m in loaded if m in packages or m.startswith(tuple(p + "." for p in packages)))


def test_the_uplink_process_loads_no_ciphers_toml_or_gateway():
    """It reads segments (frames, COSE headers) and talks MQTT: the journal's writer,
    keys, cryptography, TOML and the gateway stay in the gateway's process."""
    loaded = _loaded("controller.link.uplinkproc")
    assert not _under(loaded, ("cryptography", "tomllib", "asyncio", "gpiozero", "serial", "controller.gateway",
                               "controller.journal.journal", "drivers.keys", "rules.compiler"))


def test_the_gateway_loads_no_rule_compiler_asyncio_or_http_server():
    """It loads its table through rules/payload.py; asyncio is the OPC UA server process's;
    http.server is loaded when a site has webhook cameras."""
    loaded = _loaded("controller.gateway.run")
    assert not _under(loaded, ("rules.compiler", "rules.language", "asyncio", "http.server"))
