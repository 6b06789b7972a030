"""``cabguard sim``: serve the simulated devices of SIM.toml until stopped."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from simulator.config import load_config
from simulator.control import apply_command
from simulator.errors import SimError


def _read_commands(sim, stop: threading.Event) -> None:
    for line in sys.stdin:
        try:
            done = apply_command(sim, line)
        except SimError as e:
            done = "error: {}".format(e)
        if done:
            print(done, flush=True)
    if not stop.is_set():
        print("commands: end of input; still serving", flush=True)


def main(args: argparse.Namespace) -> int:
    sim = load_config(args.config, None if args.wire is None else args.wire == "on")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim.start()
    try:
        links = sim.link(args.link)
        for name, bus in sim.buses.items():
            devices = ", ".join("{}@{} ({})".format(d.name, a, d.profile.name)
                                for a, d in sorted(bus.devices.items()))
            wire = "wire {} baud".format(bus.baud) if bus.wire else "wire off"
            print("bus {}: {} -> {}  [{}]  {}".format(name, links[name], bus.port, devices, wire), flush=True)
        print("serving; stop with Ctrl-C or SIGTERM", flush=True)
        if args.commands:
            threading.Thread(target=_read_commands, args=(sim, stop), daemon=True).start()
        stop.wait()
    finally:
        sim.stop()
    return 0
