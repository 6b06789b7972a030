"""``cabguard run --config SITE.toml``: the gateway, for real."""

from __future__ import annotations

import argparse
import signal
import sys
import tomllib
from pathlib import Path

from controller import records as R
from controller.config import load_with_fallback, remember_good
from controller.core.events import ALARM
from controller.runtime import Gateway
from controller.site import assemble

DEFAULT_STATE_DIR = "/var/lib/cabguard"


def state_dir_of(path: str) -> str:
    """The state folder named by a config, even an invalid one (to find its last good copy)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        value = raw.get("gateway", {}).get("state_dir")
        return value if isinstance(value, str) and value else DEFAULT_STATE_DIR
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return DEFAULT_STATE_DIR


def build(config_path: str, state_dir: str | None = None, **gateway_options) -> Gateway:
    """Load the config (falling back to the last good one), assemble, start."""
    config, fallback = load_with_fallback(config_path, state_dir or state_dir_of(config_path))
    gateway = Gateway(assemble(config), **gateway_options)
    gateway.start()
    if fallback is None:
        remember_good(config)
    else:
        print(fallback, file=sys.stderr)
        print("cabguard: running on the last good config {}".format(config.path), file=sys.stderr)
        gateway.journal_health(R.HEALTH_CONFIG_FALLBACK, str(fallback), ALARM)
    return gateway


def serve(gateway: Gateway) -> int:
    """Run until SIGTERM or SIGINT, then stop cleanly (safe outputs, journal flushed)."""
    why = {"text": "stopped"}

    def on_signal(signum: int, _frame) -> None:
        why["text"] = "stopped by {}".format(signal.Signals(signum).name)
        gateway.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        gateway.run()
    finally:
        gateway.stop(why["text"])
    return 0


def main(args: argparse.Namespace) -> int:
    return serve(build(args.config, args.state_dir))
