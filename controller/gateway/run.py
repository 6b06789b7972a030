"""``cabguard run --config SITE.toml``: the gateway, for real.

``build`` turns a site config into running services — the gateway and its
scan loop's helpers, the rule table, the serial console and the uplink,
all sharing one command path — and ``serve`` runs them until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from controller.console.auth import AuthError, Authenticator, PeopleStore
from controller.console.commandpath import CommandPath
from controller.console.gatewayport import GatewayPort, ScanBus
from controller.console.server import ConsoleServer, PtyStream, SerialStream, Stream
from controller.console.view import ConsoleView
from controller.core.events import ALARM
from controller.core.modes import MODE_NAMES
from controller.errors import CabguardError
from controller.gateway.config import ConfigError, last_good_path, load, missing_extras, remember_good
from controller.gateway.loop import Gateway
from controller.gateway.site import Site, assemble
from controller.journal import records as R
from controller.link.downlink import DownlinkVerifier, SeqStore, command_handler
from controller.link.uplink import with_checkpoint
from controller.link.opcuaproc import OpcuaProcess, OpcuaSpec
from controller.link.uplinkproc import UplinkProcess, UplinkSpec
from controller.link.wire import Topics
from drivers import pidlock
from drivers.errors import KeyFileError, LockHeld
from drivers.keys import load_key
from drivers.mqtt import BrokerSettings
from drivers.safefile import InputFileError, parse_toml, read_text

DEFAULT_STATE_DIR = "/var/lib/cabguard"
LOCK_NAME = "run.lock"
LOCKOUT_NAME = "console-lockout.json"   # the console's failed logins and lock (controller/console/auth.py)


@dataclass
class Services:
    gateway: Gateway
    path: CommandPath
    console: ConsoleServer | None = None
    uplink: UplinkProcess | None = None
    opcua: OpcuaProcess | None = None

    def stop(self, why: str) -> None:
        if self.console:
            self.console.stop()
        if self.uplink:
            self.uplink.stop()
        if self.opcua:
            self.gateway.opcua = None
            self.opcua.stop()
        self.gateway.stop(why)


def state_dir_of(path: str, default: str = DEFAULT_STATE_DIR) -> str:
    """The state folder named by a config, even an invalid one (to find its last good copy)."""
    try:
        raw = parse_toml(read_text(path, "site config"), path, "site config")
        value = raw.get("gateway", {}).get("state_dir")
        return value if isinstance(value, str) and value else default
    except (OSError, InputFileError, tomllib.TOMLDecodeError, AttributeError):
        return default


def hold_state_dir(state_dir: str) -> int:
    """One gateway per state folder: an exclusive ``flock`` on ``STATE_DIR/run.lock``,
    held until the process ends (the kernel lets go even after a SIGKILL).
    The file holds the holder's PID so that a refused second start can name it.
    Returns the lock's file descriptor; keep it open."""
    folder = Path(state_dir)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return pidlock.hold(path)
    except OSError as e:
        raise CabguardError("cannot open the lock {}: {}; check the state folder's owner and "
                            "permissions".format(path, e.strerror)) from None
    except LockHeld as e:
        raise CabguardError("another gateway (PID {}) is running on the state folder {}: two would write "
                            "the same journal; stop that one first (e.g. systemctl stop cabguard)"
                            .format(e.holder, folder)) from None


def console_stream(doc: dict, link_override: str | None) -> Stream:
    port = "pty:" + link_override if link_override else doc["port"]
    if port.startswith("pty:"):
        return PtyStream(port[4:])
    return SerialStream(port, doc["baud"])


def start_console(gateway: Gateway, port: GatewayPort, path: CommandPath, doc: dict,
                  link: str | None) -> ConsoleServer:
    auth = Authenticator(path.people, doc["max_failures"], doc["lockout_s"],
                         gateway.state_dir / LOCKOUT_NAME, gateway.clock)
    return ConsoleServer(console_stream(doc, link), ConsoleView(port, path), auth, doc["idle_s"]).start()


def start_uplink(gateway: Gateway, path: CommandPath, doc: dict) -> UplinkProcess:
    host, _, port = doc["broker"].rpartition(":")
    settings = BrokerSettings(host, int(port), protocol=5 if doc["protocol"] == "5" else 4,
                              client_id=doc["client_id"] or gateway.gateway_id, username=doc["username"],
                              password=doc["password"], ca_file=doc["ca_file"], cert_file=doc["cert_file"],
                              key_file=doc["key_file"])
    on_command: Callable[[bytes], None] = lambda payload: None    # no head-end key: no commands
    headend = gateway.settings.headend_key
    key = None
    if headend:
        try:
            key = load_key(headend)
        except KeyFileError as e:       # records still go up; commands wait for a readable key
            print("cabguard: {}; downlink commands are refused until it is fixed".format(e), file=sys.stderr)
            gateway.health.record(R.HEALTH_INPUT_REFUSED, str(e), ALARM)
    if key is not None:
        verifier = DownlinkVerifier(gateway.gateway_id, key, SeqStore(gateway.state_dir / "downlink-seq"))
        on_command = command_handler(verifier, path.execute, path.refused)
    spec = UplinkSpec(settings, Topics(doc["topic_prefix"], gateway.settings.site_name, gateway.gateway_id),
                      str(gateway.journal.directory), window=doc["window"], heartbeat_s=doc["heartbeat_s"])
    uplink = UplinkProcess(spec, gateway.journal, on_command=on_command, on_health=gateway.health.uplink,
                           heartbeat=with_checkpoint(gateway.journal, gateway.status.heartbeat_doc))
    gateway.health.urgent_listeners.append(uplink.notify_urgent)
    return uplink.start()


