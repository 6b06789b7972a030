"""What the console and the command path may see and do of the running
gateway, and nothing more: a few values and callables that the composition
root (controller/gateway/run.py, ``console_port``) takes from the gateway.
The console never holds the gateway itself.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from controller.core.catalog import Catalog
from controller.gateway.health import HealthReporter
from controller.gateway.settings import BusSettings
from controller.journal.journal import Journal
from drivers.modbus.poller import BusPoller


@dataclass(frozen=True)
class ScanBus:
    """A bus of the site config, for ``bus scan``: its settings and, when
    the gateway polls it, its poller (the scan then runs as the poller's job)."""
    settings: BusSettings
    poller: BusPoller | None


@dataclass(frozen=True)
class GatewayPort:
    gateway_id: str
    catalog: Catalog
    image: list[int]                                       # the live input image: read, never written
    journal: Journal                                       # read back (``journal ...``), its key rotated
    health: HealthReporter                                 # records, through the sources' flood control
    submit: Callable[[int, int, str, str], Future[str]]    # (code, arg, source, actor) into the next scan
    note: Callable[[str], None]                            # a line on the console's event list ...
    recent: Callable[[], list[str]]                        # ... and that list, oldest first
    rule_names: Callable[[], tuple[str, ...]]              # by the index events carry
    status_text: Callable[[], str]                         # ``status``
    devices_text: Callable[[], str]                        # ``devices``
    rules_info: Callable[[], str]                          # ``rules info``
    config_text: Callable[[], str]                         # ``config show``: secrets left out
    config_check: Callable[[], str]                        # ``config check``
    load_rules: Callable[[str], str]                       # ``rules load PATH``
    survey_position: Callable[[], str]                     # ``pos survey``
    buses: dict[str, ScanBus]                              # by name