def start_opcua(gateway: Gateway, doc: dict) -> OpcuaProcess:
    """The read-only OPC UA server in its own process (controller/link/opcuaproc.py)."""
    host, _, port = doc["listen"].rpartition(":")
    catalog = gateway.catalog
    spec = OpcuaSpec(host.strip("[]"), int(port), doc["username"], doc["password"], gateway.gateway_id,
                     catalog.specs(), list(catalog.devices))
    return OpcuaProcess(spec, doc["publish_ms"]).start()


def load_site(config_path: str, state_dir: str) -> tuple[Site, ConfigError | None]:
    """The site to run, and the error that forced a fallback (if any).  A config
    is good only if what it names (profiles, model) is good too: any problem
    with either falls back to the last good config."""
    try:
        return assemble(load(config_path)), None
    except ConfigError as err:
        good = last_good_path(state_dir)
        if not good.exists():
            raise
        return assemble(load(good)), err


def check_config(path: str | Path) -> str:
    """The console's ``config check``: the config at ``path`` read and assembled
    again, as a restart would; "PATH: OK" or every problem."""
    try:
        assemble(load(path))
    except ConfigError as e:
        return str(e)
    return "{}: OK".format(path)


def console_port(gateway: Gateway) -> GatewayPort:
    """What the console and the command path may see and do of ``gateway``."""
    pollers = {p.port: p for p in reversed(gateway.site.pollers)}      # the first on a port
    return GatewayPort(
        gateway.gateway_id, gateway.catalog, gateway.image, gateway.journal, gateway.health,
        submit=lambda code, arg, source, actor: gateway.submit(code, arg, source, actor).outcome,
        note=gateway.note, recent=lambda: list(gateway.recent), rule_names=gateway.rule_names,
        status_text=gateway.status.console_text, devices_text=gateway.status.devices_text,
        rules_info=gateway.status.rules_info, config_text=gateway.config_text,
        config_check=lambda: check_config(gateway.settings.config_path), load_rules=gateway.load_rules,
        survey_position=gateway.survey_position,
        buses={b.name: ScanBus(b, pollers.get(b.port)) for b in gateway.settings.buses})


def people_store(gateway: Gateway, path: str) -> PeopleStore:
    """The enrolled people; an unreadable file leaves the console with nobody
    to log in (docs/runtime.md "Inputs the gateway refuses"), journaled."""
    try:
        return PeopleStore(path)
    except AuthError as e:
        print("cabguard: {}; the console accepts no login until it is fixed".format(e), file=sys.stderr)
        gateway.health.record(R.HEALTH_INPUT_REFUSED, str(e), ALARM)
        return PeopleStore.refusing(path, str(e))


def build(config_path: str, state_dir: str | None = None, console_link: str | None = None,
          **gateway_options) -> Services:
    """Load the config (falling back to the last good one), assemble, start everything."""
    site, fallback = load_site(config_path, state_dir or state_dir_of(config_path))
    config = site.config
    missing = missing_extras(config)
    if missing is not None:
        raise missing
    doc = config.doc
    gateway = Gateway(site, **gateway_options)
    if doc.get("rules"):
        gateway.use_table(doc["rules"]["key"], doc["rules"]["table"])
    gateway.start()
    if fallback is None:
        remember_good(config)
    else:
        print(fallback, file=sys.stderr)
        print("cabguard: running on the last good config {}".format(config.path), file=sys.stderr)
        gateway.health.record(R.HEALTH_CONFIG_FALLBACK, str(fallback), ALARM)
    console_doc = doc.get("console")
    people = people_store(gateway, console_doc["people"]) if console_doc else None
    port = console_port(gateway)
    services = Services(gateway, CommandPath(port, people))
    if console_doc:
        services.console = start_console(gateway, port, services.path, console_doc, console_link)
    if doc.get("uplink"):
        services.uplink = start_uplink(gateway, services.path, doc["uplink"])
    if doc.get("opcua"):
        services.opcua = gateway.opcua = start_opcua(gateway, doc["opcua"])
    gateway.log(started_line(gateway, doc))
    return services


def started_line(gateway: Gateway, doc: dict) -> str:
    """What a technician reading the system journal needs to know the gateway is guarding."""
    rules = len(gateway.rule_names())
    return "started: gateway {} site {}, mode {}, {} device(s) on {} bus(es), {} rule(s), console {}, uplink {}".format(
        gateway.gateway_id, gateway.settings.site_name, MODE_NAMES[gateway.state.mode], len(gateway.settings.devices),
        len(gateway.site.pollers), rules, (doc.get("console") or {}).get("port", "none"),
        (doc.get("uplink") or {}).get("broker", "none"))


def log_line(line: str) -> None:
    """One line to stderr: systemd's journal keeps it with the unit's name and time."""
    print("cabguard: " + line, file=sys.stderr, flush=True)


class StopRequest:
    """SIGTERM/SIGINT caught from the very start, so a stop during start-up is clean too."""

    def __init__(self) -> None:
        self.why = ""
        self.services: Services | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        self.why = "stopped by {}".format(signal.Signals(signum).name)
        if self.services is not None:
            self.services.gateway.stop_event.set()


def serve(services: Services, stop: StopRequest) -> int:
    """Run until SIGTERM or SIGINT, then stop cleanly (safe outputs, journal flushed)."""
    stop.services = services
    if stop.why:                         # the stop came while we were starting
        services.gateway.stop_event.set()
    try:
        services.gateway.run()
    finally:
        services.stop(stop.why or "stopped")
    return 0


def main(args: argparse.Namespace) -> int:
    stop = StopRequest()
    hold_state_dir(state_dir_of(args.config, args.state_dir or DEFAULT_STATE_DIR))
    return serve(build(args.config, args.state_dir, log=log_line), stop)
